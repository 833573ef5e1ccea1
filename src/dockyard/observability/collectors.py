"""Scrape-time collectors: values the database already holds, read only by the process that answers
a scrape (never per request), one short read each. A collector that fails yields nothing and logs,
so one broken query does not take the whole /metrics page down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import column, func, inspect, select, table

from dockyard.metadata.db import Database, aware, utcnow
from dockyard.metadata.models import jobs, projects, uploads

log = logging.getLogger("dockyard.metrics")

QUOTA_PROJECTS_MAX = 500  # quota use is summed per project with a quota; beyond this many, the first by name


class _Collector:
    NAMES: tuple[str, ...] = ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            yield from self.read()
        except Exception:  # noqa: BLE001 - a scrape shows what it can
            log.warning("metrics collector %s failed", type(self).__name__, exc_info=True)

    def read(self) -> Iterator[GaugeMetricFamily]:  # pragma: no cover - abstract
        raise NotImplementedError


class UploadsCollector(_Collector):
    NAMES = ("dockyard_upload_sessions_open",)

    def __init__(self, db: Database):
        self.db = db

    def read(self):
        with self.db.read() as conn:
            count = conn.execute(select(func.count()).select_from(uploads)).scalar_one()
        yield GaugeMetricFamily(self.NAMES[0], "Blob upload sessions started and not yet finished or purged.", value=count)


class JobQueueCollector(_Collector):
    NAMES = ("dockyard_job_queue_depth", "dockyard_job_queue_latency_seconds")

    def __init__(self, db: Database, clock: Callable = utcnow):
        self.db = db
        self.clock = clock

    def read(self):
        now = self.clock()
        with self.db.read() as conn:
            rows = conn.execute(
                select(jobs.c.kind, jobs.c.state, func.count(), func.min(jobs.c.run_after))
                .where(jobs.c.state.in_(("queued", "running", "waiting")))
                .group_by(jobs.c.kind, jobs.c.state)
            ).all()
        depth = GaugeMetricFamily(self.NAMES[0], "Jobs queued, running or waiting for child jobs, by kind.",
                                  labels=["kind", "state"])
        latency = GaugeMetricFamily(
            self.NAMES[1], "How long the oldest due queued job of each kind has waited (0: none is due).", labels=["kind"])
        waits: dict[str, float] = {}
        for kind, state, count, oldest in rows:
            depth.add_metric([kind, state], count)
            if state == "queued":
                waits[kind] = max(0.0, (now - aware(oldest)).total_seconds()) if oldest is not None else 0.0
        for kind, wait in sorted(waits.items()):
            latency.add_metric([kind], wait)
        yield depth
        yield latency


class FeedLagCollector(_Collector):
    NAMES = ("dockyard_event_feed_lag",)

    def __init__(self, lag: Callable[[], dict[str, int]]):
        self.lag = lag

    def read(self):
        family = GaugeMetricFamily(self.NAMES[0], "Events each durable feed consumer has yet to read.", labels=["consumer"])
        for consumer, lag in sorted(self.lag().items()):
            family.add_metric([consumer], lag)
        yield family


class QuotaCollector(_Collector):
    NAMES = ("dockyard_quota_limit_bytes", "dockyard_quota_used_bytes")

    def __init__(self, db: Database, usage: Callable):
        self.db = db
        self.usage = usage  # QuotaService.usage(conn, project)

    def read(self):
        limit = GaugeMetricFamily(self.NAMES[0], "Storage quota of each project that has one.", labels=["project"])
        used = GaugeMetricFamily(self.NAMES[1], "Storage used by each project that has a quota.", labels=["project"])
        with self.db.read() as conn:
            rows = conn.execute(
                select(projects.c.name, projects.c.quota_bytes).where(projects.c.quota_bytes.is_not(None))
                .order_by(projects.c.name).limit(QUOTA_PROJECTS_MAX)
            ).all()
            for name, quota in rows:
                limit.add_metric([name], quota)
                used.add_metric([name], self.usage(conn, name))
        yield limit
        yield used


class WebhookCollector(_Collector):
    """Webhook delivery outcomes from the webhook tables (issue 10 part 2), when they exist: attempts
    by outcome (each HTTP attempt appends a row) and deliveries by state. Both group on an index."""

    NAMES = ("dockyard_webhook_deliveries_total", "dockyard_webhook_delivery_state")

    def __init__(self, db: Database):
        self.db = db
        self._present: bool | None = None

    def read(self):
        if self._present is None:
            names = set(inspect(self.db.engine).get_table_names())
            self._present = {"webhook_attempts", "webhook_deliveries"} <= names
        attempts = CounterMetricFamily(
            "dockyard_webhook_deliveries", "Webhook delivery attempts, by outcome (succeeded or failed).",
            labels=["outcome"])
        states = GaugeMetricFamily(
            self.NAMES[1], "Webhook deliveries in the delivery log, by state (queued, succeeded, failed, dead).",
            labels=["state"])
        if self._present:
            log_rows = table("webhook_attempts", column("outcome"))
            delivery_rows = table("webhook_deliveries", column("state"))
            with self.db.read() as conn:
                for outcome, count in conn.execute(
                        select(log_rows.c.outcome, func.count()).group_by(log_rows.c.outcome)).all():
                    attempts.add_metric([str(outcome)], count)
                for state, count in conn.execute(
                        select(delivery_rows.c.state, func.count()).group_by(delivery_rows.c.state)).all():
                    states.add_metric([str(state)], count)
        yield attempts
        yield states
