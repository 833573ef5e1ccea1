"""Repository administration for the management API: tags with their digests, paged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from dockyard.paging import Page, page_bounds
from dockyard.domain.names import validate_name
from dockyard.domain.repositories import require_repository_id
from dockyard.metadata.db import Database
from dockyard.metadata.models import manifests, tags


@dataclass(frozen=True)
class TagRecord:
    name: str
    digest: str
    updated_at: datetime


def list_tags(db: Database, repository: str, page: int, page_size: int) -> Page[TagRecord]:
    """The tags of `repository` in name order, each with the digest it points at.

    NameUnknown (404) if the repository does not exist."""
    validate_name(repository)
    limit, offset = page_bounds(page, page_size)
    with db.read() as conn:
        repo_id = require_repository_id(conn, repository)
        total = conn.execute(select(func.count()).select_from(tags).where(tags.c.repository_id == repo_id)).scalar_one()
        rows = conn.execute(
            select(tags.c.name, manifests.c.digest, tags.c.updated_at)
            .join(manifests, manifests.c.id == tags.c.manifest_id)
            .where(tags.c.repository_id == repo_id)
            .order_by(tags.c.name)
            .limit(limit)
            .offset(offset)
        ).all()
    return Page([TagRecord(r.name, r.digest, r.updated_at) for r in rows], int(total), page, page_size)
