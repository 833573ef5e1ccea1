"""Operator listings: repositories with their tag count, size, last push and pull, and tags with
what a release engineer asks about an image (digest, platforms, size, pushed, pulled, scan, signed).

Paged and sorted in SQL (paging.py). Visibility is a SQL condition too (the caller passes the
projects condition of domain/projects.py), so a private project's repositories never leave the
database for a caller who may not see them, and counts do not leak them either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, exists, func, or_, select

from dockyard.domain.manifests import IMAGE_CONFIG_TYPES, IMAGE_TYPES, INDEX_TYPES
from dockyard.domain.repositories import require_repository_id
from dockyard.errors import InvalidRequest
from dockyard.metadata.db import Database
from dockyard.metadata.models import blobs, manifest_references, manifests, projects, repositories, repository_blobs, scan_reports, tags
from dockyard.paging import Page, page_bounds
from dockyard.storage import StorageDriver
from dockyard.storage.protocol import StorageError

REPOSITORY_SORTS = ("name", "tags", "size", "last_push", "last_pull")
MAX_CONFIG_BYTES = 64 * 1024  # an image config read for its platform; bigger ones are not read
TAG_SORTS = ("name", "pushed", "last_pull")


@dataclass(frozen=True)
class RepositoryRow:
    name: str
    tag_count: int
    size: int
    last_push: datetime | None
    last_pull: datetime | None


@dataclass(frozen=True)
class TagRow:
    name: str
    digest: str
    media_type: str
    updated_at: datetime  # pushed: when the tag last moved
    last_pulled_at: datetime | None
    size: int  # manifest + the blobs it and its child manifests reference
    platforms: list[str] = field(default_factory=list)  # an index's platforms, os/arch[/variant]
    scan_status: str | None = None  # the newest report's status (None: unscanned)
    scan_summary: dict[str, int] | None = None
    signed: bool = False  # a signature is attached (cosign tag or referrer, Notation); not a verdict on keys


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _order(sort: str, allowed: tuple[str, ...], columns: dict[str, ColumnElement], name_col):
    key = sort.removeprefix("-")
    if key not in allowed:
        raise InvalidRequest(f"sort must be one of {', '.join(allowed)} (prefix - for descending)", detail={"sort": sort})
    column = columns[key]
    ordered = column.desc() if sort.startswith("-") else column.asc()
    return [ordered.nulls_last(), name_col.asc()]


def project_clause(visible_projects) -> ColumnElement:
    """Repositories whose project (first path component) satisfies `visible_projects`. Compared by
    prefix with substr, not LIKE: a project named `a_b` must not reveal repositories of `axb`."""
    prefix = func.substr(repositories.c.name, 1, func.length(projects.c.name) + 1)
    return exists().where(visible_projects, or_(repositories.c.name == projects.c.name, prefix == projects.c.name + "/"))


def list_repositories(db: Database, *, visible_projects, project: str | None, sort: str, page: int, page_size: int
                      ) -> Page[RepositoryRow]:
    limit, offset = page_bounds(page, page_size)
    tag_count = select(func.count()).where(tags.c.repository_id == repositories.c.id).scalar_subquery()
    manifest_bytes = select(func.coalesce(func.sum(manifests.c.size), 0)).where(
        manifests.c.repository_id == repositories.c.id).scalar_subquery()
    blob_bytes = (
        select(func.coalesce(func.sum(blobs.c.size), 0))
        .select_from(repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id))
        .where(repository_blobs.c.repository_id == repositories.c.id, blobs.c.state == "present")
        .scalar_subquery()
    )
    # A push is a user's: the SBOM referrer the built-in scanner attaches (the one its report records for the
    # subject) is the registry's own, so a scan on pull does not move last_push to the scan's finish time.
    registry_made = exists().where(scan_reports.c.digest == manifests.c.subject_digest,
                                   scan_reports.c.sbom_digest == manifests.c.digest)
    last_push = select(func.max(manifests.c.created_at)).where(
        manifests.c.repository_id == repositories.c.id, ~registry_made).scalar_subquery()
    last_pull = select(func.max(manifests.c.last_pulled_at)).where(
        manifests.c.repository_id == repositories.c.id).scalar_subquery()
    size = (manifest_bytes + blob_bytes).label("size")
    columns = {"name": repositories.c.name, "tags": tag_count, "size": size, "last_push": last_push, "last_pull": last_pull}
    condition = project_clause(visible_projects)
    if project is not None:
        condition = and_(condition, or_(repositories.c.name == project,
                                        func.substr(repositories.c.name, 1, len(project) + 1) == project + "/"))
    with db.read() as conn:
        total = conn.execute(select(func.count()).select_from(repositories).where(condition)).scalar_one()
        rows = conn.execute(
            select(repositories.c.name, tag_count.label("tag_count"), size, last_push.label("last_push"),
                   last_pull.label("last_pull"))
            .where(condition)
            .order_by(*_order(sort, REPOSITORY_SORTS, columns, repositories.c.name))
            .limit(limit).offset(offset)
        ).all()
    items = [RepositoryRow(r.name, int(r.tag_count), int(r.size), _aware(r.last_push), _aware(r.last_pull)) for r in rows]
    return Page(items, int(total), page, page_size)


def list_tags(db: Database, repository: str, *, sort: str, page: int, page_size: int,
              signature_types: frozenset[str] = frozenset(), storage: StorageDriver | None = None) -> Page[TagRow]:
    """The tags of `repository`, sorted and paged in SQL, each described for operators.

    NameUnknown (404) if the repository does not exist. `signature_types`: referrer artifact types
    that count as a signature (the signing package knows them; domain does not import it). With
    `storage`, a single image's platform is read from its config blob (small configs only)."""
    limit, offset = page_bounds(page, page_size)
    columns = {"name": tags.c.name, "pushed": tags.c.updated_at, "last_pull": manifests.c.last_pulled_at}
    with db.read() as conn:
        repo_id = require_repository_id(conn, repository)
        total = conn.execute(select(func.count()).select_from(tags).where(tags.c.repository_id == repo_id)).scalar_one()
        rows = conn.execute(
            select(tags.c.name, tags.c.updated_at, manifests.c.id, manifests.c.digest, manifests.c.media_type,
                   manifests.c.size, manifests.c.last_pulled_at)
            .join(manifests, manifests.c.id == tags.c.manifest_id)
            .where(tags.c.repository_id == repo_id)
            .order_by(*_order(sort, TAG_SORTS, columns, tags.c.name))
            .limit(limit).offset(offset)
        ).all()
        details = _Details(conn, repo_id, [r.id for r in rows], [r.digest for r in rows], signature_types, storage)
        items = [
            TagRow(r.name, r.digest, r.media_type, _aware(r.updated_at), _aware(r.last_pulled_at),
                   int(r.size) + details.blob_bytes(r.id), details.platforms(r.id, r.media_type), *details.scan(r.digest),
                   details.signed(r.digest))
            for r in rows
        ]
    return Page(items, int(total), page, page_size)


