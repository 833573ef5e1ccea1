"""Blob uploads whose state lives in the database, so they survive restarts and node changes.

Each append writes the bytes, fsyncs them, then records the new offset and sha256 state in
one row update. A crash between the two leaves extra bytes past the recorded offset, which
the next append truncates; a blob key is only ever written by moving a verified upload.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, insert, select, update

from dockyard.domain.blobs import BlobService
from dockyard.domain.digests import ResumableSha256
from dockyard.domain.repositories import ensure_repository_id, find_repository_id
from dockyard.errors import BlobUploadInvalid, BlobUploadUnknown, DigestInvalid, RangeInvalid, SizeInvalid
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import repositories, uploads
from dockyard.storage import StorageDriver, StorageError
from dockyard.storage.paths import upload_key


@dataclass
class Upload:
    id: str
    repository: str
    storage_key: str
    offset: int
    hash_state: bytes | None


class _Sink:
    """Writes and hashes one batch at a time; runs in a worker thread."""

    def __init__(self, storage: StorageDriver, upload: Upload, hasher: ResumableSha256):
        self.writer = storage.open_write(upload.storage_key, upload.offset)
        self.hasher = hasher

    def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.hasher.update(data)


class UploadService:
    def __init__(self, db: Database, storage: StorageDriver, blobs: BlobService, *, flush_bytes: int = 1 << 20):
        self.db = db
        self.storage = storage
        self.blobs = blobs
        self.flush_bytes = flush_bytes

    # -- session lifecycle --------------------------------------------------------------

    def start(self, repository: str) -> Upload:
        upload_id = str(uuid.uuid4())
        key = upload_key(upload_id)
        now = utcnow()
        with self.db.write() as conn:
            repo_id = ensure_repository_id(conn, repository)
            conn.execute(
                insert(uploads).values(
                    id=upload_id,
                    repository_id=repo_id,
                    storage_key=key,
                    offset=0,
                    hash_state=ResumableSha256().state(),
                    created_at=now,
                    updated_at=now,
                )
            )
        return Upload(upload_id, repository, key, 0, None)

    def get(self, repository: str, upload_id: str) -> Upload:
        with self.db.read() as conn:
            row = conn.execute(
                select(uploads.c.id, uploads.c.storage_key, uploads.c.offset, uploads.c.hash_state)
                .join(repositories, repositories.c.id == uploads.c.repository_id)
                .where(uploads.c.id == upload_id, repositories.c.name == repository)
            ).first()
        if row is None:
            raise BlobUploadUnknown(f"upload {upload_id} is not known", detail={"upload": upload_id})
        return Upload(row.id, repository, row.storage_key, int(row.offset), row.hash_state)

    def cancel(self, upload: Upload) -> None:
        with self.db.write() as conn:
            conn.execute(delete(uploads).where(uploads.c.id == upload.id))
        self.storage.delete(upload.storage_key)

    # -- data ---------------------------------------------------------------------------

    async def append(
        self,
        upload: Upload,
        body: AsyncIterator[bytes],
        *,
        start: int | None = None,
        end: int | None = None,
        content_length: int | None = None,
    ) -> Upload:
        """Append a chunk; `start`/`end` come from Content-Range (inclusive) when the client sent one."""
        if start is not None:
            if start != upload.offset or end is None or end < start:
                raise RangeInvalid(
                    f"chunk {start}-{end} does not continue the upload at offset {upload.offset}",
                    headers=self.progress_headers(upload),
                )
            expected = end - start + 1
            if content_length is not None and content_length != expected:
                raise SizeInvalid(f"Content-Length {content_length} does not match Content-Range {start}-{end}")
        else:
            expected = content_length
        try:
            hasher = await self.db.run(self._hasher_for, upload)
            sink = await self.db.run(_Sink, self.storage, upload, hasher)
        except StorageError as exc:
            raise BlobUploadInvalid(f"upload data is missing from storage ({exc}); start a new upload") from exc
        written = 0
        try:
            buf = bytearray()
            async for chunk in body:
                if not chunk:
                    continue
                buf += chunk
                written += len(chunk)
                if expected is not None and written > expected:
                    raise SizeInvalid(f"body is longer than the declared {expected} bytes")
                if len(buf) >= self.flush_bytes:
                    await self.db.run(sink.write, bytes(buf))
                    buf.clear()
            if buf:
                await self.db.run(sink.write, bytes(buf))
            if expected is not None and written != expected:
                raise SizeInvalid(f"received {written} bytes, expected {expected}")
            await self.db.run(sink.writer.commit)
        except BaseException:
            sink.writer.abort()
            raise
        if written == 0:
            return upload
        return await self.db.run(self._record_progress, upload, upload.offset + written, hasher.state())

    def _record_progress(self, upload: Upload, new_offset: int, state: bytes) -> Upload:
        with self.db.write() as conn:
            updated = conn.execute(
                update(uploads)
                .where(uploads.c.id == upload.id, uploads.c.offset == upload.offset)
                .values(offset=new_offset, hash_state=state, updated_at=utcnow())
            ).rowcount
        if not updated:
            raise RangeInvalid("another request advanced this upload concurrently", headers=self.progress_headers(upload))
        return Upload(upload.id, upload.repository, upload.storage_key, new_offset, state)

    def _hasher_for(self, upload: Upload) -> ResumableSha256:
        """Use the saved state; a node without one recomputes it from the stored bytes."""
        if upload.hash_state is not None:
            return ResumableSha256(upload.hash_state)
        hasher = ResumableSha256()
        if upload.offset:
            for chunk in self.storage.open_read(upload.storage_key, 0, upload.offset):
                hasher.update(chunk)
        return hasher

    def finish(self, upload: Upload, digest: str) -> None:
        """Verify the whole upload against `digest` and publish it. A mismatch leaves nothing behind."""
        algorithm = digest.partition(":")[0]
        if algorithm == "sha256":
            actual = self._hasher_for(upload).digest()
        else:
            h = hashlib.new(algorithm)
            if upload.offset:
                for chunk in self.storage.open_read(upload.storage_key, 0, upload.offset):
                    h.update(chunk)
            actual = f"{algorithm}:{h.hexdigest()}"
        if actual != digest:
            self.cancel(upload)
            raise DigestInvalid(
                f"uploaded content has digest {actual}, not {digest}", detail={"expected": digest, "actual": actual}
            )
        if upload.offset == 0 and self.storage.stat(upload.storage_key) is None:
            self.storage.put(upload.storage_key, b"")
        stored = self.storage.stat(upload.storage_key)
        if stored is None or stored < upload.offset:
            raise BlobUploadInvalid("upload data is missing from storage; restart the upload")
        if stored > upload.offset:
            self.storage.open_write(upload.storage_key, upload.offset).commit()  # drop uncommitted tail
        self.blobs.publish(upload.repository, digest, upload.storage_key, upload.offset)
        with self.db.write() as conn:
            conn.execute(delete(uploads).where(uploads.c.id == upload.id))

    def purge_stale(self, max_age_seconds: int) -> int:
        """Delete uploads idle for longer than max_age; returns how many were purged."""
        cutoff = utcnow() - timedelta(seconds=max_age_seconds)
        with self.db.read() as conn:
            stale = conn.execute(
                select(uploads.c.id, uploads.c.storage_key).where(uploads.c.updated_at < cutoff)
            ).all()
        for row in stale:
            with self.db.write() as conn:
                gone = conn.execute(
                    delete(uploads).where(uploads.c.id == row.id, uploads.c.updated_at < cutoff)
                ).rowcount
            if gone:
                self.storage.delete(row.storage_key)
        return len(stale)

    @staticmethod
    def progress_headers(upload: Upload) -> dict[str, str]:
        """Location and Range that let a client resume (sent with 202, 204 and 416)."""
        last = max(upload.offset - 1, 0)
        return {
            "Location": f"/v2/{upload.repository}/blobs/uploads/{upload.id}",
            "Range": f"0-{last}",
            "Docker-Upload-UUID": upload.id,
        }

    def repository_exists(self, repository: str) -> bool:
        with self.db.read() as conn:
            return find_repository_id(conn, repository) is not None
