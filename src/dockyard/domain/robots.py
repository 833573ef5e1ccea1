"""Robot accounts: machine credentials scoped to projects. No HTTP here.

A project robot is `robot$<project>+<name>` and holds permissions on that one project; a system
robot is `robot$<name>` and may hold permissions on several. The secret is generated here, returned
once by `create` / `rotate`, and only its argon2 hash is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, select, update

from dockyard.auth.passwords import generate_secret, hash_secret
from dockyard.auth.principals import ROBOT_PREFIX, Principal
from dockyard.domain.events import record
from dockyard.errors import Conflict, Denied, InvalidRequest
from dockyard.paging import Page, page_bounds
from dockyard.errors import NameInvalid, NotFound
from dockyard.metadata.db import Database, aware, insert_ignore, utcnow
from dockyard.metadata.models import new_epoch, projects, robot_permissions, robots
from dockyard.policy.access import ROBOT_ACTIONS

ROBOT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_DURATION_DAYS = 3650
_UNSET = object()
_INTERNAL = frozenset({"credential_epoch", "disabled_by_admin"})


@dataclass(frozen=True)
class Robot:
    id: int
    name: str  # full name: robot$<project>+<name> or robot$<name>
    project: str | None  # set for project robots
    description: str | None
    disabled: bool
    expires_at: datetime | None
    created_at: datetime
    created_by: str | None
    permissions: dict[str, list[str]] = field(default_factory=dict)  # project -> sorted actions
    disabled_by_admin: bool = False  # then only a registry administrator may enable it

    @property
    def kind(self) -> str:
        return "project" if self.project else "system"

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())

    def principal(self) -> Principal:
        return Principal("robot", self.name, self.id, False)


def _robot_event(conn, type: str, robot: Robot, change: list[str] | None = None) -> None:
    data: dict = {"name": robot.name, "kind": robot.kind}
    if change is not None:
        data["changed"] = change
    record(conn, type, project=robot.project, data=data)


def full_robot_name(name: str, project: str | None) -> str:
    if not ROBOT_NAME_RE.fullmatch(name):
        raise NameInvalid("robot name must match [a-z0-9][a-z0-9._-]{0,63}", detail={"name": name[:100]})
    return f"{ROBOT_PREFIX}{project}+{name}" if project else f"{ROBOT_PREFIX}{name}"


def validate_actions(actions) -> list[str]:
    cleaned = sorted(set(actions))
    unknown = [a for a in cleaned if a not in ROBOT_ACTIONS]
    if unknown or not cleaned:
        raise InvalidRequest(
            f"robot permissions must be a non-empty subset of {', '.join(sorted(ROBOT_ACTIONS))}",
            detail={"unknown": unknown[:10]},
        )
    return cleaned


def robot_grants_of(project: str | None, permissions: dict[str, list[str]] | list[str]) -> dict[str, list[str]]:
    """project -> validated actions. A project robot's permissions are a list of actions on its own project;
    a system robot's a mapping project -> actions."""
    if project is not None:
        if not isinstance(permissions, list):
            raise InvalidRequest("a project robot's permissions are a list of actions on its project")
        return {project: validate_actions(permissions)}
    if not isinstance(permissions, dict) or not permissions:
        raise InvalidRequest("a system robot needs permissions on at least one project")
    return {p: validate_actions(a) for p, a in permissions.items()}


def resolve_expiry(expires_at: datetime | None, duration_days: int | None, *, bounded: bool = False) -> datetime | None:
    """The expiry to store. `bounded` (a caller who is not a registry administrator): at most
    MAX_DURATION_DAYS ahead, as `duration_days` allows, and never "never" (None)."""
    if expires_at is not None and duration_days is not None:
        raise InvalidRequest("give expires_at or duration_days, not both")
    if duration_days is not None:
        if not 1 <= duration_days <= MAX_DURATION_DAYS:
            raise InvalidRequest(f"duration_days must be between 1 and {MAX_DURATION_DAYS}")
        return utcnow() + timedelta(days=duration_days)
    if expires_at is not None:
        expires_at = aware(expires_at)
        if expires_at <= utcnow():
            raise InvalidRequest("expires_at is in the past")
        if bounded and expires_at > utcnow() + timedelta(days=MAX_DURATION_DAYS):
            raise InvalidRequest(f"expires_at may be at most {MAX_DURATION_DAYS} days ahead (a registry administrator may set more)")
    elif bounded:
        raise Denied("only a registry administrator may make a robot that never expires; give expires_at or duration_days")
    return expires_at


