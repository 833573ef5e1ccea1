"""Manifests and tags: store exact bytes, track what they reference, resolve tags."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, and_, delete, select, update

from dockyard.domain.manifests import ParsedManifest, parse_manifest
from dockyard.domain.names import validate_tag
from dockyard.domain.repositories import ensure_repository_id, find_repository_id
from dockyard.errors import (
    DigestInvalid,
    ErrorGroup,
    ManifestBlobUnknown,
    ManifestTooLarge,
    ManifestUnknown,
    NameUnknown,
    TooManyTags,
    Unsupported,
)
from dockyard.metadata.db import Database, insert_ignore, upsert, utcnow
from dockyard.metadata.models import blobs, manifest_references, manifests, repository_blobs, tags

_BY_TAG_SQL = (
    "SELECT m.digest, m.media_type, m.payload FROM repositories r"
    " JOIN tags t ON t.repository_id = r.id JOIN manifests m ON m.id = t.manifest_id"
    " WHERE r.name = ? AND t.name = ?"
)
_BY_DIGEST_SQL = (
    "SELECT m.digest, m.media_type, m.payload FROM repositories r"
    " JOIN manifests m ON m.repository_id = r.id WHERE r.name = ? AND m.digest = ?"
)
MAX_TAGS_PER_PUT = 100
_REPO_SQL = "SELECT id FROM repositories WHERE name = ?"


@dataclass(frozen=True)
class StoredManifest:
    digest: str
    media_type: str
    payload: bytes


class ManifestService:
    def __init__(self, db: Database, *, max_bytes: int, delete_enabled: bool = True):
        self.db = db
        self.max_bytes = max_bytes
        self.delete_enabled = delete_enabled

    # -- reads (hot path: raw cursor, no ORM) -------------------------------------------

    async def get(self, repository: str, tag: str | None, digest: str | None) -> StoredManifest:
        return await self.db.run_fast(self._get, repository, tag, digest)

    def _get(self, repository: str, tag: str | None, digest: str | None) -> StoredManifest:
        row = self.db.fetchone(_BY_TAG_SQL if tag else _BY_DIGEST_SQL, (repository, tag or digest))
        if row is None:
            if self.db.fetchone(_REPO_SQL, (repository,)) is None:
                raise NameUnknown(f"repository {repository} is not known to this registry", detail={"name": repository})
            raise ManifestUnknown(f"manifest {tag or digest} is not in repository {repository}", detail={"reference": tag or digest})
        return StoredManifest(row[0], row[1], bytes(row[2]))

    # -- writes ---------------------------------------------------------------------------

    def check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise ManifestTooLarge(f"manifest is {size} bytes; the limit is {self.max_bytes}", detail={"limit": self.max_bytes})

    def put(
        self,
        repository: str,
        tag: str | None,
        digest: str | None,
        payload: bytes,
        content_type: str | None,
        extra_tags: tuple[str, ...] = (),
    ) -> ParsedManifest:
        """Store a manifest and point `tag` plus any `extra_tags` (?tag= on a by-digest PUT) at it, atomically."""
        self.check_size(len(payload))
        algorithm = digest.partition(":")[0] if digest else "sha256"
        parsed = parse_manifest(payload, content_type, algorithm)
        if digest is not None and parsed.digest != digest:
            raise DigestInvalid(
                f"manifest body has digest {parsed.digest}, not {digest}", detail={"expected": digest, "actual": parsed.digest}
            )
        if len(extra_tags) > MAX_TAGS_PER_PUT:
            raise TooManyTags(f"at most {MAX_TAGS_PER_PUT} tags per manifest PUT")
        new_tags = list(dict.fromkeys(validate_tag(t) for t in ([tag] if tag else []) + list(extra_tags)))
        with self.db.write() as conn:
            repo_id = ensure_repository_id(conn, repository)
            manifest_id = self._store(conn, repo_id, parsed)
            for tag in new_tags:
                now = utcnow()
                upsert(
                    conn,
                    tags,
                    {"repository_id": repo_id, "name": tag, "manifest_id": manifest_id, "updated_at": now},
                    ["repository_id", "name"],
                    {"manifest_id": manifest_id, "updated_at": now},
                )
        return parsed

    def _store(self, conn: Connection, repo_id: int, parsed: ParsedManifest) -> int:
        existing = self._manifest_id(conn, repo_id, parsed.digest)
        if existing is not None:
            return existing  # same bytes pushed again: idempotent
        blob_refs = list(dict.fromkeys(parsed.blob_refs))
        manifest_refs = list(dict.fromkeys(parsed.manifest_refs))
        self._check_references(conn, repo_id, blob_refs, manifest_refs)
        inserted = insert_ignore(
            conn,
            manifests,
            {
                "repository_id": repo_id,
                "digest": parsed.digest,
                "media_type": parsed.media_type,
                "artifact_type": parsed.artifact_type,
                "subject_digest": parsed.subject,
                "annotations": json.dumps(parsed.annotations) if parsed.annotations else None,
                "size": len(parsed.payload),
                "payload": parsed.payload,
                "created_at": utcnow(),
            },
            ["repository_id", "digest"],
        )
        manifest_id = self._manifest_id(conn, repo_id, parsed.digest)
        if not inserted:
            return manifest_id  # a concurrent push of the same manifest won
        refs = [{"manifest_id": manifest_id, "kind": "blob", "digest": d} for d in blob_refs]
        refs += [{"manifest_id": manifest_id, "kind": "manifest", "digest": d} for d in manifest_refs]
        if refs:
            conn.execute(manifest_references.insert(), refs)
        if blob_refs:
            # Writing each referenced blob's own row is what serializes us against GC marking it.
            touched = conn.execute(
                update(blobs)
                .where(blobs.c.digest.in_(blob_refs), blobs.c.state == "present")
                .values(ref_count=blobs.c.ref_count + 1, touched_at=utcnow())
            ).rowcount
            if touched != len(blob_refs):
                raise ManifestBlobUnknown("a referenced blob was deleted while the manifest was pushed; push it again")
        return manifest_id

    @staticmethod
    def _manifest_id(conn: Connection, repo_id: int, digest: str) -> int | None:
        return conn.execute(
            select(manifests.c.id).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
        ).scalar()

    @staticmethod
    def _check_references(conn: Connection, repo_id: int, blob_refs: list[str], manifest_refs: list[str]) -> None:
        missing: list[ManifestBlobUnknown] = []
        if blob_refs:
            known = set(
                conn.execute(
                    select(blobs.c.digest)
                    .join(repository_blobs, and_(repository_blobs.c.blob_id == blobs.c.id, repository_blobs.c.repository_id == repo_id))
                    .where(blobs.c.digest.in_(blob_refs), blobs.c.state == "present")
                ).scalars()
            )
            missing += [
                ManifestBlobUnknown(f"blob {d} is not in this repository", detail={"digest": d}) for d in blob_refs if d not in known
            ]
        if manifest_refs:
            known = set(
                conn.execute(
                    select(manifests.c.digest).where(manifests.c.repository_id == repo_id, manifests.c.digest.in_(manifest_refs))
                ).scalars()
            )
            missing += [
                ManifestBlobUnknown(f"manifest {d} is not in this repository", detail={"digest": d})
                for d in manifest_refs
                if d not in known
            ]
        if missing:
            raise ErrorGroup(missing)

    # -- deletes --------------------------------------------------------------------------

    def delete(self, repository: str, tag: str | None, digest: str | None) -> None:
        if not self.delete_enabled:
            raise Unsupported("deletes are disabled on this registry")
        with self.db.write() as conn:
            repo_id = find_repository_id(conn, repository)
            if repo_id is None:
                raise NameUnknown(f"repository {repository} is not known to this registry", detail={"name": repository})
            if tag is not None:
                if not conn.execute(delete(tags).where(tags.c.repository_id == repo_id, tags.c.name == tag)).rowcount:
                    raise ManifestUnknown(f"tag {tag} is not in repository {repository}", detail={"tag": tag})
                return
            manifest_id = self._manifest_id(conn, repo_id, digest)
            if manifest_id is None:
                raise ManifestUnknown(f"manifest {digest} is not in repository {repository}", detail={"digest": digest})
            blob_refs = list(
                conn.execute(
                    select(manifest_references.c.digest).where(
                        manifest_references.c.manifest_id == manifest_id, manifest_references.c.kind == "blob"
                    )
                ).scalars()
            )
            conn.execute(delete(tags).where(tags.c.manifest_id == manifest_id))
            conn.execute(delete(manifest_references).where(manifest_references.c.manifest_id == manifest_id))
            conn.execute(delete(manifests).where(manifests.c.id == manifest_id))
            if blob_refs:
                conn.execute(
                    update(blobs)
                    .where(blobs.c.digest.in_(blob_refs))
                    .values(ref_count=blobs.c.ref_count - 1, touched_at=utcnow())
                )
