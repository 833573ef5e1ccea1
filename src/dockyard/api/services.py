"""`Services`: every service create_app (app.py) builds, as one typed record, and `services_of`,
the handlers' typed way to reach it (so go-to-definition works from a handler).

It lives in api/ because handlers are its readers and app.py sits above api (tests/unit/test_layers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from dockyard.auth.authenticator import Authenticator
from dockyard.auth.tokens import TokenService
from dockyard.domain.audit import AuditService
from dockyard.domain.blobs import BlobService
from dockyard.domain.listings import ListingService
from dockyard.domain.manifest_service import ManifestService
from dockyard.domain.projects import ProjectService
from dockyard.domain.promotion import PromotionService
from dockyard.domain.pulls import PullRecorder
from dockyard.domain.quotas import QuotaService
from dockyard.domain.repository_lifecycle import RepositoryLifecycle
from dockyard.domain.retention_service import RetentionService
from dockyard.domain.robots import RobotService
from dockyard.domain.scanners import ScannerRegistry
from dockyard.domain.security_settings import SecuritySettings
from dockyard.domain.uploads import UploadService
from dockyard.domain.users import UserService
from dockyard.jobs.gc import GarbageCollector
from dockyard.jobs.housekeeping import Housekeeping
from dockyard.jobs.queue import JobQueue
from dockyard.jobs.scheduler import Scheduler
from dockyard.jobs.worker import Worker
from dockyard.metadata.db import Database
from dockyard.observability.metrics import Metrics
from dockyard.policy.access import AccessPolicy
from dockyard.policy.promotion_gates import PromotionGate
from dockyard.policy.pull_gate import PullGate
from dockyard.policy.tag_rules import TagPolicy
from dockyard.scanning.service import ScanService
from dockyard.domain.events import EventLog
from dockyard.webhooks.delivery import WebhookDispatcher
from dockyard.webhooks.service import WebhookService
from dockyard.jobs.feed import Feed
from dockyard.settings import Settings
from dockyard.signing.in_registry import SignatureChecker
from dockyard.signing.trusted_keys import TrustedKeys
from dockyard.storage import StorageDriver

if TYPE_CHECKING:  # access_gate reads services_of: a runtime import here would be circular
    from dockyard.api.access_gate import AccessGate


@dataclass
class Services:
    """Built once per app by app.build_services; read by handlers through services_of."""

    settings: Settings
    db: Database
    storage: StorageDriver
    blobs: BlobService
    uploads: UploadService
    manifests: ManifestService
    repository_lifecycle: RepositoryLifecycle
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
    housekeeping: Housekeeping
    tag_policy: TagPolicy
    promotions: PromotionService
    promotion_gates: list[PromotionGate]
    pulls: PullRecorder
    retention: RetentionService
    security: SecuritySettings
    trusted_keys: TrustedKeys
    scanners: ScannerRegistry
    scans: ScanService
    signatures: SignatureChecker
    pull_gate: PullGate
    events: EventLog
    feed: Feed
    webhooks: WebhookService
    webhook_dispatcher: WebhookDispatcher
    metrics: Metrics


def services_of(connection: HTTPConnection) -> Services:
    """The app's services, typed (create_app puts them on app.state, and on the mounted /api/v1 app)."""
    return connection.app.state.services