class _Details:
    """What a page of tags needs beyond its rows, fetched with one query per kind (not per tag)."""

    def __init__(self, conn, repo_id: int, manifest_ids: list[int], digests: list[str], signature_types: frozenset[str],
                 storage: StorageDriver | None = None):
        self.children: dict[int, list[int]] = {}
        if manifest_ids:
            child = manifests.alias("child")
            for parent, child_id in conn.execute(
                select(manifest_references.c.manifest_id, child.c.id)
                .join(child, and_(child.c.digest == manifest_references.c.digest, child.c.repository_id == repo_id))
                .where(manifest_references.c.manifest_id.in_(manifest_ids), manifest_references.c.kind == "manifest")
            ).all():
                self.children.setdefault(parent, []).append(child_id)
        everything = list(dict.fromkeys(manifest_ids + [c for cs in self.children.values() for c in cs]))
        self.blob_sizes: dict[int, dict[str, int]] = {}
        self.payloads: dict[int, bytes] = {}
        if everything:
            for mid, digest, size in conn.execute(
                select(manifest_references.c.manifest_id, blobs.c.digest, blobs.c.size)
                .join(blobs, blobs.c.digest == manifest_references.c.digest)
                .where(manifest_references.c.manifest_id.in_(everything), manifest_references.c.kind == "blob")
            ).all():
                self.blob_sizes.setdefault(mid, {})[digest] = int(size)
            kinds = sorted(INDEX_TYPES | (IMAGE_TYPES if storage is not None else set()))
            self.payloads = dict(conn.execute(
                select(manifests.c.id, manifests.c.payload).where(manifests.c.id.in_(manifest_ids), manifests.c.media_type.in_(kinds))
            ).all())
        self.image_platforms = _image_platforms(conn, storage, self.payloads) if storage is not None else {}
        self.reports: dict[str, tuple[str, dict]] = {}
        if digests:
            for digest, status, summary in conn.execute(
                select(scan_reports.c.digest, scan_reports.c.status, scan_reports.c.summary)
                .where(scan_reports.c.digest.in_(digests)).order_by(scan_reports.c.generated_at)
            ).all():
                self.reports[digest] = (status, _json_dict(summary))  # newest wins
        self.signed_digests: set[str] = set()
        if digests:
            referrers = conn.execute(
                select(manifests.c.subject_digest).where(
                    manifests.c.repository_id == repo_id, manifests.c.subject_digest.in_(digests),
                    manifests.c.artifact_type.in_(sorted(signature_types)))
            ).scalars()
            self.signed_digests.update(referrers)
            sig_tags = {d.replace(":", "-", 1) + ".sig": d for d in digests}
            self.signed_digests.update(sig_tags[t] for t in conn.execute(
                select(tags.c.name).where(tags.c.repository_id == repo_id, tags.c.name.in_(list(sig_tags)))
            ).scalars())

    def blob_bytes(self, manifest_id: int) -> int:
        seen: dict[str, int] = {}
        for mid in [manifest_id, *self.children.get(manifest_id, [])]:
            seen.update(self.blob_sizes.get(mid, {}))
        return sum(seen.values())

    def platforms(self, manifest_id: int, media_type: str) -> list[str]:
        if media_type in IMAGE_TYPES:
            found = self.image_platforms.get(manifest_id)
            return [found] if found else []
        if media_type not in INDEX_TYPES or manifest_id not in self.payloads:
            return []
        try:
            entries = json.loads(bytes(self.payloads[manifest_id])).get("manifests") or []
        except (ValueError, AttributeError):
            return []
        found = [_platform(entry.get("platform")) for entry in entries if isinstance(entry, dict)]
        return list(dict.fromkeys(p for p in found if p and p != "unknown/unknown"))  # unknown: attestation entries

    def scan(self, digest: str) -> tuple[str | None, dict | None]:
        return self.reports.get(digest, (None, None))

    def signed(self, digest: str) -> bool:
        return digest in self.signed_digests


