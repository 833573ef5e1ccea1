"""Blobs: stat and read within a repository, publish verified uploads, mount, unlink."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, delete, select, update

from dockyard.domain.repositories import ensure_repository_id, find_repository_id
from dockyard.errors import BlobUnknown, Unsupported
from dockyard.metadata.db import Database, insert_ignore, utcnow
from dockyard.metadata.models import blobs, repositories, repository_blobs
from dockyard.storage import StorageDriver
from dockyard.storage.paths import blob_key

_STAT_SQL = (
    "SELECT b.size, b.storage_key FROM repositories r"
    " JOIN repository_blobs rb ON rb.repository_id = r.id"
    " JOIN blobs b ON b.id = rb.blob_id"
    " WHERE r.name = ? AND b.digest = ? AND b.state = 'present'"
)


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    storage_key: str


class BlobService:
    def __init__(self, db: Database, storage: StorageDriver, *, delete_enabled: bool = True):
        self.db = db
        self.storage = storage
        self.delete_enabled = delete_enabled

    async def stat(self, repository: str, digest: str) -> BlobInfo:
        row = await self.db.run_fast(self.db.fetchone, _STAT_SQL, (repository, digest))
        if row is None:
            raise BlobUnknown(f"blob {digest} is not in repository {repository}", detail={"digest": digest})
        return BlobInfo(digest, int(row[0]), row[1])

    def local_path(self, info: BlobInfo) -> str | None:
        return self.storage.local_path(info.storage_key)

    def read(self, info: BlobInfo, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.storage.open_read(info.storage_key, offset, length)

    # -- publishing -------------------------------------------------------------------

    def publish(self, repository: str, digest: str, staging_key: str, size: int) -> None:
        """Make verified bytes visible as `digest` in `repository`.

        If the blob already exists the staged copy is dropped, so N concurrent pushes of one
        blob leave exactly one stored object. Otherwise the staged object is renamed onto a
        generation-specific key, never onto a key a reader might be using."""
        with self.db.read() as conn:
            row = conn.execute(
                select(blobs.c.state, blobs.c.generation).where(blobs.c.digest == digest)
            ).first()
        if row is not None and row.state == "present":
            self.storage.delete(staging_key)
        else:
            generation = 1 if row is None else row.generation + 1
            key = blob_key(digest, generation)
            self.storage.move(staging_key, key)
            self._record_blob(digest, size, key, generation)
        with self.db.write() as conn:
            self._link(conn, ensure_repository_id(conn, repository), digest)

    def _record_blob(self, digest: str, size: int, key: str, generation: int) -> None:
        now = utcnow()
        with self.db.write() as conn:
            inserted = insert_ignore(
                conn,
                blobs,
                {
                    "digest": digest,
                    "size": size,
                    "storage_key": key,
                    "generation": generation,
                    "state": "present",
                    "ref_count": 0,
                    "created_at": now,
                    "touched_at": now,
                },
                ["digest"],
            )
            if not inserted:
                # A row exists: either a concurrent publisher won (present) or GC marked an
                # older generation (deleting). Revive only the latter, onto our new key.
                conn.execute(
                    update(blobs)
                    .where(blobs.c.digest == digest, blobs.c.state != "present")
                    .values(state="present", storage_key=key, generation=generation, size=size, touched_at=now)
                )

    @staticmethod
    def _link(conn: Connection, repo_id: int, digest: str) -> bool:
        blob_id = conn.execute(
            select(blobs.c.id).where(blobs.c.digest == digest, blobs.c.state == "present")
        ).scalar()
        if blob_id is None:
            return False
        insert_ignore(
            conn,
            repository_blobs,
            {"repository_id": repo_id, "blob_id": blob_id, "created_at": utcnow()},
            ["repository_id", "blob_id"],
        )
        return True

    def mount(self, target: str, digest: str, source: str | None, may_read=lambda repository: True) -> bool:
        """Link a blob into `target` without moving bytes.

        With `source`, only that repository is considered; without it (automatic content
        discovery) any repository holding the blob that the caller `may_read` will do."""
        with self.db.write() as conn:
            query = (
                select(repositories.c.name)
                .join(repository_blobs, repository_blobs.c.repository_id == repositories.c.id)
                .join(blobs, blobs.c.id == repository_blobs.c.blob_id)
                .where(blobs.c.digest == digest, blobs.c.state == "present")
            )
            if source is not None:
                query = query.where(repositories.c.name == source)
            holders = conn.execute(query.order_by(repositories.c.name).limit(100)).scalars()
            if not any(may_read(name) for name in holders):
                return False
            return self._link(conn, ensure_repository_id(conn, target), digest)

    def unlink(self, repository: str, digest: str) -> None:
        """DELETE /v2/<name>/blobs/<digest>: forget the blob in this repository only; GC reclaims bytes."""
        if not self.delete_enabled:
            raise Unsupported("deletes are disabled on this registry")
        with self.db.write() as conn:
            repo_id = find_repository_id(conn, repository)
            blob_id = conn.execute(select(blobs.c.id).where(blobs.c.digest == digest)).scalar()
            removed = 0
            if repo_id is not None and blob_id is not None:
                removed = conn.execute(
                    delete(repository_blobs).where(
                        repository_blobs.c.repository_id == repo_id, repository_blobs.c.blob_id == blob_id
                    )
                ).rowcount
            if not removed:
                raise BlobUnknown(f"blob {digest} is not in repository {repository}", detail={"digest": digest})
