"""Storage quotas per project: the bytes of distinct blobs linked in the project's repositories, plus
the bytes of its manifests (stored in the database, up to max_manifest_bytes each: without counting
them, a pusher could store any amount as manifests with large annotations in a project at its quota).

Open uploads count too, while they are written: every append checks that the project's linked
bytes, plus the bytes of its other open uploads, plus this upload's new size fit the quota, so no
upload can park data beyond the quota until housekeeping purges it (issue 9, finding 6).

A blob counts once per project however many of its repositories hold it, and a blob shared
with other projects counts in each (each project would need it on its own). The check runs
inside the transaction that links a blob (upload finish, mount), so a refusal leaves nothing
behind, and it costs one indexed read unless the project has a quota. On PostgreSQL the
project row is locked while checking, so two concurrent pushes cannot both squeeze under it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, or_, select, update

from dockyard.domain import blob_refs
from dockyard.domain.events import record
from dockyard.errors import InvalidRequest, NotFound, QuotaExceeded
from dockyard.metadata.db import AFTER_ROLLBACK, Database
from dockyard.metadata.models import manifests, projects, repositories, uploads
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
    """Repositories of `project`: the one named exactly `<project>` and those named `<project>/…`,
    the latter as an index range (no LIKE: '_' in names is a wildcard there)."""
    return or_(
        repositories.c.name == project,
        and_(repositories.c.name >= f"{project}/", repositories.c.name < f"{project}0"),  # '0' follows '/'
    )


WARNING_RATIO = 0.8  # quota.warning when a write takes a project's use across 80% of its quota


class QuotaService:
    def __init__(self, db: Database):
        self.db = db

    def usage(self, conn: Connection, project: str) -> int:
        blob_bytes = blob_refs.linked_bytes(conn, _in_project(project))
        manifest_bytes = conn.execute(
            select(func.coalesce(func.sum(manifests.c.size), 0))
            .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repository_id))
            .where(_in_project(project))
        ).scalar_one()
        return int(blob_bytes) + int(manifest_bytes)

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
            record(conn, "policy.changed", project=project, data={"kind": "quota", "quota_bytes": quota_bytes})
        return self.get(project)

    # _QUOTA_LOCK: quota checks serialize on the project row with FOR NO KEY UPDATE, not FOR UPDATE:
    # writers already hold that row FOR KEY SHARE (domain/repositories.py), and two pushes upgrading
    # to FOR UPDATE would deadlock each other; NO KEY UPDATE still excludes the other checks.
    def check(self, conn: Connection, repository: str, digests: Iterable[str]) -> None:
        """Refuse (Denied) if linking `digests` into `repository` would take its project over quota.

        Call inside the linking transaction. Blobs already in the project are free."""
        project = project_of(repository)
        query = select(projects.c.quota_bytes).where(projects.c.name == project)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(key_share=True)  # NO KEY UPDATE: see _QUOTA_LOCK
        quota = conn.execute(query).scalar()
        if quota is None:
            return
        new_bytes = blob_refs.unlinked_bytes(conn, digests, _in_project(project))
        self.require_room(conn, project, quota, new_bytes)

    def check_new_blob(self, conn: Connection, repository: str, size: int) -> None:
        """Upload finish of a blob the registry does not hold yet (no row to size it by)."""
        project = project_of(repository)
        query = select(projects.c.quota_bytes).where(projects.c.name == project)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(key_share=True)  # NO KEY UPDATE: see _QUOTA_LOCK
        quota = conn.execute(query).scalar()
        if quota is not None:
            self.require_room(conn, project, quota, size)

    def _quota(self, conn: Connection, project: str, *, lock: bool) -> int | None:
        query = select(projects.c.quota_bytes).where(projects.c.name == project)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update(key_share=True)  # NO KEY UPDATE: see _QUOTA_LOCK
        return conn.execute(query).scalar()

    def uploading(self, conn: Connection, project: str, except_upload: str | None = None) -> int:
        """Bytes held by the project's open uploads (other than `except_upload`)."""
        query = select(func.coalesce(func.sum(uploads.c.offset), 0)).where(uploads.c.project == project)
        if except_upload is not None:
            query = query.where(uploads.c.id != except_upload)
        return int(conn.execute(query).scalar_one())

    def _held_size(self, conn: Connection, project: str, digest: str | None) -> int:
        """Size of `digest` if the project already holds it (re-uploading it costs nothing), else 0."""
        if digest is None:
            return 0
        return blob_refs.held_size(conn, digest, _in_project(project))

    def upload_room(self, conn: Connection, project: str, upload_id: str, digest: str | None = None) -> int | None:
        """How large upload `upload_id` may grow before the project is over quota (None: no quota).
        `digest` is the one a final PUT names: a blob the project already holds may be sent again.

        A cheap read used to stop a streaming append early; `check_upload` is the authoritative check."""
        quota = self._quota(conn, project, lock=False)
        if quota is None:
            return None
        room = quota - self.usage(conn, project) - self.uploading(conn, project, upload_id)
        return max(room, self._held_size(conn, project, digest))

    def check_upload(self, conn: Connection, project: str, upload_id: str, new_size: int, digest: str | None = None) -> None:
        """Refuse (DENIED) an append that would grow the upload to `new_size` bytes past the quota.

        Call inside the transaction that records the new offset: the project row is locked on
        PostgreSQL, so concurrent appends in one project are judged one after the other."""
        if self._quota(conn, project, lock=False) is None:
            return  # no quota: no row lock either, so appends in unlimited projects never queue here
        quota = self._quota(conn, project, lock=True)
        if quota is None or new_size <= self._held_size(conn, project, digest):
            return
        used = self.usage(conn, project)
        pending = self.uploading(conn, project, upload_id)
        if used + pending + new_size > quota:
            others = f" and {human_bytes(pending)} in other open uploads" if pending else ""
            raise self._exceeded(project, QuotaExceeded(
                f"quota of project {project} exceeded: {human_bytes(used)} used{others} of {human_bytes(quota)}; "
                f"this blob needs {human_bytes(new_size)}",
                detail={"project": project, "quota_bytes": quota, "used_bytes": used, "uploading_bytes": pending,
                        "needed_bytes": new_size},
            ), "upload")

    def check_manifest(self, conn: Connection, repository_id: int, size: int) -> None:
        """A new manifest row of `size` bytes in the repository: refuse (DENIED) past the project's quota.
        Call inside the transaction that inserts it (manifest PUT, promotion copy)."""
        name = conn.execute(select(repositories.c.name).where(repositories.c.id == repository_id)).scalar()
        if name is None:
            return
        project = project_of(name)
        if self._quota(conn, project, lock=False) is None:
            return  # no quota: no row lock either
        quota = self._quota(conn, project, lock=True)
        if quota is not None:
            self.require_room(conn, project, quota, size, what="manifest")

    def require_room(self, conn: Connection, project: str, quota: int, new_bytes: int, *, what: str = "blob") -> None:
        if new_bytes <= 0:
            return
        used = self.usage(conn, project)
        if used + new_bytes > quota:
            raise self._exceeded(project, QuotaExceeded(
                f"quota of project {project} exceeded: {human_bytes(used)} used of {human_bytes(quota)}; "
                f"this {what} needs {human_bytes(new_bytes)}",
                detail={"project": project, "quota_bytes": quota, "used_bytes": used, "needed_bytes": new_bytes},
            ), what)
        threshold = quota * WARNING_RATIO
        if used < threshold <= used + new_bytes:  # this write crosses 80%: commits (or not) with it
            record(conn, "quota.warning", project=project, data={
                "quota_bytes": quota, "used_bytes": used + new_bytes, "percent": round(100 * (used + new_bytes) / quota, 1),
            })

    def _exceeded(self, project: str, exc: QuotaExceeded, what: str) -> QuotaExceeded:
        """The refused write rolls back, and its events with it: quota.exceeded is recorded in a
        transaction of its own once that rollback is done (metadata/db.py AFTER_ROLLBACK)."""
        data = {**exc.detail, "what": what}
        data.pop("project", None)

        def record_exceeded() -> None:
            with self.db.write() as conn:
                record(conn, "quota.exceeded", project=project, data=data)

        setattr(exc, AFTER_ROLLBACK, record_exceeded)
        return exc
