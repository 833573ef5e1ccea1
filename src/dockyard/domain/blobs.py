"""Blobs: stat and read within a repository, publish verified uploads, mount, unlink.

Every statement on the blob rows goes through domain/blob_refs.py, whose docstring is the GC
protocol. Here: publish and mount touch the blob's row in the transaction that links it, a blob
GC has marked is never linked but revived onto a fresh generation key, and storage moves and
deletes happen inside the row's transaction, so the row, not a timing window, decides which key
is live.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from dockyard.domain import blob_refs
from dockyard.domain.events import record
from dockyard.domain.intents import claim_intent, forget_intent, record_intent
from dockyard.domain.repositories import ensure_repository_id, find_repository_id
from dockyard.errors import BlobReferenced, BlobTooLarge, BlobUnknown, Unavailable, Unsupported
from dockyard.metadata.db import Database, utcnow
from dockyard.storage import StorageDriver
from dockyard.storage.paths import blob_key
from dockyard.storage.protocol import StorageError

log = logging.getLogger("dockyard.blobs")

_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite
PUBLISH_ATTEMPTS = 5


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    storage_key: str


class BlobService:
    def __init__(
        self,
        db: Database,
        storage: StorageDriver,
        *,
        delete_enabled: bool = True,
        quotas=None,
        touch_interval_seconds: float = 43200,
        clock: Callable[[], datetime] = utcnow,
        max_blob_bytes: int | None = None,
        projects_required: bool = False,
    ):
        self.db = db
        self.projects_required = projects_required  # see ManifestService
        self.max_blob_bytes = max_blob_bytes  # a mount obeys the same size cap as an upload
        self.storage = storage
        self.delete_enabled = delete_enabled
        self.quotas = quotas  # domain.quotas.QuotaService, or None (no quota checks)
        # HEAD refreshes touched_at at most this often (half the GC grace period): HEAD is hot.
        self.touch_interval = timedelta(seconds=touch_interval_seconds)
        self.clock = clock

    async def stat(self, repository: str, digest: str) -> BlobInfo:
        row = await self.db.run_fast(self.db.fetchone, blob_refs.STAT_SQL, (repository, digest))
        if row is None:
            raise BlobUnknown(f"blob {digest} is not in repository {repository}", detail={"digest": digest})
        if self._stale(row[3]):
            # A client that HEADs a blob and skips its upload will reference it soon: keep it out of GC's reach.
            await self.db.run(self._touch, int(row[2]))
        return BlobInfo(digest, int(row[0]), row[1])

    def _stale(self, touched_at) -> bool:
        cutoff = self.clock() - self.touch_interval
        if isinstance(touched_at, str):  # raw sqlite3 cursor: compare in the stored text format
            return touched_at < cutoff.strftime(_SQLITE_TIME)
        if touched_at.tzinfo is None:
            cutoff = cutoff.replace(tzinfo=None)
        return touched_at < cutoff

    def _touch(self, blob_id: int) -> None:
        with self.db.write() as conn:
            blob_refs.touch_id(conn, blob_id, self.clock())

    def local_file(self, info: BlobInfo) -> tuple[str, os.stat_result] | None:
        """(path, stat) of the blob's local file, for a zero-copy send; None if storage is not local.
        The stat is inline: a local stat costs microseconds, a thread hop costs more."""
        path = self.storage.local_path(info.storage_key)
        if path is None:
            return None
        try:
            return path, os.stat(path)
        except FileNotFoundError:
            raise self._lost(info) from None

    def read(self, info: BlobInfo, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            return self.storage.open_read(info.storage_key, offset, length)
        except StorageError:
            if self.storage.stat(info.storage_key) is None:
                raise self._lost(info) from None
            raise

    @staticmethod
    def _lost(info: BlobInfo) -> BlobUnknown:
        """The row is present but its object is gone (removed by hand, or a damaged disk): answer 404
        BLOB_UNKNOWN, as for any absent blob, so a client pushes it again, and tell the operator."""
        log.warning("blob %s has no stored object at %s; run `dockyard admin verify`", info.digest, info.storage_key)
        return BlobUnknown(f"blob {info.digest} is not stored", detail={"digest": info.digest})

    # -- publishing -------------------------------------------------------------------

    def publish(self, repository: str, digest: str, staging_key: str, size: int) -> None:
        """Make verified bytes visible as `digest` in `repository`.

        If the blob already exists the staged copy is dropped, so N concurrent pushes of one
        blob leave exactly one stored object. Otherwise the staged object is moved onto a fresh
        generation key while this transaction holds the blob's row. That key is recorded as a
        storage intent first (domain/intents.py): a crash between the move and the commit leaves
        an orphan that GC finds without scanning storage."""
        nonce = uuid.uuid4().hex[:16]
        for _ in range(PUBLISH_ATTEMPTS):
            generation, present = self._next_generation(digest)
            # The usual "someone already pushed this layer" case links the row and writes no key: no intent needed.
            intent = None if present else record_intent(self.db, blob_key(digest, generation, nonce))
            with self.db.write() as conn:
                outcome = self._publish_once(conn, repository, digest, staging_key, size, generation, nonce, intent)
            if outcome == "linked":
                self.storage.delete(staging_key)  # the registry already had these bytes
                return
            if outcome == "moved":
                return
            if intent is not None:
                forget_intent(self.db, intent)  # nothing was written under `key`
        raise Unavailable(f"blob {digest} kept changing state while it was published; retry the upload")

    def _next_generation(self, digest: str) -> tuple[int, bool]:
        """(the generation a new key would get, whether the blob is present now)."""
        with self.db.read() as conn:
            row = blob_refs.generation_state(conn, digest)
        return (1, False) if row is None else (row[0] + 1, row[1] == blob_refs.PRESENT)

    def _publish_once(
        self, conn: Connection, repository: str, digest: str, staging_key: str, size: int, generation: int, nonce: str,
        intent: int | None,
    ) -> str:
        """One attempt; `generation` is the one the intent was recorded for, and must still be the next one."""
        now = self.clock()
        key = blob_key(digest, generation, nonce)
        repo_id = ensure_repository_id(conn, repository, projects_required=self.projects_required)
        # 1. The blob exists: touch its row (this is what serializes us with GC's mark) and link it.
        present = blob_refs.touch_one(conn, digest, now)
        if present is not None:
            if self.quotas is not None:
                self.quotas.check(conn, repository, [digest])
            blob_refs.link(conn, repo_id, present.id, now)
            if intent is not None:
                claim_intent(conn, intent)  # `key` is never written
            return "linked"
        if intent is None:
            return "retry"  # GC marked it since we looked: the next attempt records an intent first
        if self.quotas is not None:
            self.quotas.check_new_blob(conn, repository, size)
        # 2. No row: our (uncommitted) insert claims the digest, then the bytes move under it.
        if generation == 1:
            new_id = blob_refs.insert_blob(conn, digest, size, key, now)
            if new_id is not None:
                if not claim_intent(conn, intent):
                    raise Unavailable(f"blob {digest} could not be published; retry the upload")
                self.storage.move(staging_key, key)
                blob_refs.link(conn, repo_id, new_id, now)
                return "moved"
        # 3. GC marked the blob: lock the row, revive it onto the next generation, drop the old key.
        marked = blob_refs.lock_marked(conn, digest)
        if marked is None or generation != marked.generation + 1:
            return "retry"  # it became present, or the sweeper removed it, or the generation moved, while we looked
        if not claim_intent(conn, intent):
            return "retry"
        self.storage.move(staging_key, key)
        self.storage.delete(marked.storage_key)  # a `deleting` row's key is read by nobody
        blob_refs.revive(conn, marked.id, key, marked.generation + 1, size, now)
        blob_refs.link(conn, repo_id, marked.id, now)
        return "moved"

    def mount(self, target: str, digest: str, source: str | None, may_read=lambda repository: True) -> bool:
        """Link a blob into `target` without moving bytes; False means "upload it instead".

        With `source`, only that repository is considered; without it (automatic content
        discovery) any repository holding the blob that the caller `may_read` will do."""
        with self.db.write() as conn:
            mounted_from = next((name for name in blob_refs.holders(conn, digest, source) if may_read(name)), None)
            if mounted_from is None:
                return False
            # Writing the blob's row serializes with GC's mark; a marked blob is uploaded again instead.
            row = blob_refs.touch_one(conn, digest, self.clock())
            if row is None:
                return False
            if self.max_blob_bytes is not None and row.size > self.max_blob_bytes:
                raise BlobTooLarge(
                    f"blob {digest} is {row.size} bytes, over max_blob_bytes ({self.max_blob_bytes})",
                    detail={"digest": digest, "limit": self.max_blob_bytes},
                )
            if self.quotas is not None:
                self.quotas.check(conn, target, [digest])
            blob_refs.link(conn, ensure_repository_id(conn, target, projects_required=self.projects_required), row.id, self.clock())
            record(conn, "blob.mounted", repository=target, digest=digest, data={"source": mounted_from, "size": row.size})
            return True

    def unlink(self, repository: str, digest: str) -> None:
        """DELETE /v2/<name>/blobs/<digest>: forget the blob in this repository only; GC reclaims bytes.

        Refused (405 UNSUPPORTED, BlobReferenced) while a manifest of the repository references the
        blob: unlinking it would break pulls of that manifest and take its bytes out of the quota usage."""
        if not self.delete_enabled:
            raise Unsupported("deletes are disabled on this registry")
        with self.db.write() as conn:
            repo_id = find_repository_id(conn, repository)
            blob_id = blob_refs.lock_present(conn, digest) if repo_id is not None else None
            if blob_id is None or not blob_refs.unlink(conn, repo_id, blob_id):
                raise BlobUnknown(f"blob {digest} is not in repository {repository}", detail={"digest": digest})
            user = blob_refs.referencing_manifest(conn, repo_id, digest)
            if user is not None:  # raising rolls the unlink back
                raise BlobReferenced(
                    f"blob {digest} is referenced by manifest {user} in {repository}; delete the manifest first",
                    detail={"digest": digest, "manifest": user},
                )
