"""Manifests and tags: store exact bytes, track what they reference, resolve tags."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, delete, select, update

from dockyard.domain import artifact_events
from dockyard.domain import blob_refs as blob_rows
from dockyard.domain.manifests import ParsedManifest, parse_manifest
from dockyard.domain.names import validate_tag
from dockyard.domain.repositories import ensure_repository_id, find_repository_id
from dockyard.domain.repository_lifecycle import drop_if_empty
from dockyard.errors import (
    Conflict,
    DigestInvalid,
    ErrorGroup,
    ManifestBlobUnknown,
    ManifestTooLarge,
    ManifestUnknown,
    NameUnknown,
    TooManyTags,
    Unsupported,
)
from dockyard.metadata import generations
from dockyard.policy.access import project_of
from dockyard.metadata.db import Database, insert_ignore, utcnow
from dockyard.metadata.models import manifest_references, manifests, tags
from dockyard.policy.tag_rules import Override, TagPolicy, TagVerdicts

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
    def __init__(
        self, db: Database, *, max_bytes: int, delete_enabled: bool = True, tag_policy: TagPolicy | None = None, quotas=None,
        empty_grace_seconds: int = 86400, projects_required: bool = False,
    ):
        # Access control on: a repository is created only inside an existing project (domain/repositories.py).
        self.projects_required = projects_required
        # A repository left without manifests goes with its last one, unless blobs were linked into it
        # this recently (a push may be in flight); GC drops those later (domain/repository_lifecycle.py).
        self.empty_grace_seconds = empty_grace_seconds
        self.clock = utcnow
        self.quotas = quotas  # domain.quotas.QuotaService: a new manifest counts against its project's quota
        self.db = db
        self.max_bytes = max_bytes
        self.delete_enabled = delete_enabled
        # Every tag change below goes through the one TagPolicy (immutability, deny/require rules).
        self.tag_policy = tag_policy or TagPolicy(db)

    # -- reads (hot path: raw cursor, no ORM) -------------------------------------------

    async def get(self, repository: str, tag: str | None, digest: str | None) -> StoredManifest:
        return await self.db.run_fast(self._get, repository, tag, digest)

    def lookup(self, repository: str, tag: str | None, digest: str | None) -> StoredManifest:
        """Synchronous `get`, for the management API and jobs."""
        return self._get(repository, tag, digest)

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
        *,
        via: str = "push",
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
        verdicts = self.tag_policy.prepare(repository, new_tags)  # pattern matching, before the write lock
        with self.db.write() as conn:
            repo_id = ensure_repository_id(conn, repository, projects_required=self.projects_required)
            if new_tags and self.tag_policy.rules_for(conn, repository, verdicts):
                # Judge the tags before the references: over an immutable tag, DENIED says more than a missing blob.
                for tag in new_tags:
                    self.tag_policy.check_tag_change(
                        conn, repository, tag, tag_digest(conn, repo_id, tag), parsed.digest, verdicts=verdicts
                    )
            new = self._manifest_id(conn, repo_id, parsed.digest) is None
            manifest_id = self._store(conn, repo_id, parsed)
            previous: dict[str, str | None] = {}
            for tag in new_tags:  # any refusal rolls back the manifest and every tag: all or nothing
                previous[tag] = move_tag(
                    conn, self.tag_policy, repository, repo_id, tag, manifest_id, parsed.digest, verdicts=verdicts
                )
            artifact_events.manifest_written(
                conn, repository, digest=parsed.digest, media_type=parsed.media_type, size=len(parsed.payload), via=via,
                tags=previous, payload=parsed.payload, artifact_type=parsed.artifact_type, subject=parsed.subject, new=new,
            )
            generations.bump(conn, project_of(repository))  # cached signature verdicts of the project expire
        return parsed

    def store(self, conn: Connection, repo_id: int, parsed: ParsedManifest) -> int:
        """Insert `parsed` into the repository (idempotent) inside the caller's transaction; promotion
        uses this so copied manifests get the same reference checks and blob ref_count writes as a push."""
        return self._store(conn, repo_id, parsed)

    def _store(self, conn: Connection, repo_id: int, parsed: ParsedManifest) -> int:
        existing = self._manifest_id(conn, repo_id, parsed.digest)
        if existing is not None:
            return existing  # same bytes pushed again: idempotent
        blob_refs = list(dict.fromkeys(parsed.blob_refs))
        manifest_refs = list(dict.fromkeys(parsed.manifest_refs))
        self._check_references(conn, repo_id, blob_refs, manifest_refs)
        if self.quotas is not None:
            self.quotas.check_manifest(conn, repo_id, len(parsed.payload))
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
            touched = blob_rows.add_refs(conn, blob_refs, utcnow())
            if touched != len(blob_refs):
                raise ManifestBlobUnknown("a referenced blob was deleted while the manifest was pushed; push it again")
            # A blob DELETE locks the same rows before it checks for referencing manifests: now
            # that we hold them, one that committed first has its unlink visible to this re-read.
            if len(blob_rows.linked_present(conn, repo_id, blob_refs)) != len(blob_refs):
                raise ManifestBlobUnknown("a referenced blob was unlinked while the manifest was pushed; push it again")
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
            known = blob_rows.linked_present(conn, repo_id, blob_refs)
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

    def delete(
        self, repository: str, tag: str | None, digest: str | None, *, override: Override | None = None,
        via: str = "api", reason: dict | None = None,
    ) -> None:
        """Delete a tag, or a manifest with every tag on it. TagPolicy sees each tag that would go,
        so immutable tags survive /v2 deletes, API deletes and retention alike (unless overridden)."""
        if not self.delete_enabled:
            raise Unsupported("deletes are disabled on this registry")
        verdicts = self.tag_policy.prepare(repository, [tag] if tag is not None else self._held_tags(repository, digest))
        with self.db.write() as conn:
            repo_id = find_repository_id(conn, repository)
            if repo_id is None:
                raise NameUnknown(f"repository {repository} is not known to this registry", detail={"name": repository})
            if tag is not None:
                was = remove_tag(conn, self.tag_policy, repository, repo_id, tag, override=override, verdicts=verdicts)
                artifact_events.tag_deleted(conn, repository, tag, was, via=via)
                generations.bump(conn, project_of(repository))
                return
            # Lock the manifest row (PostgreSQL) before reading its tags: a concurrent tag write on it
            # (its foreign key takes a share lock on this row) then either committed before we look, or waits.
            row = conn.execute(
                select(manifests.c.id, manifests.c.media_type)
                .where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
                .with_for_update()
            ).first()
            manifest_id = row.id if row is not None else None
            if manifest_id is None:
                raise ManifestUnknown(f"manifest {digest} is not in repository {repository}", detail={"digest": digest})
            for held_tag, held_digest in self._tags_holding(conn, repo_id, digest):
                self.tag_policy.check_tag_change(
                    conn, repository, held_tag, held_digest, None, override=override, verdicts=verdicts
                )
            parent = conn.execute(
                select(manifests.c.digest)
                .join(manifest_references, manifest_references.c.manifest_id == manifests.c.id)
                .where(
                    manifests.c.repository_id == repo_id,
                    manifest_references.c.kind == "manifest",
                    manifest_references.c.digest == digest,
                )
                .limit(1)
            ).scalar()
            if parent is not None:
                # An index's children live as long as the index: deleting one would break every
                # pull of the index and let GC reclaim its layers.
                raise Conflict(
                    f"manifest {digest} is listed by index {parent} in {repository}; delete the index first",
                    detail={"digest": digest, "index": parent},
                )
            blob_refs = list(
                conn.execute(
                    select(manifest_references.c.digest).where(
                        manifest_references.c.manifest_id == manifest_id, manifest_references.c.kind == "blob"
                    )
                ).scalars()
            )
            held = list(conn.execute(select(tags.c.name).where(tags.c.manifest_id == manifest_id)).scalars())
            conn.execute(delete(tags).where(tags.c.manifest_id == manifest_id))
            artifact_events.manifest_deleted(conn, repository, digest, row.media_type, held, via=via, reason=reason)
            conn.execute(delete(manifest_references).where(manifest_references.c.manifest_id == manifest_id))
            conn.execute(delete(manifests).where(manifests.c.id == manifest_id))
            if blob_refs:
                blob_rows.drop_refs(conn, blob_refs, utcnow())
            generations.bump(conn, project_of(repository))  # e.g. a deleted signature no longer counts
            drop_if_empty(conn, repository, self.clock() - timedelta(seconds=self.empty_grace_seconds))

    def _held_tags(self, repository: str, digest: str | None) -> list[str]:
        """The tags a manifest delete will judge, read before its write transaction (see TagVerdicts)."""
        with self.db.read() as conn:
            repo_id = find_repository_id(conn, repository)
            return [] if repo_id is None or digest is None else [t for t, _ in self._tags_holding(conn, repo_id, digest)]

    @staticmethod
    def _tags_holding(conn: Connection, repo_id: int, digest: str) -> list[tuple[str, str]]:
        """(tag, digest it points at) for every tag whose image contains `digest`: tags on the manifest
        itself and tags on indexes that list it (up to a few levels), since deleting a child breaks them."""
        held: list[tuple[str, str]] = []
        frontier, seen = [digest], {digest}
        for _depth in range(4):
            if not frontier:
                break
            rows = conn.execute(
                select(tags.c.name, manifests.c.digest)
                .join(manifests, manifests.c.id == tags.c.manifest_id)
                .where(tags.c.repository_id == repo_id, manifests.c.digest.in_(frontier))
            ).all()
            held += [(r.name, r.digest) for r in rows]
            parents = conn.execute(
                select(manifests.c.digest)
                .join(manifest_references, manifest_references.c.manifest_id == manifests.c.id)
                .where(
                    manifests.c.repository_id == repo_id,
                    manifest_references.c.kind == "manifest",
                    manifest_references.c.digest.in_(frontier),
                )
            ).scalars()
            frontier = [d for d in dict.fromkeys(parents) if d not in seen]
            seen.update(frontier)
        return held


def tag_digest(conn: Connection, repo_id: int, tag: str) -> str | None:
    """The digest `tag` points at now, read inside the writer's transaction."""
    return conn.execute(
        select(manifests.c.digest)
        .join(tags, tags.c.manifest_id == manifests.c.id)
        .where(tags.c.repository_id == repo_id, tags.c.name == tag)
    ).scalar()


