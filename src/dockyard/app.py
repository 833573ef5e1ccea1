"""Composition root: create_app(settings) wires every service. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.requests import ClientDisconnect

from dockyard.api.http import (
    ApiVersionHeader,
    on_client_disconnect,
    on_dockyard_error,
    on_http_exception,
    on_unexpected,
)
from dockyard.api.auth import AccessGate
from dockyard.api.surface import HttpSurface
from dockyard.api.oci.routes import oci_routes
from dockyard.auth.authenticator import Authenticator
from dockyard.auth.bootstrap import bootstrap
from dockyard.auth.keys import open_keystore
from dockyard.auth.throttle import LoginThrottle
from dockyard.auth.tokens import TokenService
from dockyard.domain.audit import AuditService
from dockyard.domain.events import EventLog
from dockyard.domain.projects import ProjectService
from dockyard.domain.robots import RobotService
from dockyard.domain.users import UserService
from dockyard.domain.blobs import BlobService
from dockyard.domain.listings import ListingService
from dockyard.domain.manifest_service import ManifestService
from dockyard.domain.promotion import PromotionGate, PromotionService
from dockyard.domain.uploads import UploadService
from dockyard.domain.pulls import PullRecorder
from dockyard.domain.retention_service import RetentionService
from dockyard.domain.quotas import QuotaService
from dockyard.domain.scanners import ScannerRegistry
from dockyard.domain.security_settings import SecuritySettings
from dockyard.policy.promotion_gates import ScanPromotionGate, SignaturePromotionGate
from dockyard.policy.pull_gate import PullGate
from dockyard.scanning.limits import ScanLimits
from dockyard.scanning.reports import ReportStore
from dockyard.scanning.service import RESCAN_JOB, SCAN_JOB, SCANNER_SUBJECT, ScanService
from dockyard.scanning.vulndb import VulnDB
from dockyard.signing.in_registry import RegistrySignatureSource, SignatureChecker
from dockyard.signing.verify import Limits as SignatureLimits
from dockyard.jobs import feed_consumers
from dockyard.jobs.event_prune import PRUNE_JOB, EventPruner
from dockyard.jobs.feed import Feed
from dockyard.jobs.gc import GarbageCollector
from dockyard.jobs.queue import JobQueue
from dockyard.jobs.scheduler import Scheduler
from dockyard.jobs.worker import Worker
from dockyard.scanning.updates import UPDATE_KIND, VulnDBUpdater
from dockyard.errors import DockyardError
from dockyard.policy.access import AccessPolicy
from dockyard.policy.tags import TagPolicy
from dockyard.metadata.db import Database
from dockyard.runtime import limit_malloc_arenas
from dockyard.safe_text import configure_logging
from dockyard.settings import Settings, load_settings
from dockyard.storage import StorageDriver, open_driver
from dockyard.storage.permissions import secure_settings_paths

log = logging.getLogger("dockyard")


@dataclass
class Services:
    settings: Settings
    db: Database
    storage: StorageDriver
    blobs: BlobService
    uploads: UploadService
    manifests: ManifestService
    listings: ListingService
    access: AccessPolicy
    audit: AuditService
    tokens: TokenService
    authenticator: Authenticator
    gate: AccessGate
    users: UserService
    projects: ProjectService
    robots: RobotService
    quotas: QuotaService
    jobs: JobQueue
    scheduler: Scheduler
    worker: Worker
    gc: GarbageCollector
    tag_policy: TagPolicy
    promotions: PromotionService
    promotion_gates: list[PromotionGate]
    pulls: PullRecorder
    retention: RetentionService
    security: SecuritySettings
    scanners: ScannerRegistry
    reports: ReportStore
    scans: ScanService
    signatures: SignatureChecker
    pull_gate: PullGate
    events: EventLog
    feed: Feed


def build_services(settings: Settings) -> Services:
    secure_settings_paths(settings)  # umask 077 and owner-only modes before anything is written
    db = Database(settings.resolved_database_url)
    if settings.auto_migrate:
        db.migrate()
    storage = open_driver(settings)
    quotas = QuotaService(db)
    blobs = BlobService(
        db, storage, delete_enabled=settings.delete_enabled, quotas=quotas, touch_interval_seconds=settings.gc_grace_seconds / 2,
        max_blob_bytes=settings.max_blob_bytes,
    )
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
    access = AccessPolicy(db, auto_create_projects=settings.auto_create_projects)
    audit = AuditService(db)
    projects = ProjectService(db)
    jobs = JobQueue(db, lease_seconds=settings.job_lease_seconds)
    scheduler = Scheduler(db, jobs)
    worker = Worker(
        jobs, scheduler=scheduler, poll_seconds=settings.worker_poll_seconds, lanes={SCAN_JOB: settings.scan_concurrency}
    )
    gc = GarbageCollector(db, storage, grace_seconds=settings.gc_grace_seconds, audit=audit)
    worker.register("gc", gc.handle)
    worker.register(UPDATE_KIND, VulnDBUpdater(db, jobs, base_url=settings.vulndb_url, ecosystems=settings.vulndb_ecosystems).handle)
    tag_policy = TagPolicy(db, access)
    manifests = ManifestService(
        db, max_bytes=settings.max_manifest_bytes, delete_enabled=settings.delete_enabled, tag_policy=tag_policy,
        quotas=quotas,
    )
    listings = ListingService(db)
    security = SecuritySettings(
        db, cache_seconds=settings.security_cache_seconds, auto_scan_default=settings.scan_on_push_default
    )
    scanner_registry = ScannerRegistry(db)
    reports = ReportStore(db)
    scans = ScanService(
        db, storage, blobs, manifests, jobs, security, scanner_registry, reports, VulnDB(db),
        tokens=tokens,
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
        RegistrySignatureSource(db, storage, listings, max_blob_bytes=settings.signature_max_blob_bytes,
                                max_referrers=settings.signature_max_referrers),
        limits=SignatureLimits(max_layers=settings.signature_max_layers, max_referrers=settings.signature_max_referrers),
        max_entries=settings.signature_cache_entries,
    )
    pull_gate = PullGate(
        db, security, reports, signatures,
        request_scan=scans.request,
        exempt_subjects=frozenset({SCANNER_SUBJECT}),
        cache_seconds=settings.security_cache_seconds,
        incomplete_policy=settings.scan_incomplete_policy,
    )
    promotion_gates: list[PromotionGate] = [
        ScanPromotionGate(db, security, reports, incomplete_policy=settings.scan_incomplete_policy),
        SignaturePromotionGate(db, security, signatures),
    ]
    retention = RetentionService(db, manifests, audit, tag_policy=tag_policy, jobs=jobs, scheduler=scheduler)
    worker.register("retention", retention.handle_job)
    services = Services(
        settings=settings,
        db=db,
        storage=storage,
        blobs=blobs,
        uploads=UploadService(
            db, storage, blobs, flush_bytes=settings.upload_flush_bytes, quotas=quotas,
            max_blob_bytes=settings.max_blob_bytes, max_per_account=settings.max_uploads_per_account,
            max_per_project=settings.max_uploads_per_project,
        ),
        manifests=manifests,
        listings=listings,
        access=access,
        audit=audit,
        tokens=tokens,
        authenticator=authenticator,
        gate=AccessGate(settings, tokens, authenticator, access, audit, projects),
        users=UserService(db),
        projects=projects,
        robots=RobotService(db),
        quotas=quotas,
        jobs=jobs,
        scheduler=scheduler,
        worker=worker,
        gc=gc,
        tag_policy=tag_policy,
        promotions=PromotionService(db, manifests, tag_policy, promotion_gates, quotas=quotas, pull_gate=pull_gate),
        promotion_gates=promotion_gates,
        pulls=PullRecorder(db),
        retention=retention,
        security=security,
        scanners=scanner_registry,
        reports=reports,
        scans=scans,
        signatures=signatures,
        pull_gate=pull_gate,
        events=EventLog(db),
        feed=Feed(db, batch=settings.event_batch_size, poll_seconds=settings.event_poll_seconds),
    )
    wire_feed(services)
    return services


def wire_feed(services: Services) -> None:
    """The change feed's built-in consumers and the scheduled prune of old events."""
    feed_consumers.register(services.feed, scans=services.scans, pull_gate=services.pull_gate,
                            wake_worker=services.worker.wake)
    services.worker.register(PRUNE_JOB, EventPruner(services.events, services.settings.event_retention_days).handle)


