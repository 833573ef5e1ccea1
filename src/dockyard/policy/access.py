"""Who may do what: the grants of the access matrix (policy/access_matrix.py, the one table that
docs/access.md shows and tests/functional/test_role_matrix.py walks) applied to a principal.
"""

from __future__ import annotations

import time

from sqlalchemy import case, exists, false, func, or_

from dockyard.auth.principals import Principal
from dockyard.metadata.db import Database, parse_db_datetime
from dockyard.metadata.models import project_members, projects, robot_permissions
from dockyard.policy.access_matrix import (
    ALL_PROJECT_ACTIONS,
    ANONYMOUS_PUBLIC_ACTIONS,
    PUBLIC_ACTIONS,
    ROBOT_ACTIONS,
    ROLE_ACTIONS,
    ROLES,
    robot_grants,
)

__all__ = ["ALL_PROJECT_ACTIONS", "REPOSITORY_ACTIONS", "ROBOT_ACTIONS", "ROLE_ACTIONS", "ROLES", "AccessPolicy", "project_of", "project_of_sql"]

# The actions tokens carry (repository scope).
REPOSITORY_ACTIONS = frozenset({"pull", "push", "delete"})

_USER_SQL = (
    "SELECT p.public, m.role FROM projects p"
    " LEFT JOIN project_members m ON m.project_id = p.id AND m.user_id = ? WHERE p.name = ?"
)
_ROBOT_SQL = (
    "SELECT p.public, rp.actions FROM projects p"
    " LEFT JOIN robot_permissions rp ON rp.project_id = p.id AND rp.robot_id = ? WHERE p.name = ?"
)
_PROJECT_SQL = "SELECT public FROM projects WHERE name = ?"
_BORN_SQL = "SELECT created_at FROM projects WHERE name = ?"
_BORN_LIMIT = 10_000


def project_of(repository: str) -> str:
    """The project a repository belongs to: its first path component. Every layer asks here."""
    return repository.split("/", 1)[0]


def project_of_sql(dialect: str, name):
    """`project_of` as a SQL expression over a repository-name column (for joins on `projects`)."""
    if dialect == "postgresql":
        return func.split_part(name, "/", 1)
    slash = func.instr(name, "/")
    return case((slash > 0, func.substr(name, 1, slash - 1)), else_=name)


class AccessPolicy:
    def __init__(self, db: Database, *, auto_create_projects: bool = False, check_seconds: float = 5.0):
        self.db = db
        self.auto_create_projects = auto_create_projects
        self.check_seconds = check_seconds
        # project name -> (trusted until (monotonic), its created_at as epoch seconds, or None: no such project)
        self._births: dict[str, tuple[float, float | None]] = {}

    # -- namesakes: a bearer token names projects, not project ids ---------------------------

    def created_after_cached(self, project: str, issued_at: float) -> bool | None:
        """Whether `project` was created after a token issued at `issued_at` (its `iat`, whole seconds),
        from this process's view (at most `check_seconds` old); None when that view is stale.

        Such a project is a namesake of the one the token was granted for (deleted and created again):
        the token's scope must not reach it. A project created in the token's own second counts as older."""
        entry = self._births.get(project)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1] is not None and entry[1] >= issued_at + 1

    def created_after(self, project: str, issued_at: float) -> bool:
        cached = self.created_after_cached(project, issued_at)
        if cached is not None:
            return cached
        row = self.db.fetchone(_BORN_SQL, (project,))
        if len(self._births) >= _BORN_LIMIT:
            self._births.clear()
        born = parse_db_datetime(row[0]).timestamp() if row else None
        self._births[project] = (time.monotonic() + self.check_seconds, born)
        return self.created_after_cached(project, issued_at) or False

    def forget_project(self, project: str) -> None:
        """This process created or deleted `project`: its next namesake check reads the database."""
        self._births.pop(project, None)

    def project_actions(self, principal: Principal, project: str) -> frozenset[str]:
        """Everything `principal` may do in `project` (empty if the project does not exist)."""
        if principal.kind == "user" and principal.is_admin:
            exists = self.db.fetchone(_PROJECT_SQL, (project,)) is not None
            return ALL_PROJECT_ACTIONS if exists else frozenset()
        if principal.kind == "user":
            row = self.db.fetchone(_USER_SQL, (principal.id, project))
            if row is None:
                return frozenset()
            public, role = row
            actions = set(ROLE_ACTIONS.get(role, frozenset()))
            if public:
                actions |= PUBLIC_ACTIONS
            return frozenset(actions)
        if principal.kind == "robot":
            row = self.db.fetchone(_ROBOT_SQL, (principal.id, project))
            if row is None:
                return frozenset()
            public, granted = row
            actions = set(robot_grants((granted or "").split(",")))
            if public:
                actions |= PUBLIC_ACTIONS
            return frozenset(actions)
        row = self.db.fetchone(_PROJECT_SQL, (project,))
        return ANONYMOUS_PUBLIC_ACTIONS if row is not None and row[0] else frozenset()

    def repository_actions(self, principal: Principal, repository: str) -> frozenset[str]:
        project = project_of(repository)
        actions = self.project_actions(principal, project) & REPOSITORY_ACTIONS
        if not actions and self.may_auto_create(principal, project):
            return frozenset({"pull", "push"})
        return actions

    def may_auto_create(self, principal: Principal, project: str) -> bool:
        """Auto-create lets a signed-in user push into a project that does not exist yet."""
        return (
            self.auto_create_projects
            and principal.kind == "user"
            and self.db.fetchone(_PROJECT_SQL, (project,)) is None
        )

    @staticmethod
    def pull_condition(account: Principal | None):
        """SQL condition over `projects`: the projects whose repositories `account` may pull (None: every
        project, for system admins). The catalog filters with it BEFORE paging, so pages are full and
        nothing about invisible repositories (not even a `last` for the Link header) leaves the query.
        `account` must be resolved (with its id); None means "no such account" and sees nothing."""
        if account is None:
            return false()
        if account.kind == "user" and account.is_admin:
            return None
        public = projects.c.public.is_(True)
        if account.kind == "user":
            member = exists().where(project_members.c.project_id == projects.c.id, project_members.c.user_id == account.id)
            return or_(public, member)
        if account.kind == "robot":
            listed = "," + robot_permissions.c.actions + ","
            granted = exists().where(
                robot_permissions.c.project_id == projects.c.id,
                robot_permissions.c.robot_id == account.id,
                or_(*(listed.contains(f",{a},") for a in sorted(ROBOT_ACTIONS) if "pull" in robot_grants([a]))),
            )
            return or_(public, granted)
        return public if account.is_anonymous else false()

    def project_exists(self, project: str) -> bool:
        return self.db.fetchone(_PROJECT_SQL, (project,)) is not None

    def explain_denial(self, principal: Principal, repository: str, action: str) -> str:
        project = project_of(repository)
        if not self.project_exists(project):
            hint = " (ask an administrator to create it)" if not self.auto_create_projects else ""
            return f"project {project} does not exist{hint}"
        who = "anonymous users" if principal.is_anonymous else f"{principal.kind} {principal.name}"
        return f"{who} may not {action} in repository {repository} (project {project})"