_CAS_ATTEMPTS = 5


def _current(conn: Connection, repo_id: int, tag: str):
    return conn.execute(
        select(tags.c.manifest_id, manifests.c.digest)
        .join(manifests, manifests.c.id == tags.c.manifest_id)
        .where(tags.c.repository_id == repo_id, tags.c.name == tag)
    ).first()


def move_tag(
    conn: Connection,
    policy: TagPolicy,
    repository: str,
    repo_id: int,
    tag: str,
    manifest_id: int,
    digest: str,
    *,
    override: Override | None = None,
    verdicts: TagVerdicts | None = None,
) -> str | None:
    """Point `tag` at `manifest_id` if TagPolicy allows it; returns the digest it pointed at before.

    The write is a compare-and-set on the state that was checked. On PostgreSQL (READ COMMITTED) another
    writer may create or move the tag between our read and our write; the conditional write then changes
    nothing, and we read and check again, so a tag someone created a moment ago is judged as existing
    (its immutable rule applies) instead of being silently overwritten. SQLite serializes writers anyway."""
    for _attempt in range(_CAS_ATTEMPTS):
        row = _current(conn, repo_id, tag)
        current = row.digest if row is not None else None
        policy.check_tag_change(conn, repository, tag, current, digest, override=override, verdicts=verdicts)
        now = utcnow()
        if row is None:
            values = {"repository_id": repo_id, "name": tag, "manifest_id": manifest_id, "updated_at": now}
            if insert_ignore(conn, tags, values, ["repository_id", "name"]):
                return None
        elif conn.execute(
            update(tags)
            .where(tags.c.repository_id == repo_id, tags.c.name == tag, tags.c.manifest_id == row.manifest_id)
            .values(manifest_id=manifest_id, updated_at=now)
        ).rowcount:
            return current
    raise Conflict(f"tag {tag} of {repository} kept changing while it was being set; try again", detail={"tag": tag})


def remove_tag(
    conn: Connection, policy: TagPolicy, repository: str, repo_id: int, tag: str, *,
    override: Override | None = None, verdicts: TagVerdicts | None = None,
) -> str:
    """Delete `tag` if TagPolicy allows it (compare-and-set like move_tag); returns the digest it pointed at."""
    for _attempt in range(_CAS_ATTEMPTS):
        row = _current(conn, repo_id, tag)
        if row is None:
            raise ManifestUnknown(f"tag {tag} is not in repository {repository}", detail={"tag": tag})
        policy.check_tag_change(conn, repository, tag, row.digest, None, override=override, verdicts=verdicts)
        if conn.execute(
            delete(tags).where(tags.c.repository_id == repo_id, tags.c.name == tag, tags.c.manifest_id == row.manifest_id)
        ).rowcount:
            return row.digest
    raise Conflict(f"tag {tag} of {repository} kept changing while it was being deleted; try again", detail={"tag": tag})