async def _flush_pulls(services: Services) -> None:
    """Write buffered last-pull times every pull_flush_seconds (domain/pulls.py)."""
    while True:
        await asyncio.sleep(services.settings.pull_flush_seconds)
        try:
            await services.pulls.flush_async()
        except Exception:  # the times stay buffered; the next tick retries
            log.exception("flushing pull times failed")


async def _refresh_keys(services: Services) -> None:
    """Re-read signing keys now and then, so a rotation or revocation on another node (or the
    CLI) reaches this one within KeyStore.REFRESH_SECONDS."""
    keys = services.tokens.keys
    while True:
        await asyncio.sleep(keys.REFRESH_SECONDS)
        try:
            await services.db.run(keys.reload)
        except Exception:  # keep the keys we have; the next tick retries
            log.exception("reloading signing keys failed")


async def _housekeeping(services: Services) -> None:
    """Purge stale uploads and expired audit events. Idempotent, so every worker may run it."""
    interval = services.settings.upload_purge_interval_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            purged = await services.db.run(services.uploads.purge_stale, services.settings.upload_max_age_seconds)
            if purged:
                log.info("purged %d stale uploads", purged)
            await services.db.run(services.audit.purge, services.settings.audit_retention_days)
            await services.db.run(services.authenticator.throttle.purge)
        except Exception:  # keep going on the next tick; one failure must not kill the server
            log.exception("housekeeping failed")


