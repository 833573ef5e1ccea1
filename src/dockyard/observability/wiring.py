"""Connects the Metrics object to the services that feed it (called once by create_app's
build_services): hooks on the worker, uploads and pull gate, the "metrics" feed consumer, the
pool listener and the scrape-time collectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dockyard.observability.collectors import (
    FeedLagCollector,
    JobQueueCollector,
    QuotaCollector,
    UploadsCollector,
    WebhookDeliveriesCollector,
)

if TYPE_CHECKING:
    from dockyard.app import Services

FEED_CONSUMER = "metrics"
COUNTED_EVENTS = ("artifact.pushed", "artifact.pulled")


def instrument(services: Services, scan_kind: str) -> None:
    metrics = services.metrics
    services.worker.on_finished = metrics.job_finished
    metrics.on_job("gc", metrics.gc_finished)
    metrics.on_job(scan_kind, metrics.scan_finished)
    services.uploads.on_committed = metrics.blob_committed
    services.pull_gate.on_denied = metrics.pull_denied
    services.feed.consume(FEED_CONSUMER, metrics.count_events, types=COUNTED_EVENTS)
    metrics.watch_pool(services.db.engine)
    db = services.db
    for collector in (
        UploadsCollector(db),
        JobQueueCollector(db),
        FeedLagCollector(services.feed.lag),
        QuotaCollector(db, services.quotas.usage),
        WebhookDeliveriesCollector(db),
    ):
        metrics.add_scrape_collector(collector)
