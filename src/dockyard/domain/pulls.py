"""Last-pull times without a database write per pull.

A manifest GET only does `pending[(repository, digest)] = now` — one dict assignment on the hot path.
Every `pull_flush_seconds` (and at shutdown) the buffer is written in ONE batched UPDATE of
`manifests.last_pulled_at`, which only ever moves the time forward, so several server processes
flushing their own buffers in any order agree. Precision is therefore "within pull_flush_seconds",
plenty for retention rules counted in days; a crash loses at most that window of pull times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import DateTime, bindparam, or_, select, update

from dockyard import request_context
from dockyard.domain.events import record as record_event, rfc3339
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import manifests, repositories

log = logging.getLogger("dockyard.pulls")


class PullRecorder:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.clock = clock
        self._pending: dict[tuple[str, str], datetime] = {}
        self._counts: dict[tuple[str, str], int] = {}  # pulls since the last flush, for artifact.pulled
        self._taken: dict[tuple[str, str], int] = {}  # counts of the batch being written

    def record(self, repository: str, digest: str) -> None:
        """Hot path: remember the latest pull of (repository, digest). No I/O, no lock."""
        key = (repository, digest)
        self._pending[key] = self.clock()
        self._counts[key] = self._counts.get(key, 0) + 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take(self) -> list[tuple[str, str, datetime]]:
        """Drain the buffer without a lock: each key is popped one at a time (atomic under the GIL), so a pull
        recorded concurrently either lands in this batch or stays for the next one — it is never lost."""
        batch = []
        for key in list(self._pending):
            when = self._pending.pop(key, None)
            if when is not None:
                batch.append((key[0], key[1], when))
                self._taken[key] = self._taken.get(key, 0) + self._counts.pop(key, 0)
        return batch

    def write(self, batch: list[tuple[str, str, datetime]]) -> int:
        """One transaction, one executemany; a manifest deleted meanwhile simply matches no row."""
        if not batch:
            return 0
        repo_id = select(repositories.c.id).where(repositories.c.name == bindparam("b_repo")).scalar_subquery()
        when = bindparam("b_when", type_=DateTime(timezone=True))
        stmt = (
            update(manifests)
            .where(
                manifests.c.repository_id == repo_id,
                manifests.c.digest == bindparam("b_digest"),
                or_(manifests.c.last_pulled_at.is_(None), manifests.c.last_pulled_at < when),
            )
            .values(last_pulled_at=when)
        )
        # The buffer holds every client's pulls: whichever request happens to flush it (a retention
        # dry run by any project admin) is neither their actor nor their request.
        with request_context.detached(), self.db.write() as conn:
            conn.execute(stmt, [{"b_repo": r, "b_digest": d, "b_when": t} for r, d, t in batch])
            for repository, digest, when in batch:  # artifact.pulled: one event per manifest per flush
                count = self._taken.get((repository, digest), 1)
                record_event(conn, "artifact.pulled", repository=repository, digest=digest,
                             data={"count": count, "last_pulled_at": rfc3339(when)})
        for repository, digest, _when in batch:
            self._taken.pop((repository, digest), None)
        return len(batch)

    def flush(self) -> int:
        """Write everything buffered so far (blocking; call off the event loop or at shutdown)."""
        batch = self.take()
        try:
            return self.write(batch)
        except Exception:
            # Put the times back so the next flush retries them (newer pulls recorded meanwhile win).
            for repository, digest, when in batch:
                current = self._pending.get((repository, digest))
                if current is None or current < when:
                    self._pending[(repository, digest)] = when
                key = (repository, digest)
                self._counts[key] = self._counts.get(key, 0) + self._taken.pop(key, 0)
            raise

    async def flush_async(self) -> int:
        return await self.db.run(self.flush)
