"""Repository rows: looked up by name, created on first push."""

from __future__ import annotations

from sqlalchemy import Connection, select

from dockyard.errors import NameUnknown
from dockyard.metadata.db import insert_ignore, utcnow
from dockyard.metadata.models import repositories


def find_repository_id(conn: Connection, name: str) -> int | None:
    return conn.execute(select(repositories.c.id).where(repositories.c.name == name)).scalar()


def require_repository_id(conn: Connection, name: str) -> int:
    repo_id = find_repository_id(conn, name)
    if repo_id is None:
        raise NameUnknown(f"repository {name} is not known to this registry", detail={"name": name})
    return repo_id


def ensure_repository_id(conn: Connection, name: str) -> int:
    """Get or create; safe when several first pushes race (the loser's insert is a no-op)."""
    repo_id = find_repository_id(conn, name)
    if repo_id is None:
        insert_ignore(conn, repositories, {"name": name, "created_at": utcnow()}, ["name"])
        repo_id = find_repository_id(conn, name)
    return repo_id