class RobotService:
    def __init__(self, db: Database):
        self.db = db

    # -- writes -----------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        project: str | None = None,
        permissions: dict[str, list[str]] | list[str],
        description: str | None = None,
        expires_at: datetime | None = None,
        duration_days: int | None = None,
        created_by: str | None = None,
        bounded: bool = False,
    ) -> tuple[Robot, str]:
        """Create a robot; returns (robot, secret). The secret is never retrievable again.

        Project robot: `project` set and `permissions` a list of actions on it.
        System robot: `project` None and `permissions` a mapping project -> actions."""
        full_name = full_robot_name(name, project)
        grants = robot_grants_of(project, permissions)
        if bounded and expires_at is None and duration_days is None:
            duration_days = MAX_DURATION_DAYS  # the longest a project admin may give; "never" is an administrator's call
        expiry = resolve_expiry(expires_at, duration_days, bounded=bounded)
        secret = generate_secret()
        secret_hash = hash_secret(secret)
        with self.db.write() as conn:
            project_ids = self._project_ids(conn, list(grants))
            inserted = insert_ignore(
                conn,
                robots,
                {
                    "name": full_name,
                    "project_id": project_ids[project] if project else None,
                    "description": description,
                    "secret_hash": secret_hash,
                    "disabled": False,
                    "expires_at": expiry,
                    "created_at": utcnow(),
                    "created_by": created_by,
                },
                ["name"],
            )
            if not inserted:
                raise Conflict(f"robot {full_name} already exists", detail={"name": full_name})
            robot_id = conn.execute(select(robots.c.id).where(robots.c.name == full_name)).scalar_one()
            conn.execute(
                robot_permissions.insert(),
                [{"robot_id": robot_id, "project_id": project_ids[p], "actions": ",".join(a)} for p, a in grants.items()],
            )
            robot = self._require(conn, full_name)
            _robot_event(conn, "robot.created", robot)
            return robot, secret

    def rotate(self, name: str) -> tuple[Robot, str]:
        secret = generate_secret()
        secret_hash = hash_secret(secret)
        with self.db.write() as conn:
            robot = self._require(conn, name)
            conn.execute(
                update(robots).where(robots.c.id == robot.id).values(secret_hash=secret_hash, credential_epoch=new_epoch())
            )
            _robot_event(conn, "robot.updated", robot, change=["secret"])
            return robot, secret

    def update(
        self, name: str, *, disabled: bool | None = None, description=_UNSET, expires_at=_UNSET, by_admin: bool = True
    ) -> Robot:
        """`by_admin` False (a project admin): expiry is bounded (resolve_expiry), and a robot a registry
        administrator disabled stays disabled."""
        values: dict = {}
        if disabled is not None:
            values["disabled"] = disabled
        if description is not _UNSET:
            values["description"] = description
        if expires_at is not _UNSET:
            values["expires_at"] = resolve_expiry(expires_at, None, bounded=not by_admin)
        with self.db.write() as conn:
            robot = self._require(conn, name)
            if disabled is False and not by_admin and robot.disabled_by_admin:
                raise Denied(f"robot {name} was disabled by a registry administrator; only an administrator may enable it")
            if disabled is not None:
                values["disabled_by_admin"] = disabled and (by_admin or robot.disabled_by_admin)
            if disabled is not None and disabled != robot.disabled:
                values["credential_epoch"] = new_epoch()  # tokens and refresh tokens issued before end
            if values:
                conn.execute(update(robots).where(robots.c.id == robot.id).values(**values))
                _robot_event(conn, "robot.updated", robot, change=sorted(k for k in values if k not in _INTERNAL))
            return self._require(conn, name)

    def set_permissions(self, name: str, permissions: dict[str, list[str]] | list[str]) -> tuple[Robot, Robot]:
        """Replace a robot's permissions (same shapes as `create`); returns (before, after). Taking any action
        away replaces the credential epoch, so tokens and login passwords issued with the wider access end
        at once; only widening keeps them."""
        with self.db.write() as conn:
            before = self._require(conn, name)
            grants = robot_grants_of(before.project, permissions)
            project_ids = self._project_ids(conn, list(grants))
            conn.execute(delete(robot_permissions).where(robot_permissions.c.robot_id == before.id))
            conn.execute(
                robot_permissions.insert(),
                [{"robot_id": before.id, "project_id": project_ids[p], "actions": ",".join(a)} for p, a in grants.items()],
            )
            narrowed = any(set(acts) - set(grants.get(p, ())) for p, acts in before.permissions.items())
            if narrowed:
                conn.execute(update(robots).where(robots.c.id == before.id).values(credential_epoch=new_epoch()))
            _robot_event(conn, "robot.updated", before, change=["permissions"])
            return before, self._require(conn, name)

    def delete(self, name: str) -> Robot:
        with self.db.write() as conn:
            robot = self._require(conn, name)
            conn.execute(delete(robots).where(robots.c.id == robot.id))
            _robot_event(conn, "robot.deleted", robot)
            return robot

    # -- reads ------------------------------------------------------------------------------

    def get(self, name: str) -> Robot:
        with self.db.read() as conn:
            return self._require(conn, name)

    def list(self, page: int = 1, page_size: int = 50, *, project: str | None = None) -> Page[Robot]:
        """All robots, or with `project` only that project's own robots."""
        limit, offset = page_bounds(page, page_size)
        query = select(robots.c.name)
        count = select(func.count()).select_from(robots)
        with self.db.read() as conn:
            if project is not None:
                project_id = self._project_ids(conn, [project])[project]
                query = query.where(robots.c.project_id == project_id)
                count = count.where(robots.c.project_id == project_id)
            total = conn.execute(count).scalar_one()
            names = conn.execute(query.order_by(robots.c.name).limit(limit).offset(offset)).scalars().all()
            items = [self._require(conn, n) for n in names]
        return Page(items, total, page, page_size)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _project_ids(conn: Connection, names: list[str]) -> dict[str, int]:
        rows = conn.execute(select(projects.c.name, projects.c.id).where(projects.c.name.in_(names))).all()
        found = {r.name: r.id for r in rows}
        missing = [n for n in names if n not in found]
        if missing:
            raise NotFound(f"project {missing[0]} does not exist", detail={"project": missing[0][:100]})
        return found

    @staticmethod
    def _require(conn: Connection, name: str) -> Robot:
        row = conn.execute(
            select(
                robots.c.id,
                robots.c.name,
                projects.c.name.label("project"),
                robots.c.description,
                robots.c.disabled,
                robots.c.expires_at,
                robots.c.created_at,
                robots.c.created_by,
                robots.c.disabled_by_admin,
            )
            .select_from(robots.outerjoin(projects, projects.c.id == robots.c.project_id))
            .where(robots.c.name == name)
        ).first()
        if row is None:
            raise NotFound(f"robot {name} does not exist", detail={"name": name[:200]})
        grants = conn.execute(
            select(projects.c.name, robot_permissions.c.actions)
            .join(projects, projects.c.id == robot_permissions.c.project_id)
            .where(robot_permissions.c.robot_id == row.id)
            .order_by(projects.c.name)
        ).all()
        permissions = {g.name: sorted(a for a in g.actions.split(",") if a) for g in grants}
        return Robot(
            id=row.id,
            name=row.name,
            project=row.project,
            description=row.description,
            disabled=bool(row.disabled),
            expires_at=aware(row.expires_at),
            created_at=aware(row.created_at),
            created_by=row.created_by,
            permissions=permissions,
            disabled_by_admin=bool(row.disabled_by_admin),
        )
