"""Repository and project lifecycle: delete a repository, delete a project with its repositories,
and drop repositories that became empty.

A repository is **empty** when it holds no manifests. It then disappears: in the transaction that
deleted its last manifest (any path: /v2, the API, retention, promotion moves — they all go through
ManifestService.delete, which calls `drop_if_empty`), unless blobs were linked into it within the
GC grace period or an upload into it is open (a push may be in flight and about to use the row);
GC's `sweep_empty` removes those later. A repository delete takes the row FOR UPDATE first
(domain/repositories.py), so it never races a push into a half-deleted state.

Bytes are never deleted here: manifests drop their blob references and links, and GC reclaims the
blobs after the grace period as usual.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, exists, or_, select

from dockyard.domain import blob_refs
from dockyard.domain.events import record
from dockyard.domain.repositories import lock_repository_id
from dockyard.errors import Conflict, Denied, NameUnknown, Unsupported
from dockyard.metadata import generations
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import manifest_references, manifests, repositories, repository_blobs, tags, uploads
from dockyard.policy.access import project_of
from dockyard.policy.tag_rules import Override, TagPolicy


@dataclass(frozen=True)
class RepositoryDeleted:
    repository: str
    manifests: int
    tags: int
    overridden: list[str]  # immutable tags deleted under break glass


def in_project(project: str):
    """SQL condition: repositories of `project` (its name, or names below `project/`)."""
    return or_(repositories.c.name == project, repositories.c.name.startswith(project + "/", autoescape=True))


def _is_empty(conn: Connection, repo_id: int, name: str, recent: datetime | None) -> bool:
    if conn.execute(select(exists().where(manifests.c.repository_id == repo_id))).scalar():
        return False
    if recent is None:
        return True
    linked = select(exists().where(repository_blobs.c.repository_id == repo_id, repository_blobs.c.created_at >= recent))
    open_upload = select(exists().where(uploads.c.repository == name))
    return not conn.execute(linked).scalar() and not conn.execute(open_upload).scalar()


def _remove_row(conn: Connection, repo_id: int) -> None:
    conn.execute(delete(repository_blobs).where(repository_blobs.c.repository_id == repo_id))
    conn.execute(delete(repositories).where(repositories.c.id == repo_id))


def drop_if_empty(conn: Connection, name: str, recent: datetime | None) -> bool:
    """Remove repository `name` if it holds no manifests (and, with `recent`, no blob linked since
    then and no open upload), inside the caller's write transaction. Returns whether it went.

    The row is locked first and emptiness is read after the lock. A row a writer holds (a push in
    flight, FOR KEY SHARE) is skipped, not waited for: that repository is about to hold something,
    and waiting here, after this transaction has touched blob rows the push may want next, could
    deadlock. A push that comes after the lock waits, then re-creates the row after us."""
    repo_id = lock_repository_id(conn, name, skip_locked=True)
    if repo_id is None or not _is_empty(conn, repo_id, name, recent):
        return False
    _remove_row(conn, repo_id)
    record(conn, "repository.deleted", repository=name, data={"via": "empty", "manifests": 0, "tags": 0})
    return True


class RepositoryLifecycle:
    def __init__(self, db: Database, *, tag_policy: TagPolicy, delete_enabled: bool = True):
        self.db = db
        self.tag_policy = tag_policy
        self.delete_enabled = delete_enabled

    def delete_repository(
        self, name: str, *, force: bool = False, override: Override | None = None, via: str = "api",
    ) -> RepositoryDeleted:
        """Delete `name` with its manifests, tags and referrers.

        Without `force` a repository that holds tags is refused (409) with a hint; with it, every tag
        goes. Immutable tags are refused (403) unless `override` (break glass, project admins; each
        overridden tag is audited as tag.override by TagPolicy in this transaction)."""
        if not self.delete_enabled:
            raise Unsupported("deletes are disabled on this registry")
        verdicts = self.tag_policy.prepare(name, self._tag_names(name))  # patterns matched before the write lock
        with self.db.write() as conn:
            deleted = self._delete(conn, name, force=force, override=override, verdicts=verdicts, via=via)
        return deleted

    def _delete(self, conn: Connection, name: str, *, force: bool, override, verdicts, via: str) -> RepositoryDeleted:
        repo_id = lock_repository_id(conn, name)
        if repo_id is None:
            raise NameUnknown(f"repository {name} is not known to this registry", detail={"name": name})
        held = conn.execute(
            select(tags.c.name, manifests.c.digest)
            .join(manifests, manifests.c.id == tags.c.manifest_id)
            .where(tags.c.repository_id == repo_id)
            .order_by(tags.c.name)
        ).all()
        if held and not force:
            raise Conflict(
                f"repository {name} holds {len(held)} tags; delete them first, or delete the repository with force "
                "(`dockyard repos delete --force`, ?force=true)",
                detail={"repository": name, "tags": len(held)},
            )
        overridden = []
        for tag, digest in held:  # TagRulesChanged (retry) if a tag appeared after `prepare`
            before = override is not None and self.tag_policy.is_immutable(conn, name, tag, verdicts) is not None
            self.tag_policy.check_tag_change(conn, name, tag, digest, None, override=override, verdicts=verdicts)
            if before:
                overridden.append(tag)
        manifest_ids = list(conn.execute(select(manifests.c.id).where(manifests.c.repository_id == repo_id)).scalars())
        counts: Counter[str] = Counter()
        for start in range(0, len(manifest_ids), 500):
            chunk = manifest_ids[start:start + 500]
            counts.update(conn.execute(
                select(manifest_references.c.digest).where(
                    manifest_references.c.manifest_id.in_(chunk), manifest_references.c.kind == "blob"
                )
            ).scalars())
            conn.execute(delete(manifest_references).where(manifest_references.c.manifest_id.in_(chunk)))
        conn.execute(delete(tags).where(tags.c.repository_id == repo_id))
        conn.execute(delete(manifests).where(manifests.c.repository_id == repo_id))
        if counts:
            blob_refs.drop_ref_counts(conn, dict(counts), utcnow())
        _remove_row(conn, repo_id)
        record(conn, "repository.deleted", repository=name,
               data={"via": via, "manifests": len(manifest_ids), "tags": len(held), "overridden": overridden})
        generations.bump(conn, project_of(name))
        return RepositoryDeleted(name, len(manifest_ids), len(held), overridden)

    def project_repositories(self, project: str) -> list[str]:
        with self.db.read() as conn:
            return list(conn.execute(select(repositories.c.name).where(in_project(project)).order_by(repositories.c.name)).scalars())

    def _tag_names(self, name: str) -> list[str]:
        with self.db.read() as conn:
            return list(conn.execute(
                select(tags.c.name).join(repositories, repositories.c.id == tags.c.repository_id).where(repositories.c.name == name)
            ).scalars())

    def immutable_tags(self, name: str) -> list[str]:
        """The tags of `name` an immutable rule protects now (a pre-check; the delete judges again)."""
        names = self._tag_names(name)
        verdicts = self.tag_policy.prepare(name, names)
        with self.db.read() as conn:
            return [t for t in names if self.tag_policy.is_immutable(conn, name, t, verdicts) is not None]

    def delete_project_repositories(self, project: str, *, override: Override | None = None) -> list[RepositoryDeleted]:
        """Every repository of `project`, each in its own transaction. Immutable tags anywhere in the
        project refuse the whole delete up front (unless `override`), so it does not stop half-way."""
        names = self.project_repositories(project)
        if override is None:
            protected = {n: t for n in names if (t := self.immutable_tags(n))}
            if protected:
                first = next(iter(protected))
                raise Denied(
                    f"project {project} holds immutable tags ({first}: {', '.join(protected[first][:5])}); give a break-glass "
                    "reason to delete them too (override_reason, --break-glass-reason)",
                    detail={"project": project, "repositories": sorted(protected)[:20]},
                )
        return [self.delete_repository(name, force=True, override=override, via="project-delete") for name in names]


def sweep_empty(db: Database, recent: datetime, limit: int = 10_000) -> int:
    """GC's pass: drop repositories left empty (no manifests, no blob linked since `recent`, no open
    upload), e.g. by a push that uploaded blobs and never sent its manifest. Returns how many went."""
    with db.read() as conn:
        names = list(conn.execute(
            select(repositories.c.name).where(~exists().where(manifests.c.repository_id == repositories.c.id)).limit(limit)
        ).scalars())
    dropped = 0
    for name in names:
        with db.write() as conn:
            dropped += drop_if_empty(conn, name, recent)
    return dropped

