"""Composition root: create_app(settings) wires every service. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.requests import ClientDisconnect

from dockyard.api.http import (
    ApiVersionHeader,
    UnexpectedErrors,
    on_client_disconnect,
    on_dockyard_error,
    on_http_exception,
    on_unexpected,
)
from dockyard.api.access_gate import AccessGate
from dockyard.api.services import Services
from dockyard.api.surface import HttpSurface
from dockyard.api.http_metrics import HttpMetrics
from dockyard.api.ops import ops_routes
from dockyard.api.request_id import RequestId
from dockyard.api.tls import StrictTransportSecurity
from dockyard.api.oci.routes import oci_routes
from dockyard.auth.authenticator import Authenticator
from dockyard.auth.bootstrap import bootstrap
from dockyard.auth.token_keys import open_keystore
from dockyard.auth.throttle import LoginThrottle
from dockyard.auth.tokens import TokenService
from dockyard.domain.audit import AuditService
from dockyard.domain.events import EventLog, record as record_event
from dockyard.domain.project_admission import ProjectAdmission
from dockyard.domain.repository_lifecycle import RepositoryLifecycle
from dockyard.webhooks.delivery import CONSUMER as WEBHOOK_CONSUMER, WebhookDispatcher
from dockyard.webhooks.lanes import WEBHOOK_JOB
from dockyard.webhooks.service import WebhookConfig, WebhookService
from dockyard.domain.projects import ProjectService
from dockyard.domain.robots import RobotService
from dockyard.domain.users import UserService
from dockyard.domain.blobs import BlobService
from dockyard.domain.listings import ListingService
from dockyard.domain.manifest_service import ManifestService
from dockyard.domain.promotion import PromotionService
from dockyard.domain.uploads import UploadService
from dockyard.domain.pulls import PullRecorder
from dockyard.domain.retention_service import RetentionService
from dockyard.domain.quotas import QuotaService
from dockyard.domain.scanners import ScannerRegistry
from dockyard.domain.security_settings import SecuritySettings
from dockyard.policy.promotion_gates import PromotionGate, ScanPromotionGate, SignaturePromotionGate
from dockyard.policy.pull_gate import PullGate
from dockyard.scanning.limits import ScanLimits
from dockyard.scanning.reports import ReportStore
from dockyard.scanning.service import RESCAN_JOB, SCAN_JOB, SCANNER_SUBJECT, ScanService
from dockyard.scanning.targets import TargetReader
from dockyard.scanning.vulndb import VulnDB
from dockyard.signing.in_registry import GateSignatures, RegistrySignatureSource, SignatureChecker
from dockyard.signing.trusted_keys import TrustedKeys
from dockyard.signing.verify import Limits as SignatureLimits
from dockyard.jobs import feed_consumers
from dockyard.jobs.event_prune import PRUNE_JOB, EventPruner
from dockyard.jobs.feed import Feed
from dockyard.jobs.gc import GarbageCollector
from dockyard.jobs.housekeeping import Housekeeping
from dockyard.jobs.local_tasks import LocalTasks
from dockyard.jobs.queue import JobQueue
from dockyard.jobs.scheduler import Scheduler
from dockyard.jobs.worker import Worker
from dockyard.metadata import job_kinds
from dockyard.scanning.updates import UPDATE_KIND, VulnDBUpdater
from dockyard.errors import DockyardError
from dockyard.policy.access import AccessPolicy
from dockyard.policy.tag_rules import TagPolicy
from dockyard.metadata.db import Database
from dockyard.runtime import limit_malloc_arenas
from dockyard.safe_text import configure_logging
from dockyard.settings import Settings, load_settings
from dockyard.storage import StorageDriver, open_driver
from dockyard.storage.instrumented import InstrumentedDriver
from dockyard.observability.collectors import (
    FeedLagCollector, JobQueueCollector, QuotaCollector, UploadsCollector, WebhookCollector,
)
from dockyard.observability.http_stats import FLUSH_SECONDS
from dockyard.observability.metrics import COUNTED_EVENTS, METRICS_CONSUMER, Metrics
from dockyard.observability.readiness import Readiness
from dockyard.storage.permissions import secure_settings_paths

log = logging.getLogger("dockyard")


def build_services(settings: Settings) -> Services:
    """Every service, built area by area (each area reads what the earlier ones built).

    A new area is one more `_area(settings, built)` function returning its Services fields."""
    built: dict[str, Any] = {"settings": settings}
    built.update(_storage(settings))
    built.update(_identity(settings, built))
    built.update(_jobs(settings, built))
    built.update(_artifacts(settings, built))
    built.update(_security(settings, built))
    built.update(_governance(settings, built))
    built.update(_events(settings, built))
    built.update(_webhooks(settings, built))
    services = Services(**built)
    _observe(services)
    return services


def _storage(settings: Settings) -> dict[str, Any]:
    """The database, the blob store, and blob bytes with their quotas."""
    secure_settings_paths(settings)  # umask 077 and owner-only modes before anything is written
    db = Database(settings.resolved_database_url)
    if settings.auto_migrate:
        db.migrate()
    metrics = Metrics()  # per app, with its own registry (observability/metrics.py)
    storage = InstrumentedDriver(open_driver(settings), metrics.storage_action)
    quotas = QuotaService(db)
    blobs = BlobService(
        db, storage, delete_enabled=settings.delete_enabled, quotas=quotas, touch_interval_seconds=settings.gc_grace_seconds / 2,
        max_blob_bytes=settings.max_blob_bytes, projects_required=settings.auth_mode != "none",
    )
    uploads = UploadService(
        db, storage, blobs, flush_bytes=settings.upload_flush_bytes, quotas=quotas,
        max_blob_bytes=settings.max_blob_bytes, max_per_account=settings.max_uploads_per_account,
        max_per_project=settings.max_uploads_per_project,
    )
    return {"db": db, "storage": storage, "quotas": quotas, "blobs": blobs, "uploads": uploads, "metrics": metrics}


def _identity(settings: Settings, built: dict[str, Any]) -> dict[str, Any]:
    """Accounts, tokens and the access gate."""
    db: Database = built["db"]
    keys = open_keystore(db, settings)
    if settings.auto_migrate:
        bootstrap(db, keys, settings.admin_password, settings.data_dir)
    else:
        keys.reload()
    tokens = TokenService(
        db,
        keys,
        issuer=settings.token_issuer,
        service=settings.token_service,
        ttl=settings.token_ttl_seconds,
        refresh_ttl=settings.refresh_token_ttl_seconds,
        login_ttl=settings.login_password_ttl_seconds,
        max_bytes=settings.token_max_bytes,
        cache_entries=settings.token_cache_entries,
        max_scopes=settings.token_max_scopes,
    )
    throttle = LoginThrottle(
        db,
        slowdown_after=settings.login_slowdown_after,
        lockout_after=settings.login_lockout_after,
        lockout_seconds=settings.login_lockout_seconds,
        window_seconds=settings.login_failure_window_seconds,
        address_lockout_after=settings.login_address_lockout_after,
    )
    authenticator = Authenticator(
        db, tokens, throttle, cache_seconds=settings.credential_cache_seconds, check_seconds=settings.credential_check_seconds
    )
    access = AccessPolicy(db, auto_create_projects=settings.auto_create_projects, check_seconds=settings.credential_check_seconds)
    audit = AuditService(db)
    projects = ProjectService(db)
    projects.on_change.append(access.forget_project)  # a namesake's tokens are refused at once on this node
    return {
        "tokens": tokens,
        "authenticator": authenticator,
        "access": access,
        "audit": audit,
        "projects": projects,
        "users": UserService(db),
        "robots": RobotService(db),
        "gate": AccessGate(
            settings, tokens, authenticator, access, audit,
            ProjectAdmission(access, authenticator, projects, audit, enabled=settings.auth_mode != "none"),
        ),
    }


def _jobs(settings: Settings, built: dict[str, Any]) -> dict[str, Any]:
    """The job queue, its schedules and this process's worker, with the jobs that need nothing else."""
    db: Database = built["db"]
    jobs = JobQueue(db, lease_seconds=settings.job_lease_seconds)
    scheduler = Scheduler(db, jobs)
    worker = Worker(
        jobs, scheduler=scheduler, poll_seconds=settings.worker_poll_seconds, lanes={SCAN_JOB: settings.scan_concurrency, WEBHOOK_JOB: settings.webhook_concurrency}
    )
    gc = GarbageCollector(db, built["storage"], grace_seconds=settings.gc_grace_seconds, audit=built["audit"])
    worker.register(job_kinds.GC, gc.handle)
    worker.register(UPDATE_KIND, VulnDBUpdater(db, jobs, base_url=settings.vulndb_url, ecosystems=settings.vulndb_ecosystems).handle)
    housekeeping = Housekeeping(
        built["uploads"], built["audit"], built["authenticator"].throttle,
        upload_max_age_seconds=settings.upload_max_age_seconds, audit_retention_days=settings.audit_retention_days,
    )
    worker.register(job_kinds.HOUSEKEEPING, housekeeping.handle)
    return {"jobs": jobs, "scheduler": scheduler, "worker": worker, "gc": gc, "housekeeping": housekeeping}


