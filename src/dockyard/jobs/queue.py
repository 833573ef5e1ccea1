"""The job queue: rows in the `jobs` table, enqueued after the caller's own commit.

Why a table and not a broker: the database is already authoritative and shared by every
node, so a job survives restarts and any worker process can run it.

Claiming is race-free on both databases. On PostgreSQL a worker picks a row with
`SELECT … FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on each other; on
SQLite writers are serialized anyway (BEGIN IMMEDIATE), and the claim is one conditional
UPDATE. A claim is a lease (`locked_until`): a worker that dies stops renewing it, and the
job becomes claimable again once the lease runs out. Failures retry with exponential backoff
until `max_attempts`, then the job is `failed` with its last error.

Fairness: each job carries a `fair_key` (the project, for scans), and a claim takes the due job
whose key was served longest ago (`job_turns`), oldest first within a key. So a project with 60
queued scans delays another project's first scan by one job at most, not by 60.

Child jobs: a handler may hand work to child jobs (`Children`, one per platform image of an
index). The parent then waits (`waiting`) and finishes, in the same transaction as its last
child, succeeded when every child succeeded, else failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from dockyard.paging import Page, page_bounds
from dockyard.errors import NotFound
from dockyard.metadata.db import Database, aware, upsert, utcnow
from dockyard.metadata.models import job_turns, jobs

BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 3600


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict
    attempts: int
    max_attempts: int
    fair_key: str = ""


@dataclass
class Children:
    """A handler's answer "this job is done when these are": child jobs of `kind` with these
    payloads; `adopt[i]`, when given, is the id of an already queued or running job doing the same
    work, which becomes the child instead of a duplicate (if it has no parent yet)."""

    kind: str
    payloads: list[dict]
    adopt: list[int | None] | None = None
    max_attempts: int = 3
    result: dict | None = None  # the parent's result when it has no children at all


PENDING = ("queued", "running", "waiting")


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
        "parent_id": row.parent_id,
        "fair_key": row.fair_key,
    }


class JobQueue:
    def __init__(self, db: Database, *, lease_seconds: int = 300, clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.lease_seconds = lease_seconds
        self.clock = clock

    # -- producers -----------------------------------------------------------------------

    def enqueue(
        self, kind: str, payload: dict, *, run_after: datetime | None = None, max_attempts: int = 3, fair_key: str = ""
    ) -> int:
        """Add a job in its own transaction. Call it after your own transaction has committed,
        so a worker never runs a job for state that was rolled back."""
        with self.db.write() as conn:
            return self.enqueue_in(conn, kind, payload, run_after=run_after, max_attempts=max_attempts, fair_key=fair_key)

    def enqueue_in(
        self,
        conn: Connection,
        kind: str,
        payload: dict,
        *,
        run_after: datetime | None = None,
        max_attempts: int = 3,
        fair_key: str = "",
        parent_id: int | None = None,
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
                fair_key=fair_key[:255],
                parent_id=parent_id,
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
        """Take a due job of one of `kinds`, or None: the oldest job of the fair key served longest
        ago (round-robin over projects). Cheap when idle: one indexed read."""
        if not kinds:
            return None
        now = self.clock()
        with self.db.read() as conn:
            # Idle polls must not take SQLite's write lock; only a likely hit goes on to write.
            if conn.execute(select(jobs.c.id).where(self._claimable(now, kinds)).limit(1)).first() is None:
                return None
        with self.db.write() as conn:
            query = (
                select(jobs.c.id)
                .select_from(jobs.outerjoin(job_turns, job_turns.c.fair_key == jobs.c.fair_key))
                .where(self._claimable(now, kinds))
                .order_by(func.coalesce(job_turns.c.turn, 0), jobs.c.run_after, jobs.c.id)
                .limit(1)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=jobs)
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
                .returning(jobs.c.id, jobs.c.kind, jobs.c.payload, jobs.c.attempts, jobs.c.max_attempts, jobs.c.fair_key)
            ).first()
            if claimed is not None:
                turn = conn.execute(select(func.coalesce(func.max(job_turns.c.turn), 0))).scalar_one() + 1
                upsert(conn, job_turns, {"fair_key": claimed.fair_key, "turn": turn}, ["fair_key"], {"turn": turn})
        if claimed is None:
            return None
        return ClaimedJob(
            claimed.id, claimed.kind, _loads(claimed.payload) or {}, claimed.attempts, claimed.max_attempts, claimed.fair_key
        )

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
            done = bool(
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
            if done:
                self._settle_parent_of(conn, job.id)
            return done

    def wait_for_children(self, job: ClaimedJob, worker_id: str, children: Children) -> list[int]:
        """Turn `job` into a parent waiting for `children` (adopting running duplicates), in one
        transaction; with no children it simply succeeds. Returns the child job ids."""
        adopt = children.adopt or [None] * len(children.payloads)
        with self.db.write() as conn:
            mine = conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.state == "running", jobs.c.locked_by == worker_id)
                .values(state="waiting", locked_until=None, progress=json.dumps({"children": len(children.payloads)}))
            ).rowcount
            if not mine:
                return []
            ids = []
            for payload, existing in zip(children.payloads, adopt):
                if existing is not None and conn.execute(
                    update(jobs)
                    .where(jobs.c.id == existing, jobs.c.parent_id.is_(None), jobs.c.state.in_(["queued", "running"]))
                    .values(parent_id=job.id)
                ).rowcount:
                    ids.append(existing)
                    continue
                ids.append(
                    self.enqueue_in(conn, children.kind, payload, max_attempts=children.max_attempts,
                                    fair_key=job.fair_key, parent_id=job.id)
                )
            if not ids:
                conn.execute(
                    update(jobs).where(jobs.c.id == job.id).values(
                        state="succeeded", result=json.dumps(children.result or {}), finished_at=self.clock()
                    )
                )
                self._settle_parent_of(conn, job.id)
            return ids

    def children(self, job_id: int) -> list[dict]:
        with self.db.read() as conn:
            rows = conn.execute(select(jobs).where(jobs.c.parent_id == job_id).order_by(jobs.c.id)).all()
        return [job_dict(r) for r in rows]

    def _settle_parent_of(self, conn: Connection, job_id: int) -> None:
        """Finish the parent of `job_id` once none of its children is pending (then its parent, ...)."""
        parent_id = conn.execute(select(jobs.c.parent_id).where(jobs.c.id == job_id)).scalar()
        while parent_id is not None:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.state, jobs.c.result, jobs.c.error).where(jobs.c.parent_id == parent_id)
            ).all()
            if any(r.state in PENDING for r in rows):
                return
            failed = [r for r in rows if r.state != "succeeded"]
            images = [i for r in rows for i in ((_loads(r.result) or {}).get("images") or [])]
            result = {"children": len(rows), "failed": len(failed), "images": images}
            values = {"state": "failed" if failed else "succeeded", "result": json.dumps(result), "finished_at": self.clock()}
            if failed:
                values["error"] = f"{len(failed)} of {len(rows)} child jobs failed; first: job {failed[0].id}: {failed[0].error}"[:4000]
            if not conn.execute(update(jobs).where(jobs.c.id == parent_id, jobs.c.state == "waiting").values(**values)).rowcount:
                return
            parent_id = conn.execute(select(jobs.c.parent_id).where(jobs.c.id == parent_id)).scalar()

    def fail(self, job: ClaimedJob, worker_id: str, error: str) -> str:
        """Record a failure: requeue with backoff while attempts remain, else `failed`. Returns the new state."""
        now = self.clock()
        if job.attempts < job.max_attempts:
            delay = min(BACKOFF_BASE_SECONDS * 2 ** (job.attempts - 1), BACKOFF_MAX_SECONDS)
            values = {"state": "queued", "run_after": now + timedelta(seconds=delay), "locked_until": None}
        else:
            values = {"state": "failed", "finished_at": now, "locked_until": None}
        with self.db.write() as conn:
            changed = conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.state == "running", jobs.c.locked_by == worker_id)
                .values(error=error[:4000], **values)
            ).rowcount
            if changed and values["state"] == "failed":
                self._settle_parent_of(conn, job.id)
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
            dead = [
                r.id for r in conn.execute(
                    update(jobs)
                    .where(jobs.c.state == "running", jobs.c.locked_until < now, jobs.c.attempts >= jobs.c.max_attempts)
                    .values(state="failed", finished_at=now, locked_until=None, error="the worker running this job stopped")
                    .returning(jobs.c.id)
                ).all()
            ]
            for job_id in dead:
                self._settle_parent_of(conn, job_id)
            return len(dead)

    def active(self, kind: str) -> dict | None:
        """The oldest queued or running job of `kind` (so a second GC request can join the first)."""
        with self.db.read() as conn:
            row = conn.execute(
                select(jobs).where(jobs.c.kind == kind, jobs.c.state.in_(["queued", "running"])).order_by(jobs.c.id).limit(1)
            ).first()
        return job_dict(row) if row is not None else None
