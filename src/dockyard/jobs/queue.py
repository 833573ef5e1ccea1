"""The job queue: rows in the `jobs` table, enqueued after the caller's own commit.

Why a table and not a broker: the database is already authoritative and shared by every
node, so a job survives restarts and any worker process can run it.

Claiming is race-free on both databases. On PostgreSQL a worker picks a row with
`SELECT … FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on each other; on
SQLite writers are serialized anyway (BEGIN IMMEDIATE), and the claim is one conditional
UPDATE. A claim is a lease (`locked_until`): a worker that dies stops renewing it, and the
job becomes claimable again once the lease runs out. Failures retry with exponential backoff
until `max_attempts`, then the job is `failed` with its last error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from dockyard.domain.identity import Page, page_bounds
from dockyard.errors import NotFound
from dockyard.metadata.db import Database, aware, utcnow
from dockyard.metadata.models import jobs

BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 3600


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict
    attempts: int
    max_attempts: int


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def job_dict(row) -> dict:
    return {
        "id": row.id,
        "kind": row.kind,
        "payload": _loads(row.payload) or {},
        "state": row.state,
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "run_after": aware(row.run_after),
        "created_at": aware(row.created_at),
        "started_at": aware(row.started_at),
        "finished_at": aware(row.finished_at),
        "locked_by": row.locked_by,
        "progress": _loads(row.progress),
        "result": _loads(row.result),
        "error": row.error,
    }


class JobQueue:
    def __init__(self, db: Database, *, lease_seconds: int = 300, clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.lease_seconds = lease_seconds
        self.clock = clock

    # -- producers -----------------------------------------------------------------------

    def enqueue(self, kind: str, payload: dict, *, run_after: datetime | None = None, max_attempts: int = 3) -> int:
        """Add a job in its own transaction. Call it after your own transaction has committed,
        so a worker never runs a job for state that was rolled back."""
        with self.db.write() as conn:
            return self.enqueue_in(conn, kind, payload, run_after=run_after, max_attempts=max_attempts)

    def enqueue_in(
        self, conn: Connection, kind: str, payload: dict, *, run_after: datetime | None = None, max_attempts: int = 3
    ) -> int:
        """Add a job inside the caller's transaction (the scheduler's claim and its job commit together)."""
        now = self.clock()
        result = conn.execute(
            insert(jobs)
            .values(
                kind=kind,
                payload=json.dumps(payload),
                state="queued",
                run_after=run_after or now,
                attempts=0,
                max_attempts=max(1, max_attempts),
                created_at=now,
            )
            .returning(jobs.c.id)
        )
        return int(result.scalar_one())

    # -- readers -------------------------------------------------------------------------

    def get(self, job_id: int) -> dict:
        with self.db.read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"job {job_id} does not exist", detail={"job": job_id})
        return job_dict(row)

    def list(self, kind: str | None = None, page: int = 1, page_size: int = 50) -> Page[dict]:
        limit, offset = page_bounds(page, page_size)
        where = [jobs.c.kind == kind] if kind else []
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar_one()
            rows = conn.execute(select(jobs).where(*where).order_by(jobs.c.id.desc()).limit(limit).offset(offset)).all()
        return Page([job_dict(r) for r in rows], int(total), page, page_size)

    # -- workers -------------------------------------------------------------------------

    def _claimable(self, now: datetime, kinds: Collection[str]):
        return and_(
            jobs.c.kind.in_(list(kinds)),
            or_(
                and_(jobs.c.state == "queued", jobs.c.run_after <= now),
                # A running job whose lease ran out: its worker died (or hung) mid-run.
                and_(jobs.c.state == "running", jobs.c.locked_until < now, jobs.c.attempts < jobs.c.max_attempts),
            ),
        )

    def claim(self, worker_id: str, kinds: Collection[str]) -> ClaimedJob | None:
        """Take the oldest due job of one of `kinds`, or None. Cheap when idle: one indexed read."""
        if not kinds:
            return None
        now = self.clock()
        with self.db.read() as conn:
            # Idle polls must not take SQLite's write lock; only a likely hit goes on to write.
            if conn.execute(select(jobs.c.id).where(self._claimable(now, kinds)).limit(1)).first() is None:
                return None
        with self.db.write() as conn:
            query = select(jobs.c.id).where(self._claimable(now, kinds)).order_by(jobs.c.run_after, jobs.c.id).limit(1)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            job_id = conn.execute(query).scalar()
            if job_id is None:
                return None
            claimed = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, self._claimable(now, kinds))
                .values(
                    state="running",
                    attempts=jobs.c.attempts + 1,
                    locked_by=worker_id,
                    locked_until=now + timedelta(seconds=self.lease_seconds),
                    started_at=now,
                )
                .returning(jobs.c.id, jobs.c.kind, jobs.c.payload, jobs.c.attempts, jobs.c.max_attempts)
            ).first()
        if claimed is None:
            return None
        return ClaimedJob(claimed.id, claimed.kind, _loads(claimed.payload) or {}, claimed.attempts, claimed.max_attempts)

    def heartbeat(self, job: ClaimedJob, worker_id: str, progress: dict | None = None) -> bool:
        """Renew the lease (and record progress). False if the job is no longer ours."""
        values: dict[str, Any] = {"locked_until": self.clock() + timedelta(seconds=self.lease_seconds)}
        if progress is not None:
            values["progress"] = json.dumps(progress)
        with self.db.write() as conn:
            return bool(
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job.id, jobs.c.state == "running", jobs.c.locked_by == worker_id)
                    .values(**values)
                ).rowcount
            )

    def succeed(self, job: ClaimedJob, worker_id: str, result: dict | None) -> bool:
        with self.db.write() as conn:
            return bool(
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job.id, jobs.c.state == "running", jobs.c.locked_by == worker_id)
                    .values(
                        state="succeeded",
                        result=json.dumps(result if result is not None else {}),
                        error=None,
                        finished_at=self.clock(),
                        locked_until=None,
                    )
                ).rowcount
            )

    def fail(self, job: ClaimedJob, worker_id: str, error: str) -> str:
        """Record a failure: requeue with backoff while attempts remain, else `failed`. Returns the new state."""
        now = self.clock()
        if job.attempts < job.max_attempts:
            delay = min(BACKOFF_BASE_SECONDS * 2 ** (job.attempts - 1), BACKOFF_MAX_SECONDS)
            values = {"state": "queued", "run_after": now + timedelta(seconds=delay), "locked_until": None}
        else:
            values = {"state": "failed", "finished_at": now, "locked_until": None}
        with self.db.write() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.state == "running", jobs.c.locked_by == worker_id)
                .values(error=error[:4000], **values)
            )
        return values["state"]

    def release(self, job: ClaimedJob, worker_id: str) -> bool:
        """Give a claimed job back, due now, without counting the attempt (the worker is stopping)."""
        with self.db.write() as conn:
            return bool(
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job.id, jobs.c.state == "running", jobs.c.locked_by == worker_id)
                    .values(state="queued", attempts=jobs.c.attempts - 1, run_after=self.clock(), locked_until=None)
                ).rowcount
            )

    def fail_exhausted(self) -> int:
        """Jobs whose lease ran out on their last attempt will never be claimed again: fail them."""
        now = self.clock()
        with self.db.write() as conn:
            return conn.execute(
                update(jobs)
                .where(jobs.c.state == "running", jobs.c.locked_until < now, jobs.c.attempts >= jobs.c.max_attempts)
                .values(state="failed", finished_at=now, locked_until=None, error="the worker running this job stopped")
            ).rowcount

    def active(self, kind: str) -> dict | None:
        """The oldest queued or running job of `kind` (so a second GC request can join the first)."""
        with self.db.read() as conn:
            row = conn.execute(
                select(jobs).where(jobs.c.kind == kind, jobs.c.state.in_(["queued", "running"])).order_by(jobs.c.id).limit(1)
            ).first()
        return job_dict(row) if row is not None else None