def _artifacts(settings: Settings, built: dict[str, Any]) -> dict[str, Any]:
    """Manifests and tags under the tag rules, listings, and pull times."""
    db: Database = built["db"]
    tag_policy = TagPolicy(db, built["access"], record_event=record_event)
    manifests = ManifestService(
        db, max_bytes=settings.max_manifest_bytes, delete_enabled=settings.delete_enabled, tag_policy=tag_policy,
        quotas=built["quotas"], empty_grace_seconds=settings.gc_grace_seconds,
        projects_required=settings.auth_mode != "none",
    )
    lifecycle = RepositoryLifecycle(db, tag_policy=tag_policy, delete_enabled=settings.delete_enabled)
    return {"tag_policy": tag_policy, "manifests": manifests, "repository_lifecycle": lifecycle, "listings": ListingService(db), "pulls": PullRecorder(db)}


def _security(settings: Settings, built: dict[str, Any]) -> dict[str, Any]:
    """Supply-chain security: project policies, scans, signatures, and the pull and promotion gates."""
    db: Database = built["db"]
    storage: StorageDriver = built["storage"]
    worker: Worker = built["worker"]
    security = SecuritySettings(
        db, cache_seconds=settings.security_cache_seconds, auto_scan_default=settings.scan_on_push_default
    )
    scanner_registry = ScannerRegistry(db)
    reports = ReportStore(db)
    scans = ScanService(
        db, storage, built["blobs"], built["manifests"], built["jobs"], security, scanner_registry, reports, VulnDB(db),
        tokens=built["tokens"],
        registry_url=settings.scanner_registry_url or settings.public_url or f"http://{settings.host}:{settings.port}",
        syft_path=settings.scan_syft_path,
        scan_timeout=settings.scan_timeout_seconds,
        limits=ScanLimits(**{f: getattr(settings, f"scan_{f}") for f in ScanLimits.__dataclass_fields__}),
        work_root=(settings.data_dir / "tmp" / "scans").resolve(),
        stopping=worker.stopping.is_set,
        wake=worker.wake,
        incomplete_policy=settings.scan_incomplete_policy,
    )
    worker.register(SCAN_JOB, scans.handle_scan)
    worker.register(RESCAN_JOB, scans.handle_rescan)
    signatures = SignatureChecker(
        RegistrySignatureSource(db, storage, max_blob_bytes=settings.signature_max_blob_bytes,
                                max_referrers=settings.signature_max_referrers),
        limits=SignatureLimits(max_layers=settings.signature_max_layers, max_referrers=settings.signature_max_referrers),
        max_entries=settings.signature_cache_entries,
    )
    trusted_keys = TrustedKeys(security)
    targets = TargetReader(db)
    gate_signatures = GateSignatures(signatures, trusted_keys)
    pull_gate = PullGate(
        db, targets, security, reports, gate_signatures,
        request_scan=scans.request,
        exempt_subjects=frozenset({SCANNER_SUBJECT}),
        cache_seconds=settings.security_cache_seconds,
        incomplete_policy=settings.scan_incomplete_policy,
    )
    promotion_gates: list[PromotionGate] = [
        ScanPromotionGate(targets, security, reports, incomplete_policy=settings.scan_incomplete_policy),
        SignaturePromotionGate(security, gate_signatures),
    ]
    return {
        "security": security,
        "trusted_keys": trusted_keys,
        "scanners": scanner_registry,
        "scans": scans,
        "signatures": signatures,
        "pull_gate": pull_gate,
        "promotion_gates": promotion_gates,
    }