def _platform(doc: dict) -> str | None:
    if not (isinstance(doc, dict) and doc.get("os") and doc.get("architecture")):
        return None
    parts = [str(doc["os"]), str(doc["architecture"])] + ([str(doc["variant"])] if doc.get("variant") else [])
    return "/".join(parts)


def _image_platforms(conn, storage: StorageDriver, payloads: dict[int, bytes]) -> dict[int, str]:
    """os/arch[/variant] of single images, from their config blobs (one storage read each, small configs only)."""
    configs: dict[int, str] = {}
    for mid, payload in payloads.items():
        try:
            config = json.loads(bytes(payload)).get("config") or {}
        except (ValueError, AttributeError):
            continue
        if (isinstance(config, dict) and config.get("mediaType") in IMAGE_CONFIG_TYPES and isinstance(config.get("digest"), str)
                and isinstance(config.get("size"), int) and 0 < config["size"] <= MAX_CONFIG_BYTES):
            configs[mid] = config["digest"]
    if not configs:
        return {}
    keys = dict(conn.execute(
        select(blobs.c.digest, blobs.c.storage_key).where(blobs.c.digest.in_(set(configs.values())), blobs.c.state == "present")
    ).all())
    found: dict[int, str] = {}
    for mid, digest in configs.items():
        if digest not in keys:
            continue
        try:
            data = b"".join(storage.open_read(keys[digest], 0, MAX_CONFIG_BYTES))
            platform = _platform(json.loads(data))
        except (OSError, ValueError, StorageError):  # swept meanwhile, or not JSON: no platform shown, the listing still answers
            continue
        if platform:
            found[mid] = platform
    return found


def _json_dict(text: str | None) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
