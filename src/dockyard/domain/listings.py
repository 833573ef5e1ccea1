"""Paged listings: tags of a repository, the catalog, and referrers of a subject."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select

from dockyard.domain.manifests import OCI_INDEX
from dockyard.domain.numbers import MAX_DIGITS, parse_count
from dockyard.domain.repositories import find_repository_id, require_repository_id
from dockyard.errors import PaginationNumberInvalid
from dockyard.metadata.db import Database
from dockyard.metadata.models import manifests, projects, repositories, tags
from dockyard.policy.access import project_of_sql

MAX_PAGE = 10_000


@dataclass(frozen=True)
class CursorPage:
    items: list[str]
    next_last: str | None  # set when more items remain: the `last` to ask for next
    limit: int | None


def parse_page_size(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    n = parse_count(raw)
    if n is None:
        raise PaginationNumberInvalid(f"n must be a non-negative integer of at most {MAX_DIGITS} digits", detail={"n": raw[:40]})
    return n


class ListingService:
    def __init__(self, db: Database):
        self.db = db

    def tags(self, repository: str, n: int | None, last: str | None) -> CursorPage:
        with self.db.read() as conn:
            repo_id = require_repository_id(conn, repository)
            query = select(tags.c.name).where(tags.c.repository_id == repo_id)
            return self._page(conn, query, tags.c.name, n, last)

    def catalog(self, n: int | None, last: str | None, visible=None) -> CursorPage:
        """One page of repository names. `visible` is a SQL condition over `projects` (see
        AccessPolicy.pull_condition; None: everything): it filters before LIMIT, so a page holds only
        names the caller may see, is as full as it can be, and `next_last` is one of them."""
        with self.db.read() as conn:
            query = select(repositories.c.name)
            if visible is not None:
                query = query.join(projects, projects.c.name == project_of_sql(conn.dialect.name, repositories.c.name)).where(visible)
            return self._page(conn, query, repositories.c.name, n, last)

    @staticmethod
    def _page(conn, query, column, n: int | None, last: str | None) -> CursorPage:
        if n == 0:
            return CursorPage([], None, 0)
        limit = min(n, MAX_PAGE) if n is not None else MAX_PAGE
        if last:
            query = query.where(column > last)
        items = list(conn.execute(query.order_by(column).limit(limit + 1)).scalars())
        if len(items) > limit:
            items = items[:limit]
            return CursorPage(items, items[-1], limit)
        return CursorPage(items, None, limit)

    def referrers(self, repository: str, subject: str, artifact_type: str | None) -> dict:
        """An OCI index of the manifests whose subject is `subject`; never 404 (spec §referrers)."""
        descriptors = []
        with self.db.read() as conn:
            repo_id = find_repository_id(conn, repository)
            if repo_id is not None:
                query = select(
                    manifests.c.digest,
                    manifests.c.media_type,
                    manifests.c.size,
                    manifests.c.artifact_type,
                    manifests.c.annotations,
                ).where(manifests.c.repository_id == repo_id, manifests.c.subject_digest == subject)
                if artifact_type:
                    query = query.where(manifests.c.artifact_type == artifact_type)
                for row in conn.execute(query.order_by(manifests.c.id)):
                    d = {"mediaType": row.media_type, "digest": row.digest, "size": int(row.size)}
                    if row.artifact_type:
                        d["artifactType"] = row.artifact_type
                    if row.annotations:
                        d["annotations"] = json.loads(row.annotations)
                    descriptors.append(d)
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
