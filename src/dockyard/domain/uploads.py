"""Blob uploads whose state lives in the database, so they survive restarts and node changes.

Each append writes the bytes, fsyncs them, then records the new offset and sha256 state in
one row update. A crash between the two leaves extra bytes past the recorded offset, which
the next append truncates; a blob key is only ever written by moving a verified upload.

An upload belongs to the account that opened it: any other caller gets BLOB_UPLOAD_UNKNOWN,
exactly as for an id that never existed. Every append is checked against `max_blob_bytes` and
the project's quota (which counts open uploads too); a refused upload is deleted at once, so no
bytes beyond either limit are kept. Open sessions are capped per account and per project.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, insert, select, update

from dockyard.domain.blobs import BlobService
from dockyard.domain.digests import ResumableSha256
from dockyard.auth.principals import Principal
from dockyard.errors import (
    BlobTooLarge,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    QuotaExceeded,
    RangeInvalid,
    SizeInvalid,
    TooManyUploads,
)
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import projects, uploads
from dockyard.policy.access import project_of
from dockyard.storage import ObjectWriter, StorageBusy, StorageDriver, StorageError
from dockyard.storage.paths import upload_key


@dataclass
class Upload:
    id: str
    repository: str
    storage_key: str
    offset: int
    hash_state: bytes | None
    owner: str = ""


def owner_key(principal: Principal | None) -> str:
    """Who owns an upload: `<kind>:<name>` of the caller (`anonymous:` with access control off)."""
    if principal is None:
        return "anonymous:"
    return f"{principal.kind}:{principal.name}"


class _Sink:
    """Writes and hashes one batch at a time; runs in a worker thread."""

    def __init__(self, writer: ObjectWriter, hasher: ResumableSha256):
        self.writer = writer
        self.hasher = hasher

    def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.hasher.update(data)


class UploadService:
    on_committed: Callable[[str, int], None] = staticmethod(lambda project, size: None)  # metrics: pushed bytes
    def __init__(
        self,
        db: Database,
        storage: StorageDriver,
        blobs: BlobService,
        *,
        flush_bytes: int = 1 << 20,
        quotas=None,
        max_blob_bytes: int | None = None,
        max_per_account: int | None = None,
        max_per_project: int | None = None,
    ):
        self.db = db
        self.storage = storage
        self.blobs = blobs
        self.flush_bytes = flush_bytes
        self.quotas = quotas  # domain.quotas.QuotaService, or None (no quota checks)
        self.max_blob_bytes = max_blob_bytes
        self.max_per_account = max_per_account
        self.max_per_project = max_per_project
        self.clock = utcnow  # the purge's "now"; tests move it instead of waiting

    # -- session lifecycle --------------------------------------------------------------

    def start(self, repository: str, owner: str = "anonymous:") -> Upload:
        upload_id = str(uuid.uuid4())
        key = upload_key(upload_id)
        project = project_of(repository)
        now = utcnow()
        with self.db.write() as conn:
            self._check_open_sessions(conn, owner, project)
            conn.execute(
                insert(uploads).values(
                    id=upload_id,
                    repository=repository,
                    storage_key=key,
                    offset=0,
                    hash_state=ResumableSha256().state(),
                    created_at=now,
                    updated_at=now,
                    owner=owner,
                    project=project,
                )
            )
        return Upload(upload_id, repository, key, 0, None, owner)

    def _check_open_sessions(self, conn, owner: str, project: str) -> None:
        """Refuse a new session past the caps. On PostgreSQL the project row is locked first, so
        concurrent starts in one project are counted one after the other (SQLite serializes writers)."""
        if conn.dialect.name == "postgresql":
            conn.execute(select(projects.c.id).where(projects.c.name == project).with_for_update()).first()
        if self.max_per_project is not None:
            held = conn.execute(select(func.count()).select_from(uploads).where(uploads.c.project == project)).scalar_one()
            if held >= self.max_per_project:
                raise TooManyUploads(
                    f"project {project} has {held} open upload sessions (the limit is {self.max_per_project}, "
                    "max_uploads_per_project); finish or cancel some, or retry later",
                    detail={"project": project, "limit": self.max_per_project},
                    headers={"Retry-After": "60"},
                )
        if self.max_per_account is not None and owner != "anonymous:":
            held = conn.execute(select(func.count()).select_from(uploads).where(uploads.c.owner == owner)).scalar_one()
            if held >= self.max_per_account:
                raise TooManyUploads(
                    f"this account has {held} open upload sessions (the limit is {self.max_per_account}, "
                    "max_uploads_per_account); finish or cancel some, or retry later",
                    detail={"limit": self.max_per_account},
                    headers={"Retry-After": "60"},
                )

    def get(self, repository: str, upload_id: str, owner: str | None = None) -> Upload:
        """The session, if it exists in `repository` and (when `owner` is given) belongs to `owner`.
        Someone else's session is unknown, exactly like one that never existed."""
        with self.db.read() as conn:
            row = conn.execute(
                select(uploads.c.id, uploads.c.storage_key, uploads.c.offset, uploads.c.hash_state, uploads.c.owner).where(
                    uploads.c.id == upload_id, uploads.c.repository == repository
                )
            ).first()
        if row is None or (owner is not None and row.owner != owner):
            raise BlobUploadUnknown(f"upload {upload_id[:100]} is not known", detail={"upload": upload_id[:100]})
        return Upload(row.id, repository, row.storage_key, int(row.offset), row.hash_state, row.owner or "")

    def cancel(self, upload: Upload) -> None:
        # Bytes go inside the row's transaction: a crash in between leaves a row without bytes
        # (purged as stale later), never bytes without a row that nobody would find.
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
        digest: str | None = None,
    ) -> Upload:
        """Append a chunk; `start`/`end` come from Content-Range (inclusive) when the client sent one.

        An append that would take the upload past `max_blob_bytes` or the project's quota deletes the
        whole upload and raises (SIZE_INVALID 413 / DENIED): nothing beyond a limit is kept. `digest` is
        the one a final PUT names (a blob the project already holds does not count against its quota)."""
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
        room = await self.db.run(self._room, upload, digest)
        if expected is not None:
            await self._enforce(upload, upload.offset + expected, room, digest)
        writer = await self.db.run(self._claim, upload)
        try:
            # Under the claim nobody else can move the upload on: check we still continue it.
            fresh = await self.db.run(self.get, upload.repository, upload.id)
            if fresh.offset != upload.offset:
                raise RangeInvalid(
                    f"the upload moved on to offset {fresh.offset}", headers=self.progress_headers(fresh)
                )
            sink = _Sink(writer, await self.db.run(self._hasher_for, fresh))
        except BaseException:
            writer.abort()
            raise
        hasher = sink.hasher
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
                if self._over_limit(upload.offset + written, room):
                    room = await self.db.run(self._recheck_quota, upload, upload.offset + written, digest)
                if len(buf) >= self.flush_bytes:
                    await self.db.run(sink.write, bytes(buf))
                    buf.clear()
            if buf:
                await self.db.run(sink.write, bytes(buf))
            if expected is not None and written != expected:
                raise SizeInvalid(f"received {written} bytes, expected {expected}")
            if written == 0:
                sink.writer.abort()
                return upload
            # Bytes are durable before the offset says so; the claim is held until the row is updated.
            await self.db.run(sink.writer.flush)
            progressed = await self.db.run(self._record_progress, upload, upload.offset + written, hasher.state(), digest)
        except (BlobTooLarge, QuotaExceeded):
            sink.writer.abort()
            await self.db.run(self.cancel, upload)  # over a limit: keep nothing
            raise
        except BaseException:
            sink.writer.abort()
            raise
        sink.writer.commit()
        return progressed

    def _room(self, upload: Upload, digest: str | None = None) -> int | None:
        """How large the project's quota lets this upload grow (None: no quota); read once per append."""
        if self.quotas is None:
            return None
        with self.db.read() as conn:
            return self.quotas.upload_room(conn, project_of(upload.repository), upload.id, digest)

    def _over_limit(self, new_size: int, room: int | None) -> bool:
        """Raise SIZE_INVALID past max_blob_bytes; True when the quota needs a closer look."""
        if self.max_blob_bytes is not None and new_size > self.max_blob_bytes:
            raise BlobTooLarge(
                f"blob upload would exceed {self.max_blob_bytes} bytes (max_blob_bytes); the upload was deleted",
                detail={"limit": self.max_blob_bytes},
            )
        return room is not None and new_size > room

    def _recheck_quota(self, upload: Upload, new_size: int, digest: str | None) -> int | None:
        """The authoritative quota check (the room read at the start may be stale); the new room if it passes."""
        with self.db.write() as conn:
            self.quotas.check_upload(conn, project_of(upload.repository), upload.id, new_size, digest)
        return self._room(upload, digest)

    async def _enforce(self, upload: Upload, new_size: int, room: int | None, digest: str | None) -> None:
        """Refuse a chunk whose declared length is already over a limit, before reading its body."""
        try:
            if self._over_limit(new_size, room):
                await self.db.run(self._recheck_quota, upload, new_size, digest)
        except (BlobTooLarge, QuotaExceeded):
            await self.db.run(self.cancel, upload)
            raise

    def _claim(self, upload: Upload) -> ObjectWriter:
        """Take the upload's exclusive writer; a concurrent request gets 416 and can ask where to resume."""
        try:
            return self.storage.open_write(upload.storage_key, upload.offset)
        except StorageBusy as exc:
            raise RangeInvalid("another request is writing this upload", headers=self.progress_headers(upload)) from exc
        except StorageError as exc:
            raise BlobUploadInvalid(f"upload data is missing from storage ({exc}); start a new upload") from exc

    def _record_progress(self, upload: Upload, new_offset: int, state: bytes, digest: str | None = None) -> Upload:
        with self.db.write() as conn:
            if self.quotas is not None:
                self.quotas.check_upload(conn, project_of(upload.repository), upload.id, new_offset, digest)
            updated = conn.execute(
                update(uploads)
                .where(uploads.c.id == upload.id, uploads.c.offset == upload.offset)
                .values(offset=new_offset, hash_state=state, updated_at=utcnow())
            ).rowcount
        if not updated:
            raise RangeInvalid("another request advanced this upload concurrently", headers=self.progress_headers(upload))
        return Upload(upload.id, upload.repository, upload.storage_key, new_offset, state, upload.owner)

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
        if upload.offset == 0 and self.storage.stat(upload.storage_key) is None:
            self.storage.put(upload.storage_key, b"")
        writer = self._claim(upload)  # held until published, so no PATCH can write into a moved file
        try:
            fresh = self.get(upload.repository, upload.id)
            if fresh.offset != upload.offset:
                raise RangeInvalid(f"the upload moved on to offset {fresh.offset}", headers=self.progress_headers(fresh))
            writer.write(b"")  # drops bytes past the offset left by an interrupted request
            actual = self._digest_of(fresh, digest.partition(":")[0])
            if actual != digest:
                self.cancel(fresh)
                raise DigestInvalid(
                    f"uploaded content has digest {actual}, not {digest}", detail={"expected": digest, "actual": actual}
                )
            self.blobs.publish(upload.repository, digest, upload.storage_key, fresh.offset)
            with self.db.write() as conn:
                conn.execute(delete(uploads).where(uploads.c.id == upload.id))
            self.on_committed(project_of(upload.repository), fresh.offset)
        finally:
            writer.abort()

    def _digest_of(self, upload: Upload, algorithm: str) -> str:
        if algorithm == "sha256":
            return self._hasher_for(upload).digest()
        h = hashlib.new(algorithm)
        if upload.offset:
            for chunk in self.storage.open_read(upload.storage_key, 0, upload.offset):
                h.update(chunk)
        return f"{algorithm}:{h.hexdigest()}"

    def purge_stale(self, max_age_seconds: int) -> int:
        """Delete uploads idle for longer than max_age; returns how many were purged."""
        cutoff = self.clock() - timedelta(seconds=max_age_seconds)
        with self.db.read() as conn:
            stale = conn.execute(
                select(uploads.c.id, uploads.c.storage_key).where(uploads.c.updated_at < cutoff)
            ).all()
        for row in stale:
            with self.db.write() as conn:
                gone = conn.execute(
                    delete(uploads).where(uploads.c.id == row.id, uploads.c.updated_at < cutoff)
                ).rowcount
                if gone:  # inside the transaction, as in cancel()
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