def _governance(settings: Settings, built: dict[str, Any]) -> dict[str, Any]:
    """Promotion between projects (behind the gates) and retention."""
    db: Database = built["db"]
    promotions = PromotionService(
        db, built["manifests"], built["tag_policy"], built["promotion_gates"], quotas=built["quotas"], pull_gate=built["pull_gate"]
    )
    retention = RetentionService(
        db, built["manifests"], built["audit"], tag_policy=built["tag_policy"], jobs=built["jobs"], scheduler=built["scheduler"]
    )
    built["worker"].register(job_kinds.RETENTION, retention.handle_job)
    return {"promotions": promotions, "retention": retention}


def _events(settings: Settings, built: dict[str, Any]) -> dict[str, Any]:
    """The change feed (domain/events.py) and its consumers (jobs/feed.py)."""
    db: Database = built["db"]
    feed = Feed(db, batch=settings.event_batch_size, poll_seconds=settings.event_poll_seconds)
    events = EventLog(db)
    # Scan on push (durable) and the pull gate's caches (in-process) follow the feed (jobs/feed_consumers.py).
    feed_consumers.register(feed, scans=built["scans"], pull_gate=built["pull_gate"], wake_worker=built["worker"].wake)
    built["worker"].register(PRUNE_JOB, EventPruner(events, settings.event_retention_days).handle)
    return {"events": events, "feed": feed}


