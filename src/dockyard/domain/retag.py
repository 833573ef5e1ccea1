"""Retag: point a tag at a manifest that is already in the repository (no bytes move).

The tag change goes through TagPolicy like every other writer, so retag obeys the same immutability
and naming rules as a push or a tag delete."""

from __future__ import annotations

from sqlalchemy import select

from dockyard.domain import artifact_events
from dockyard.domain.manifest_service import move_tag
from dockyard.domain.names import validate_digest, validate_name, validate_tag
from dockyard.domain.repositories import hold_repository_id
from dockyard.errors import ManifestUnknown
from dockyard.metadata import generations
from dockyard.policy.access import project_of
from dockyard.metadata.db import Database
from dockyard.metadata.models import manifests
from dockyard.policy.tag_rules import Override, TagPolicy


def point_tag(
    db: Database,
    repository: str,
    tag: str,
    digest: str,
    *,
    tag_policy: TagPolicy | None = None,
    override: Override | None = None,
) -> str | None:
    """Point `tag` in `repository` at the manifest `digest`; returns the digest it pointed at before."""
    validate_name(repository)
    validate_tag(tag)
    validate_digest(digest)
    policy = tag_policy or TagPolicy(db)
    verdicts = policy.prepare(repository, [tag])  # pattern matching, before the write lock
    with db.write() as conn:
        repo_id = hold_repository_id(conn, repository)  # waits for a repository delete in progress
        row = conn.execute(
            select(manifests.c.id, manifests.c.media_type, manifests.c.size, manifests.c.payload, manifests.c.artifact_type,
                   manifests.c.subject_digest)
            .where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
        ).first()
        manifest_id = row.id if row is not None else None
        if manifest_id is None:
            raise ManifestUnknown(f"manifest {digest} is not in repository {repository}", detail={"digest": digest})
        previous = move_tag(conn, policy, repository, repo_id, tag, manifest_id, digest, override=override, verdicts=verdicts)
        artifact_events.manifest_written(
            conn, repository, digest=digest, media_type=row.media_type, size=row.size, via="retag", tags={tag: previous},
            payload=bytes(row.payload), artifact_type=row.artifact_type, subject=row.subject_digest, new=False,
        )
        generations.bump(conn, project_of(repository))  # a moved .sig tag changes signature verdicts
        return previous
