"""Projects (the first component of a repository name) and their members. No HTTP here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, exists, false, func, or_, select, update

from dockyard.auth.principals import Principal
from dockyard.domain.events import record
from dockyard.domain.retention_service import schedule_name
from dockyard.errors import Conflict, InvalidRequest
from dockyard.paging import Page, page_bounds
from dockyard.errors import NameInvalid, NotFound
from dockyard.metadata.db import Database, aware, insert_ignore, utcnow
from dockyard.metadata.models import project_members, projects, repositories, retention_policies, robot_permissions, schedules, users
from dockyard.metadata.webhook_tables import webhook_attempts, webhook_deliveries, webhooks
from dockyard.policy.access import ROLES

PROJECT_NAME_MAX = 64
PROJECT_NAME_RE = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    public: bool
    created_at: datetime


@dataclass(frozen=True)
class Member:
    username: str
    role: str
    created_at: datetime


def validate_project_name(name: str) -> str:
    if len(name) > PROJECT_NAME_MAX or not PROJECT_NAME_RE.fullmatch(name):
        raise NameInvalid(
            f"project name must be one repository path component ([a-z0-9] joined by '.', '_', '__' or '-'),"
            f" at most {PROJECT_NAME_MAX} characters",
            detail={"name": name[:100]},
        )
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", detail={"role": role[:50]})
    return role


def _project(row) -> Project:
    return Project(row.id, row.name, bool(row.public), aware(row.created_at))


class ProjectService:
    def __init__(self, db: Database):
        self.db = db
        # Called with a project's name after it was created or deleted (the access policy's namesake view).
        self.on_change: list = []

    def _changed(self, name: str) -> None:
        for callback in self.on_change:
            callback(name)

    # -- projects ---------------------------------------------------------------------------

    def create(self, name: str, *, public: bool = False, creator: Principal | None = None) -> Project:
        """Create a project; a user creator becomes its admin member."""
        validate_project_name(name)
        now = utcnow()
        with self.db.write() as conn:
            if not insert_ignore(conn, projects, {"name": name, "public": public, "created_at": now}, ["name"]):
                raise Conflict(f"project {name} already exists", detail={"name": name})
            project = self._require(conn, name)
            if creator is not None and creator.kind == "user" and creator.id is not None:
                conn.execute(
                    project_members.insert().values(
                        project_id=project.id, user_id=creator.id, role="admin", created_at=now
                    )
                )
            record(conn, "project.created", project=name, data={"public": public})
        self._changed(name)
        return project

    def get(self, name: str) -> Project:
        with self.db.read() as conn:
            return self._require(conn, name)

    def list(self, page: int = 1, page_size: int = 50, *, visible_to: Principal | None = None) -> Page[Project]:
        limit, offset = page_bounds(page, page_size)
        condition = self._visibility(visible_to)
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(projects).where(condition)).scalar_one()
            rows = conn.execute(
                select(projects).where(condition).order_by(projects.c.name).limit(limit).offset(offset)
            ).all()
        return Page([_project(r) for r in rows], total, page, page_size)

    @staticmethod
    def visibility(principal: Principal | None):
        """SQL condition on `projects`: what `principal` may see (repository listings filter by it too)."""
        return ProjectService._visibility(principal)

    @staticmethod
    def _visibility(principal: Principal | None):
        """Admins see every project; users public ones and their own; robots those they hold permissions on."""
        if principal is None or (principal.kind == "user" and principal.is_admin):
            return projects.c.id.isnot(None)
        if principal.kind == "user":
            member = exists().where(
                project_members.c.project_id == projects.c.id, project_members.c.user_id == principal.id
            )
            return or_(projects.c.public.is_(True), member)
        if principal.kind == "robot":
            return exists().where(
                robot_permissions.c.project_id == projects.c.id, robot_permissions.c.robot_id == principal.id
            )
        return projects.c.public.is_(True) if principal.is_anonymous else false()

    def private_names(self) -> list[str]:
        """Names an anonymous client must not learn (metrics masks them when anyone may scrape)."""
        with self.db.read() as conn:
            return list(conn.execute(select(projects.c.name).where(projects.c.public.is_(False))).scalars())

    def update(self, name: str, *, public: bool | None = None) -> Project:
        with self.db.write() as conn:
            project = self._require(conn, name)
            if public is not None:
                conn.execute(update(projects).where(projects.c.id == project.id).values(public=public))
            after = self._require(conn, name)
            if after.public != project.public:
                record(conn, "project.updated", project=name, data={"public": after.public})
            return after

    def delete(self, name: str) -> None:
        """Delete an empty project (its members, robots, robot permissions and webhooks go with it)."""
        with self.db.write() as conn:
            # Locked before counting: a writer creating a repository holds this row (domain/repositories.py),
            # so its repository is either counted here or refused there, never left behind.
            conn.execute(select(projects.c.id).where(projects.c.name == name).with_for_update())
            project = self._require(conn, name)
            held = conn.execute(
                select(func.count())
                .select_from(repositories)
                .where(or_(repositories.c.name == name, repositories.c.name.startswith(name + "/", autoescape=True)))
            ).scalar_one()
            if held:
                raise Conflict(
                    f"project {name} still holds {held} repositories; delete them first (`dockyard repos delete`), or delete "
                "the project with force (`dockyard admin projects delete --force`, ?force=true)",
                    detail={"name": name, "repositories": held},
                )
            # Retention policies cascade, but their scheduler rows are keyed by name: without this they
            # queue a failing job on every tick (and SQLite may hand the id to a later policy).
            policy_ids = conn.execute(select(retention_policies.c.id).where(retention_policies.c.project_id == project.id)).scalars()
            names = [schedule_name(i) for i in policy_ids]
            if names:
                conn.execute(delete(schedules).where(schedules.c.name.in_(names)))
            conn.execute(delete(projects).where(projects.c.id == project.id))
            # Its webhooks go with it: they name the project, and a project later created with the
            # same name (by anyone) must not have its events POSTed to the former admins' URLs.
            hooks = select(webhooks.c.id).where(webhooks.c.project == name)
            sent = select(webhook_deliveries.c.id).where(webhook_deliveries.c.webhook_id.in_(hooks))
            conn.execute(delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(sent)))
            conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id.in_(hooks)))
            conn.execute(delete(webhooks).where(webhooks.c.project == name))
            record(conn, "project.deleted", project=name)
        self._changed(name)

    def repository_count(self, name: str) -> int:
        with self.db.read() as conn:
            return conn.execute(
                select(func.count())
                .select_from(repositories)
                .where(or_(repositories.c.name == name, repositories.c.name.startswith(name + "/", autoescape=True)))
            ).scalar_one()

    # -- members ----------------------------------------------------------------------------

    def list_members(self, project: str) -> list[Member]:
        with self.db.read() as conn:
            project_id = self._require(conn, project).id
            rows = conn.execute(
                select(users.c.username, project_members.c.role, project_members.c.created_at)
                .join(users, users.c.id == project_members.c.user_id)
                .where(project_members.c.project_id == project_id)
                .order_by(users.c.username)
            ).all()
        return [Member(r.username, r.role, aware(r.created_at)) for r in rows]

    def add_member(self, project: str, username: str, role: str) -> Member:
        validate_role(role)
        with self.db.write() as conn:
            project_id = self._require(conn, project).id
            user_id = self._user_id(conn, username)
            inserted = insert_ignore(
                conn,
                project_members,
                {"project_id": project_id, "user_id": user_id, "role": role, "created_at": utcnow()},
                ["project_id", "user_id"],
            )
            if not inserted:
                raise Conflict(
                    f"{username} is already a member of project {project}; change the role instead",
                    detail={"project": project, "username": username},
                )
            record(conn, "member.added", project=project, data={"username": username, "role": role})
            return self._require_member(conn, project_id, project, user_id, username)

    def set_member_role(self, project: str, username: str, role: str) -> tuple[Member, str]:
        """Change a member's role; returns (member, previous role)."""
        validate_role(role)
        with self.db.write() as conn:
            project_id = self._require(conn, project).id
            user_id = self._user_id(conn, username)
            before = self._require_member(conn, project_id, project, user_id, username)
            if before.role == "admin" and role != "admin":
                self._keep_an_admin(conn, project_id, project, user_id)
            conn.execute(
                update(project_members)
                .where(project_members.c.project_id == project_id, project_members.c.user_id == user_id)
                .values(role=role)
            )
            if before.role != role:
                record(conn, "member.updated", project=project,
                       data={"username": username, "role": role, "previous_role": before.role})
            return self._require_member(conn, project_id, project, user_id, username), before.role

    def remove_member(self, project: str, username: str) -> Member:
        with self.db.write() as conn:
            project_id = self._require(conn, project).id
            user_id = self._user_id(conn, username)
            before = self._require_member(conn, project_id, project, user_id, username)
            if before.role == "admin":
                self._keep_an_admin(conn, project_id, project, user_id)
            conn.execute(
                delete(project_members).where(
                    project_members.c.project_id == project_id, project_members.c.user_id == user_id
                )
            )
            record(conn, "member.removed", project=project, data={"username": username, "role": before.role})
            return before

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _require(conn: Connection, name: str) -> Project:
        row = conn.execute(select(projects).where(projects.c.name == name)).first()
        if row is None:
            raise NotFound(f"project {name} does not exist", detail={"project": name[:100]})
        return _project(row)

    @staticmethod
    def _user_id(conn: Connection, username: str) -> int:
        user_id = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
        if user_id is None:
            raise NotFound(f"user {username} does not exist", detail={"username": username[:100]})
        return user_id

    @staticmethod
    def _require_member(conn: Connection, project_id: int, project: str, user_id: int, username: str) -> Member:
        row = conn.execute(
            select(project_members.c.role, project_members.c.created_at).where(
                project_members.c.project_id == project_id, project_members.c.user_id == user_id
            )
        ).first()
        if row is None:
            raise NotFound(
                f"{username} is not a member of project {project}", detail={"project": project, "username": username}
            )
        return Member(username, row.role, aware(row.created_at))

    @staticmethod
    def _keep_an_admin(conn: Connection, project_id: int, project: str, user_id: int) -> None:
        others = conn.execute(
            select(func.count())
            .select_from(project_members)
            .where(
                project_members.c.project_id == project_id,
                project_members.c.role == "admin",
                project_members.c.user_id != user_id,
            )
        ).scalar_one()
        if others == 0:
            raise Conflict(
                f"project {project} must keep at least one admin member", detail={"project": project}
            )
