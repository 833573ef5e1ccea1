"""Storage quotas per project: the bytes of distinct blobs linked in the project's repositories.

A blob counts once per project however many of its repositories hold it, and a blob shared
with other projects counts in each (each project would need it on its own). The check runs
inside the transaction that links a blob (upload finish, mount), so a refusal leaves nothing
behind, and it costs one indexed read unless the project has a quota. On PostgreSQL the
project row is locked while checking, so two concurrent pushes cannot both squeeze under it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, exists, func, select, update

from dockyard.errors import Denied, InvalidRequest, NotFound
from dockyard.metadata.db import Database
from dockyard.metadata.models import blobs, projects, repositories, repository_blobs
from dockyard.policy.access import project_of


@dataclass(frozen=True)
class Quota:
    project: str
    quota_bytes: int | None
    used_bytes: int


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{n} B"


def _in_project(project: str):
    """Repositories named `<project>/…`, as an index range (no LIKE: '_' in names is a wildcard there)."""
    return and_(repositories.c.name >= f"{project}/", repositories.c.name < f"{project}0")  # '0' follows '/'


class QuotaService:
    def __init__(self, db: Database):
        self.db = db

    def usage(self, conn: Connection, project: str) -> int:
        linked = (
            select(repository_blobs.c.blob_id)
            .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
            .where(_in_project(project))
        )
        return int(
            conn.execute(
                select(func.coalesce(func.sum(blobs.c.size), 0)).where(blobs.c.id.in_(linked), blobs.c.state == "present")
            ).scalar_one()
        )

    def get(self, project: str) -> Quota:
        with self.db.read() as conn:
            row = conn.execute(select(projects.c.quota_bytes).where(projects.c.name == project)).first()
            if row is None:
                raise NotFound(f"project {project} does not exist", detail={"project": project[:100]})
            return Quota(project, row.quota_bytes, self.usage(conn, project))

    def set(self, project: str, quota_bytes: int | None) -> Quota:
        if quota_bytes is not None and quota_bytes < 0:
            raise InvalidRequest("quota_bytes must be >= 0 (or null for unlimited)", detail={"quota_bytes": quota_bytes})
        with self.db.write() as conn:
            if not conn.execute(update(projects).where(projects.c.name == project).values(quota_bytes=quota_bytes)).rowcount:
                raise NotFound(f"project {project} does not exist", detail={"project": project[:100]})
        return self.get(project)

    def check(self, conn: Connection, repository: str, digests: Iterable[str]) -> None:
        """Refuse (Denied) if linking `digests` into `repository` would take its project over quota.

        Call inside the linking transaction. Blobs already in the project are free."""
        project = project_of(repository)
        query = select(projects.c.quota_bytes).where(projects.c.name == project)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        quota = conn.execute(query).scalar()
        if quota is None:
            return
        wanted = list(dict.fromkeys(digests))
        in_project = exists(
            select(repository_blobs.c.blob_id)
            .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
            .where(repository_blobs.c.blob_id == blobs.c.id, _in_project(project))
        )
        new_bytes = int(
            conn.execute(
                select(func.coalesce(func.sum(blobs.c.size), 0)).where(
                    blobs.c.digest.in_(wanted), blobs.c.state == "present", ~in_project
                )
            ).scalar_one()
        )
        self.require_room(conn, project, quota, new_bytes)

    def check_new_blob(self, conn: Connection, repository: str, size: int) -> None:
        """Upload finish of a blob the registry does not hold yet (no row to size it by)."""
        project = project_of(repository)
        query = select(projects.c.quota_bytes).where(projects.c.name == project)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        quota = conn.execute(query).scalar()
        if quota is not None:
            self.require_room(conn, project, quota, size)

    def require_room(self, conn: Connection, project: str, quota: int, new_bytes: int) -> None:
        if new_bytes <= 0:
            return
        used = self.usage(conn, project)
        if used + new_bytes > quota:
            raise Denied(
                f"quota of project {project} exceeded: {human_bytes(used)} used of {human_bytes(quota)}; "
                f"this blob needs {human_bytes(new_bytes)}",
                detail={"project": project, "quota_bytes": quota, "used_bytes": used, "needed_bytes": new_bytes},
            )