def _webhooks(settings: Settings, built: dict[str, Any]) -> dict[str, Any]:
    """Webhooks: endpoints, the `webhooks` feed consumer (fan-out) and the delivery job."""
    config = WebhookConfig(
        registry_url=settings.public_url or f"http://{settings.host}:{settings.port}",
        timeout_seconds=settings.webhook_timeout_seconds,
        max_attempts=settings.webhook_max_attempts,
        backoff_base_seconds=settings.webhook_backoff_base_seconds,
        disable_after=settings.webhook_disable_after,
        allow_private_targets=settings.webhook_allow_private_targets,
        secret_overlap_seconds=settings.webhook_secret_overlap_seconds,
    )
    worker: Worker = built["worker"]
    service = WebhookService(built["db"], built["tokens"].keys.ring, built["jobs"], config)
    dispatcher = WebhookDispatcher(built["db"], service, built["jobs"], wake=worker.wake, stopping=worker.stopping.is_set,
                                   repair_grace_seconds=settings.job_lease_seconds + 60)
    built["feed"].consume(WEBHOOK_CONSUMER, dispatcher.fan_out)
    worker.register(WEBHOOK_JOB, dispatcher.handle_job)
    built["housekeeping"].add_step(
        "webhook_deliveries_purged", lambda: service.purge_deliveries(settings.webhook_log_retention_days))
    return {"webhooks": service, "webhook_dispatcher": dispatcher}


def _observe(services: Services) -> None:
    """Connect the metrics (docs/metrics.md) to what feeds them: worker, upload and pull-gate hooks,
    the pool, scrape-time collectors. (The "metrics" feed consumer is the HTTP server's: create_app.)"""
    metrics, db = services.metrics, services.db
    services.worker.on_finished = metrics.job_finished
    metrics.on_job(job_kinds.GC, metrics.gc_finished)
    metrics.on_job(SCAN_JOB, metrics.scan_finished)
    services.uploads.on_committed = metrics.blob_committed
    services.pull_gate.on_denied = metrics.pull_denied
    metrics.watch_pool(db.engine)
    if services.settings.metrics_access == "open":
        metrics.private_projects = services.projects.private_names
    for collector in (UploadsCollector(db), JobQueueCollector(db), FeedLagCollector(services.feed.lag),
                      QuotaCollector(db, services.quotas.usage), WebhookCollector(db)):
        metrics.add_scrape_collector(collector)