def create_app(settings: Settings) -> Starlette:
    services = build_services(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        reaper = None
        if settings.upload_purge_interval_seconds > 0:
            reaper = asyncio.create_task(_housekeeping(services))
        await services.db.run(services.scheduler.set_schedule, "gc", "gc", {"dry_run": False}, settings.gc_schedule)
        await services.db.run(services.scheduler.set_schedule, PRUNE_JOB, PRUNE_JOB, {}, settings.event_prune_schedule)
        # Off by default (registries are often air-gapped); None also removes a schedule set before.
        await services.db.run(services.scheduler.set_schedule, UPDATE_KIND, UPDATE_KIND, {},
                              settings.vulndb_update_schedule or None)
        worker = asyncio.create_task(services.worker.run_forever()) if settings.worker_enabled else None
        await services.db.run(services.feed.start)
        feed = asyncio.create_task(services.feed.run_forever(durable=settings.worker_enabled))
        pull_flusher = asyncio.create_task(_flush_pulls(services))
        key_refresher = asyncio.create_task(_refresh_keys(services))
        try:
            yield
        finally:
            pull_flusher.cancel()
            feed.cancel()
            services.feed.stop()
            key_refresher.cancel()
            with contextlib.suppress(Exception):
                await services.pulls.flush_async()  # last pull times survive a clean shutdown
            if reaper is not None:
                reaper.cancel()
            if worker is not None:
                services.worker.stop()  # a long scan releases its job instead of holding shutdown
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            services.db.dispose()

    from dockyard.api.mgmt import create_mgmt_api

    app = Starlette(
        routes=[*oci_routes(), Mount("/api/v1", app=create_mgmt_api(services))],
        middleware=[Middleware(HttpSurface, settings=settings), Middleware(ApiVersionHeader)],
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
    configure_logging(settings.log_level)  # untrusted text in log lines is escaped
    limit_malloc_arenas(settings.malloc_arena_max)  # before the services start their threads
    return create_app(settings)
