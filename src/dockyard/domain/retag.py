"""Retag: point a tag at a manifest that is already in the repository (no bytes move)."""

from __future__ import annotations

from sqlalchemy import select

from dockyard.domain.names import validate_digest, validate_name, validate_tag
from dockyard.domain.repositories import require_repository_id
from dockyard.errors import ManifestUnknown
from dockyard.metadata.db import Database, upsert, utcnow
from dockyard.metadata.models import manifests, tags


def point_tag(db: Database, repository: str, tag: str, digest: str) -> str | None:
    """Point `tag` in `repository` at the manifest `digest`; returns the digest it pointed at before.

    TODO(lead): route this through the immutability check once policy/immutability exists, so retag
    obeys the same rule as push and tag delete."""
    validate_name(repository)
    validate_tag(tag)
    validate_digest(digest)
    with db.write() as conn:
        repo_id = require_repository_id(conn, repository)
        manifest_id = conn.execute(
            select(manifests.c.id).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
        ).scalar()
        if manifest_id is None:
            raise ManifestUnknown(
                f"manifest {digest} is not in repository {repository}", detail={"digest": digest}
            )
        previous = conn.execute(
            select(manifests.c.digest)
            .join(tags, tags.c.manifest_id == manifests.c.id)
            .where(tags.c.repository_id == repo_id, tags.c.name == tag)
        ).scalar()
        now = utcnow()
        upsert(
            conn,
            tags,
            {"repository_id": repo_id, "name": tag, "manifest_id": manifest_id, "updated_at": now},
            ["repository_id", "name"],
            {"manifest_id": manifest_id, "updated_at": now},
        )
        return previous
