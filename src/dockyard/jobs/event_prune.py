"""The scheduled prune of the change feed (`event_prune_schedule`, kind "events-prune").

Events older than `event_retention_days` go, but never one a durable consumer has yet to read
(EventLog.prune), so a stopped worker delays pruning instead of losing deliveries."""

from __future__ import annotations

from collections.abc import Callable

from dockyard.domain.events import EventLog
from dockyard.metadata import job_kinds

PRUNE_JOB = job_kinds.EVENTS_PRUNE


class EventPruner:
    def __init__(self, log: EventLog, retention_days: int):
        self.log = log
        self.retention_days = retention_days

    def handle(self, payload: dict, progress: Callable[[dict], None]) -> dict:
        days = int(payload.get("retention_days") or self.retention_days)
        return {"retention_days": days, "pruned": self.log.prune(days)}
