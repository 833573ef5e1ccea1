"""Repository rows: looked up by name, created on first push, removed when deleted or empty
(domain/repository_lifecycle.py).

Writers that are about to add rows under a repository (manifest PUT, blob publish, mount,
promotion) take its id with `ensure_repository_id`, which holds the row (PostgreSQL: FOR KEY
SHARE) until they commit; a delete locks the same row FOR UPDATE first. So a delete either
waits for the writer and then sees its rows, or commits first and the writer creates a fresh
row. SQLite serializes writers anyway.

Repositories have no foreign key to their project (the project is the name's first component), so
with `projects_required` the writer also holds the project's row and refuses a missing project: a
push authorized just before its project was deleted must not leave a repository that a project
created later with the same name would inherit. ProjectService.delete locks that row FOR UPDATE
before it counts the project's repositories."""

from __future__ import annotations

from sqlalchemy import Connection, select

from dockyard.errors import NameUnknown
from dockyard.metadata.db import insert_ignore, utcnow
from dockyard.metadata.models import projects, repositories
from dockyard.policy.access import project_of


def find_repository_id(conn: Connection, name: str) -> int | None:
    return conn.execute(select(repositories.c.id).where(repositories.c.name == name)).scalar()


def require_repository_id(conn: Connection, name: str) -> int:
    repo_id = find_repository_id(conn, name)
    if repo_id is None:
        raise NameUnknown(f"repository {name} is not known to this registry", detail={"name": name})
    return repo_id


def hold_repository_id(conn: Connection, name: str) -> int:
    """The id of an existing repository, held like `ensure_repository_id` (never creates): a writer
    that adds rows under it (a retag) waits for a delete in progress and then finds it gone."""
    repo_id = _held_id(conn, name)
    if repo_id is None:
        raise NameUnknown(f"repository {name} is not known to this registry", detail={"name": name})
    return repo_id


def _held_id(conn: Connection, name: str) -> int | None:
    query = select(repositories.c.id).where(repositories.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True, key_share=True)
    return conn.execute(query).scalar()


def _hold_project(conn: Connection, name: str) -> None:
    project = project_of(name)
    query = select(projects.c.id).where(projects.c.name == project)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True, key_share=True)
    if conn.execute(query).scalar() is None:
        raise NameUnknown(f"project {project} does not exist (deleted meanwhile?)", detail={"name": name})


def ensure_repository_id(conn: Connection, name: str, *, projects_required: bool = False) -> int:
    """Get or create, and hold the row until the caller commits (see the module docstring); safe
    when several first pushes race (the loser's insert is a no-op). `projects_required` (access
    control on): hold the project's row too, NameUnknown if it is gone."""
    if projects_required:
        _hold_project(conn, name)
    for _attempt in range(3):
        repo_id = _held_id(conn, name)
        if repo_id is not None:
            return repo_id
        insert_ignore(conn, repositories, {"name": name, "created_at": utcnow()}, ["name"])
    # Created and deleted again under us three times: only a pathological delete loop does that.
    raise NameUnknown(f"repository {name} was deleted while it was being written; try again", detail={"name": name})


def lock_repository_id(conn: Connection, name: str, *, skip_locked: bool = False) -> int | None:
    """The row id of `name`, locked against writers (PostgreSQL: FOR UPDATE) for a delete.
    `skip_locked`: None instead of waiting when a writer holds the row."""
    query = select(repositories.c.id).where(repositories.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=skip_locked)
    return conn.execute(query).scalar()
