"""Housekeeping: the periodic clean-up that is nobody's request, run as a scheduled job.

One job of kind `housekeeping` purges uploads idle for longer than upload_max_age_seconds (with
their partial bytes), audit events older than audit_retention_days, and login-throttle rows past
their window. It is a schedule row (`@every <upload_purge_interval_seconds>s`, see
jobs/scheduler.py), so across all server and worker processes it runs once per interval, on
whichever worker claims it, instead of in every process; each step is idempotent, so a retried or
overlapping run is harmless. upload_purge_interval_seconds = 0 removes the schedule (then run
`dockyard admin purge-uploads` from cron).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dockyard.auth.throttle import LoginThrottle
from dockyard.domain.audit import AuditService
from dockyard.domain.uploads import UploadService
from dockyard.jobs.scheduler import Scheduler, every
from dockyard.metadata import job_kinds

log = logging.getLogger("dockyard.housekeeping")
SCHEDULE_NAME = job_kinds.HOUSEKEEPING


class Housekeeping:
    def __init__(
        self, uploads: UploadService, audit: AuditService, throttle: LoginThrottle, *,
        upload_max_age_seconds: int, audit_retention_days: int,
    ):
        self.uploads = uploads
        self.audit = audit
        self.throttle = throttle
        self.upload_max_age_seconds = upload_max_age_seconds
        self.audit_retention_days = audit_retention_days

    def handle(self, payload: dict, progress: Callable[[dict], None]) -> dict:
        """Job handler for kind `housekeeping` (payload ignored); returns what each step removed."""
        result = {"uploads_purged": self.uploads.purge_stale(self.upload_max_age_seconds)}
        if result["uploads_purged"]:
            log.info("purged %d stale uploads", result["uploads_purged"])
        result["audit_events_purged"] = self.audit.purge(self.audit_retention_days)
        result["throttle_rows_purged"] = self.throttle.purge()
        return result

    @staticmethod
    def schedule(scheduler: Scheduler, interval_seconds: int) -> None:
        """Set (or with 0, remove) the housekeeping schedule; every process may call this at start-up."""
        cron = every(interval_seconds) if interval_seconds > 0 else None
        scheduler.set_schedule(SCHEDULE_NAME, job_kinds.HOUSEKEEPING, {}, cron)
