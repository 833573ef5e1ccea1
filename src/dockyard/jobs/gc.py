"""Online garbage collection of blobs, driven by the database (design.md section 2).

GC never lists the storage tree: candidates come from one indexed range scan
(`ix_blobs_gc` on state, ref_count, touched_at), so a run costs in proportion to the
garbage, not to the registry. It reclaims blobs only; untagged manifests are retention's
business, and a manifest referenced by an index keeps its blobs through its own ref_count.

The protocol, per batch of candidates:

1. Mark, in one statement whose conditions are all on the blob's own row:
   `UPDATE blobs SET state='deleting' WHERE id IN (…) AND state='present' AND ref_count=0
   AND touched_at < cutoff`. A writer that references the blob (manifest PUT, mount,
   publish, HEAD) writes that same row, so the two serialize on the row lock and PostgreSQL
   re-checks the row's new values; a `NOT EXISTS` over reference tables would not be safe.
   The blob's repository links go in the same transaction.
2. Sweep, in a second transaction that locks the still-`deleting` rows: delete each row's
   storage object, then the rows. A publisher reviving the blob (domain/blobs.py) takes the
   same row lock and moves the row to a new generation key, so the sweeper can only ever
   delete the key of a row that is still marked, and never a revived row.

A run interrupted between the two steps leaves `deleting` rows; the next run sweeps them
first. Objects a crash left without a row (written before the row's transaction committed) are
found through their storage intents (domain/intents.py), not by listing storage: each run
deletes, under the intent's row lock, the object of every intent older than the grace period
that no blob or upload row owns. Uploads in progress are not blobs yet (their bytes live under uploads/), so GC
cannot touch them; stale uploads are purged by housekeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update

from dockyard.domain.events import record
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import blobs, repository_blobs, storage_intents, uploads
from dockyard.storage import StorageDriver

log = logging.getLogger("dockyard.gc")
MAX_BATCHES = 1_000_000  # a bound, not a limit anyone should reach


class GarbageCollector:
    def __init__(
        self,
        db: Database,
        storage: StorageDriver,
        *,
        grace_seconds: int,
        batch_size: int = 500,
        clock: Callable[[], datetime] = utcnow,
        audit=None,
    ):
        self.db = db
        self.storage = storage
        self.grace_seconds = grace_seconds
        self.batch_size = batch_size
        self.clock = clock
        self.audit = audit

    def _candidates(self, cutoff: datetime):
        return (blobs.c.state == "present", blobs.c.ref_count == 0, blobs.c.touched_at < cutoff)

    def handle(self, payload: dict, progress: Callable[[dict], None]) -> dict:
        """Job handler for kind "gc"; payload {"dry_run": bool}."""
        result = self.run(dry_run=bool(payload.get("dry_run", False)), progress=progress)
        if self.audit is not None and not result["dry_run"]:
            from dockyard.auth.principals import Principal

            self.audit.record(actor=Principal("system", "gc"), action="gc.run", object="blobs",  # type: ignore[arg-type]
                              detail={k: result[k] for k in ("deleted", "bytes_freed", "resumed")})
        return result

    def run(self, *, dry_run: bool = False, progress: Callable[[dict], None] | None = None) -> dict:
        started = time.monotonic()
        cutoff = self.clock() - timedelta(seconds=self.grace_seconds)
        report = progress or (lambda data: None)
        with self.db.read() as conn:
            count, size = conn.execute(
                select(func.count(), func.coalesce(func.sum(blobs.c.size), 0)).where(*self._candidates(cutoff))
            ).one()
            stale = conn.execute(select(func.count()).where(blobs.c.state == "deleting")).scalar_one()
        result = {
            "dry_run": dry_run,
            "grace_seconds": self.grace_seconds,
            "cutoff": cutoff.isoformat(),
            "candidates": int(count),
            "candidate_bytes": int(size),
            "marked_before": int(stale),  # left `deleting` by an interrupted run
            "deleted": 0,
            "bytes_freed": 0,
            "resumed": 0,
            "skipped": 0,  # candidates referenced or touched between the scan and the mark
            "orphans_reclaimed": 0,  # objects a crash left behind, found through storage intents
            "seconds": 0.0,
        }
        if dry_run:
            result["seconds"] = round(time.monotonic() - started, 3)
            return result
        state = {"phase": "sweeping", "total": result["candidates"] + result["marked_before"], "done": 0, "bytes_freed": 0}
        report(dict(state))
        # 0. Reclaim what crashed writers left behind.
        result["orphans_reclaimed"] = self._reclaim_intents(cutoff)
        # 1. Finish what an interrupted run marked.
        for _ in range(MAX_BATCHES):
            with self.db.read() as conn:
                ids = list(conn.execute(select(blobs.c.id).where(blobs.c.state == "deleting").limit(self.batch_size)).scalars())
            if not ids:
                break
            deleted, freed = self._sweep(ids)
            if not deleted:
                break  # revived or swept by someone else meanwhile; the next run sees what is left
            result["resumed"] += deleted
            result["bytes_freed"] += freed
            state["done"] += deleted
            state["bytes_freed"] = result["bytes_freed"]
            report(dict(state))
        # 2. Mark and sweep new garbage, one batch at a time.
        for _ in range(MAX_BATCHES):
            with self.db.read() as conn:
                ids = list(conn.execute(select(blobs.c.id).where(*self._candidates(cutoff)).limit(self.batch_size)).scalars())
            if not ids:
                break
            marked = self._mark(ids, cutoff)
            result["skipped"] += len(ids) - len(marked)
            if marked:
                deleted, freed = self._sweep(marked)
                result["deleted"] += deleted
                result["bytes_freed"] += freed
                state["done"] += deleted
                state["bytes_freed"] = result["bytes_freed"]
                report(dict(state))
        result["seconds"] = round(time.monotonic() - started, 3)
        with self.db.write() as conn:  # the sweeps committed batch by batch; the summary is its own transaction
            record(conn, "gc.completed", data={
                "blobs": result["deleted"] + result["resumed"], "bytes": result["bytes_freed"],
                **{k: result[k] for k in ("deleted", "resumed", "skipped", "orphans_reclaimed", "seconds")},
            })
        log.info("gc: deleted %d blobs (%d bytes) in %.2fs", result["deleted"] + result["resumed"], result["bytes_freed"], result["seconds"])
        return result

    def _reclaim_intents(self, cutoff: datetime) -> int:
        reclaimed = 0
        for _ in range(MAX_BATCHES):
            with self.db.read() as conn:
                ids = list(conn.execute(
                    select(storage_intents.c.id).where(storage_intents.c.created_at < cutoff).limit(self.batch_size)
                ).scalars())
            if not ids:
                break
            for intent_id in ids:
                with self.db.write() as conn:
                    # Deleting the intent first takes its row lock: a publisher still using it
                    # (domain/blobs.py claims it before writing) has either committed, or will find it gone.
                    key = conn.execute(
                        delete(storage_intents).where(storage_intents.c.id == intent_id).returning(storage_intents.c.storage_key)
                    ).scalar()
                    if key is None:
                        continue
                    if not self._owned(conn, key) and self.storage.stat(key) is not None:
                        self.storage.delete(key)
                        reclaimed += 1
        return reclaimed

    @staticmethod
    def _owned(conn, key: str) -> bool:
        parts = key.split("/")
        if parts[0] == "blobs" and len(parts) == 5:  # blobs/<alg>/<xx>/<hex>/g<n>-<nonce>: look up by digest (indexed)
            query = select(blobs.c.id).where(blobs.c.digest == f"{parts[1]}:{parts[3]}", blobs.c.storage_key == key)
        else:
            query = select(uploads.c.id).where(uploads.c.storage_key == key)
        return conn.execute(query.limit(1)).first() is not None

    def _mark(self, ids: list[int], cutoff: datetime) -> list[int]:
        with self.db.write() as conn:
            target = blobs.c.id.in_(ids)
            if conn.dialect.name == "postgresql":
                # Lock only rows no writer holds right now (a writer holding one is referencing it):
                # GC never waits on a row lock, so it can never deadlock with a manifest PUT.
                free = select(blobs.c.id).where(target, *self._candidates(cutoff)).with_for_update(skip_locked=True)
                target = blobs.c.id.in_(free)
            marked = list(
                conn.execute(
                    update(blobs).where(target, *self._candidates(cutoff)).values(state="deleting").returning(blobs.c.id)
                ).scalars()
            )
            if marked:
                conn.execute(delete(repository_blobs).where(repository_blobs.c.blob_id.in_(marked)))
        return marked

    def _sweep(self, ids: list[int]) -> tuple[int, int]:
        """Delete the objects of rows that are still marked, then the rows, under the rows' locks."""
        with self.db.write() as conn:
            query = select(blobs.c.id, blobs.c.storage_key, blobs.c.size).where(blobs.c.id.in_(ids), blobs.c.state == "deleting")
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)  # a publisher reviving a row holds it
            rows = conn.execute(query).all()
            for row in rows:
                self.storage.delete(row.storage_key)
            if rows:
                conn.execute(delete(blobs).where(blobs.c.id.in_([r.id for r in rows]), blobs.c.state == "deleting"))
        return len(rows), sum(int(r.size) for r in rows)
