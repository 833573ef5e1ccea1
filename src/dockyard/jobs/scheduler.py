"""Cron schedules in the `schedules` table; every worker ticks them, each due run is enqueued once.

Exactly-once across workers without a leader: a tick moves a due schedule's `next_run_at`
forward with a conditional UPDATE (`WHERE next_run_at = <the value we read>`), and only the
worker whose UPDATE matched enqueues the job, in the same transaction. A missed window (all
workers down) yields one catch-up run, not one per missed slot.

A schedule is a five-field cron expression, or (set by the server itself, for settings given in
seconds such as upload_purge_interval_seconds) an interval written `@every <n>s` (see `every`).
Users only ever give cron expressions (`validate_cron`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta

from croniter import croniter
from sqlalchemy import delete, select, update

from dockyard.cron import is_cron
from dockyard.errors import InvalidRequest
from dockyard.jobs.queue import JobQueue
from dockyard.metadata.db import Database, aware, insert_ignore, utcnow
from dockyard.metadata.models import schedules


def validate_cron(cron: str) -> str:
    if not is_cron(cron):
        raise InvalidRequest(f"invalid cron expression {cron!r}; expected five fields like '0 3 * * *'", detail={"cron": str(cron)[:100]})
    return cron


_EVERY = "@every "


def every(seconds: int) -> str:
    """The schedule expression for "every `seconds` seconds" (stored in the same cron column)."""
    if seconds < 1:
        raise InvalidRequest("an interval schedule needs at least 1 second", detail={"seconds": seconds})
    return f"{_EVERY}{int(seconds)}s"


def _interval(cron: str) -> int | None:
    if not cron.startswith(_EVERY) or not cron.endswith("s") or not cron[len(_EVERY):-1].isdigit():
        return None
    return int(cron[len(_EVERY):-1]) or None


def next_run(cron: str, after: datetime) -> datetime:
    seconds = _interval(cron)
    if seconds is not None:
        return after + timedelta(seconds=seconds)
    return croniter(cron, after).get_next(datetime)


class Scheduler:
    def __init__(self, db: Database, queue: JobQueue, *, clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.queue = queue
        self.clock = clock

    def set_schedule(self, name: str, kind: str, payload: dict, cron: str | None) -> None:
        """Create, change or (cron None) remove a schedule. Re-setting the same cron keeps its next run,
        so every process may call this at start-up without postponing anything."""
        with self.db.write() as conn:
            if cron is None:
                conn.execute(delete(schedules).where(schedules.c.name == name))
                return
            if _interval(cron) is None:
                validate_cron(cron)
            first = next_run(cron, self.clock())
            values = {"name": name, "kind": kind, "payload": json.dumps(payload), "cron": cron, "next_run_at": first, "enabled": True}
            if insert_ignore(conn, schedules, values, ["name"]):
                return
            current = conn.execute(select(schedules.c.cron).where(schedules.c.name == name)).scalar()
            changes = {"kind": kind, "payload": values["payload"], "enabled": True}
            if current != cron:
                changes.update(cron=cron, next_run_at=first)
            conn.execute(update(schedules).where(schedules.c.name == name).values(**changes))

    def get(self, name: str) -> dict | None:
        with self.db.read() as conn:
            row = conn.execute(select(schedules).where(schedules.c.name == name)).first()
        if row is None:
            return None
        return {"name": row.name, "kind": row.kind, "payload": json.loads(row.payload), "cron": row.cron,
                "next_run_at": aware(row.next_run_at), "enabled": bool(row.enabled)}

    def tick(self) -> list[int]:
        """Enqueue every due schedule once; returns the new job ids (empty on most ticks)."""
        now = self.clock()
        with self.db.read() as conn:
            due = conn.execute(
                select(schedules.c.id, schedules.c.kind, schedules.c.payload, schedules.c.cron, schedules.c.next_run_at).where(
                    schedules.c.enabled.is_(True), schedules.c.next_run_at <= now
                )
            ).all()
        enqueued: list[int] = []
        for row in due:
            with self.db.write() as conn:
                won = conn.execute(
                    update(schedules)
                    .where(schedules.c.id == row.id, schedules.c.next_run_at == row.next_run_at)
                    .values(next_run_at=next_run(row.cron, now))
                ).rowcount
                if won:
                    enqueued.append(self.queue.enqueue_in(conn, row.kind, json.loads(row.payload)))
        return enqueued
