"""Online garbage collection of blobs, driven by the database (design.md section 2).

GC never lists the storage tree: candidates come from one indexed range scan
(`ix_blobs_gc` on state, ref_count, touched_at), so a run costs in proportion to the
garbage, not to the registry. It reclaims blobs only; untagged manifests are retention's
business, and a manifest referenced by an index keeps its blobs through its own ref_count.

The protocol (mark, sweep, generations, why each statement is safe) is written down once, in
domain/blob_refs.py, which owns every statement on the blob rows; this module only drives it:
per run it reclaims orphans through storage intents (domain/intents.py, deleting under the
intent's row lock every object older than the grace period that no blob or upload row owns),
sweeps what an interrupted run left marked, then marks and sweeps new garbage batch by batch.
While a backup runs, the cutoff never passes its lease's `since` (domain/backup_leases.py).
Uploads in progress are not blobs yet (their bytes live under uploads/), so GC cannot touch
them; stale uploads are purged by housekeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from dockyard.domain import backup_leases, blob_refs
from dockyard.domain.events import record
from dockyard.domain.repository_lifecycle import sweep_empty
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import storage_intents, uploads
from dockyard.storage import StorageDriver

log = logging.getLogger("dockyard.gc")
# The least grace a remote `dockyard gc --grace-seconds` may ask for. The grace protects blobs
# uploaded but not yet referenced: a push publishes its layers first and PUTs the manifest last,
# so the grace must outlast a slow push (blob_refs still fails such a push cleanly, never corrupts).
MIN_GRACE_SECONDS = 600
MAX_GRACE_SECONDS = 10 * 366 * 86400  # ten years: far enough, and `now - grace` never leaves the calendar
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

    def handle(self, payload: dict, progress: Callable[[dict], None]) -> dict:
        """Job handler for kind "gc"; payload {"dry_run": bool, "grace_seconds": int (optional, >= MIN_GRACE_SECONDS)}."""
        grace = payload.get("grace_seconds")
        grace = self.grace_seconds if grace is None else min(max(int(grace), MIN_GRACE_SECONDS), MAX_GRACE_SECONDS)
        result = self.run(dry_run=bool(payload.get("dry_run", False)), progress=progress, grace_seconds=grace)
        if self.audit is not None and not result["dry_run"]:
            from dockyard.auth.principals import Principal

            self.audit.record(actor=Principal("system", "gc"), action="gc.run", object="blobs",  # type: ignore[arg-type]
                              detail={k: result[k] for k in ("deleted", "bytes_freed", "resumed")})
        return result

    def run(
        self, *, dry_run: bool = False, progress: Callable[[dict], None] | None = None, grace_seconds: int | None = None
    ) -> dict:
        started = time.monotonic()
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        now = self.clock()
        cutoff = now - timedelta(seconds=grace)
        report = progress or (lambda data: None)
        with self.db.read() as conn:
            # A running backup still copies what its snapshot references (domain/backup_leases.py).
            floor = backup_leases.gc_floor(conn, now)
            if floor is not None and floor < cutoff:
                cutoff = floor
            count, size, stale = blob_refs.garbage_stats(conn, cutoff)
            waiting, waiting_bytes, oldest = blob_refs.pending_stats(conn, cutoff)
        result = {
            "dry_run": dry_run,
            "grace_seconds": grace,
            "cutoff": cutoff.isoformat(),
            # Unreferenced but inside the grace period: kept this run, reclaimable from `next_eligible_at`.
            "in_grace": waiting,
            "in_grace_bytes": waiting_bytes,
            "next_eligible_at": _eligible_at(oldest, grace),
            "repositories_removed": 0,  # left empty (no manifests) and older than the grace
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
                ids = blob_refs.marked_ids(conn, self.batch_size)
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
                ids = blob_refs.candidate_ids(conn, cutoff, self.batch_size)
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
        # 3. Repositories with no manifests whose blob links are older than the grace.
        result["repositories_removed"] = sweep_empty(self.db, cutoff)
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
            return blob_refs.owns_key(conn, f"{parts[1]}:{parts[3]}", key)
        query = select(uploads.c.id).where(uploads.c.storage_key == key)
        return conn.execute(query.limit(1)).first() is not None

    def _mark(self, ids: list[int], cutoff: datetime) -> list[int]:
        with self.db.write() as conn:
            return blob_refs.mark(conn, ids, cutoff)

    def _sweep(self, ids: list[int]) -> tuple[int, int]:
        with self.db.write() as conn:
            return blob_refs.sweep(conn, ids, self.storage)


def _eligible_at(oldest: datetime | None, grace: int) -> str | None:
    """When the first blob still inside the grace period becomes reclaimable (ISO 8601, UTC)."""
    if oldest is None:
        return None
    if oldest.tzinfo is None:  # SQLite hands back naive UTC
        oldest = oldest.replace(tzinfo=UTC)
    return (oldest + timedelta(seconds=grace)).isoformat()

