"""Small lookups shared by domain services and policies (both may depend on metadata)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from dockyard.errors import NotFound
from dockyard.metadata.models import projects


def require_project_id(conn: Connection, project: str) -> int:
    project_id = conn.execute(select(projects.c.id).where(projects.c.name == project)).scalar()
    if project_id is None:
        raise NotFound(f"project {project} does not exist", detail={"project": project[:100]})
    return project_id