def _drain_metrics_consumer(services: Services) -> None:
    while services.feed.run_consumer(METRICS_CONSUMER):
        pass


def _local_tasks(services: Services) -> LocalTasks:
    """Per-process periodic work (jobs/local_tasks.py says why these are not job rows)."""
    local = LocalTasks()
    # Last-pull times buffered in this process (domain/pulls.py); the final flush makes a clean shutdown keep them.
    local.every("pull-flush", services.settings.pull_flush_seconds, services.pulls.flush_async, on_stop=services.pulls.flush_async)
    # Re-read signing keys, so a rotation or revocation on another node (or the CLI) reaches this one.
    keys = services.tokens.keys
    local.every("key-refresh", keys.REFRESH_SECONDS, lambda: services.db.run(keys.reload))
    # Batched HTTP numbers into this process's metrics files (observability/http_stats.py).
    local.every("metrics-flush", FLUSH_SECONDS, services.metrics.flush_async)
    if not services.settings.worker_enabled:
        # The feed loop then runs no durable consumer, but the "metrics" one must run in a server process.
        local.every("metrics-events", services.settings.event_poll_seconds,
                    lambda: services.db.run(_drain_metrics_consumer, services))
    return local


def create_app(settings: Settings) -> Starlette:
    services = build_services(settings)
    # Pushes and pulls per project: only server processes count them (a `dockyard worker` has no /metrics).
    services.feed.consume(METRICS_CONSUMER, services.metrics.count_events, types=COUNTED_EVENTS)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await services.db.run(Housekeeping.schedule, services.scheduler, settings.upload_purge_interval_seconds)
        await services.db.run(services.scheduler.set_schedule, job_kinds.GC, job_kinds.GC, {"dry_run": False}, settings.gc_schedule)
        await services.db.run(services.scheduler.set_schedule, PRUNE_JOB, PRUNE_JOB, {}, settings.event_prune_schedule)
        # Off by default (registries are often air-gapped); None also removes a schedule set before.
        await services.db.run(services.scheduler.set_schedule, UPDATE_KIND, UPDATE_KIND, {},
                              settings.vulndb_update_schedule or None)
        worker = asyncio.create_task(services.worker.run_forever()) if settings.worker_enabled else None
        await services.db.run(services.feed.start)
        services.webhook_dispatcher.start()
        feed = asyncio.create_task(services.feed.run_forever(durable=settings.worker_enabled))
        local = _local_tasks(services)
        local.start()
        try:
            yield
        finally:
            feed.cancel()
            services.feed.stop()
            services.webhook_dispatcher.stop()
            await local.stop()  # flushes the last pull times: they survive a clean shutdown
            if worker is not None:
                services.worker.stop()  # a long scan releases its job instead of holding shutdown
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            services.db.dispose()
            services.metrics.process_exited()

    from dockyard.api.mgmt import create_mgmt_api

    app = Starlette(
        routes=[
            *ops_routes(settings, services.metrics, Readiness(services.db, services.storage)),
            *oci_routes(),
            Mount("/api/v1", app=create_mgmt_api(services)),
        ],
        middleware=[
            Middleware(RequestId),
            # HTTPS (docs/tls.md): HSTS on every response, errors included.
            *([Middleware(StrictTransportSecurity, max_age=settings.tls_hsts_max_age)]
              if settings.tls_enabled and settings.tls_hsts_max_age else []),
            # With metrics_access off nobody can read them: skip the per-request work.
            *([Middleware(HttpMetrics, metrics=services.metrics)] if settings.metrics_access != "off" else []),
            Middleware(HttpSurface, settings=settings),
            Middleware(ApiVersionHeader),
            Middleware(UnexpectedErrors),  # innermost: a 500 keeps its request id and is counted as a 500
        ],
        exception_handlers={
            DockyardError: on_dockyard_error,
            HTTPException: on_http_exception,
            ClientDisconnect: on_client_disconnect,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.services = services
    return app


def app_from_env() -> Starlette:
    """Factory for server workers: settings come from DOCKYARD_* env (set by `dockyard serve`)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)  # untrusted text in log lines is escaped
    limit_malloc_arenas(settings.malloc_arena_max)  # before the services start their threads
    return create_app(settings)
