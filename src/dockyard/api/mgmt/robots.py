"""/api/v1/robots: project robots (manage-members on the project) and system robots (admin)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from dockyard.api.mgmt.common import Caller, CallerDep, Input, Model, PagingDep, paged
from dockyard.domain.robots import Robot
from dockyard.errors import Denied, InvalidRequest, NotFound
from dockyard.policy.access_matrix import robot_grants

router = APIRouter(prefix="/robots", tags=["robots"])


class Grant(Model):
    project: str
    actions: list[str] = Field(description="Subset of pull, push, delete, read-scan.")


class RobotOut(Model):
    name: str
    kind: str = Field(description="project or system.")
    project: str | None
    description: str | None
    disabled: bool
    expires_at: datetime | None
    created_at: datetime
    created_by: str | None
    permissions: list[Grant]

    @classmethod
    def of(cls, robot: Robot) -> RobotOut:
        return cls(
            name=robot.name,
            kind=robot.kind,
            project=robot.project,
            description=robot.description,
            disabled=robot.disabled,
            expires_at=robot.expires_at,
            created_at=robot.created_at,
            created_by=robot.created_by,
            permissions=[Grant(project=p, actions=a) for p, a in robot.permissions.items()],
        )


class RobotWithSecret(RobotOut):
    secret: str = Field(description="Shown once; store it now. Only a hash is kept.")


class RobotCreate(Input):
    name: str = Field(description="Short name [a-z0-9][a-z0-9._-]{0,63}; the account is robot$<project>+<name> or robot$<name>.")
    project: str | None = Field(None, description="Set for a project robot; omit for a system robot (admin).")
    actions: list[str] | None = Field(None, description="Project robot: its actions on `project`.")
    permissions: list[Grant] | None = Field(None, description="System robot: actions per project.")
    description: str | None = Field(None, max_length=500)
    expires_at: datetime | None = None
    duration_days: int | None = Field(None, description="Alternative to expires_at.")


class RobotUpdate(Input):
    disabled: bool | None = None
    description: str | None = Field(None, max_length=500)
    expires_at: datetime | None = None
    actions: list[str] | None = Field(None, description="Project robot: replaces its actions on its project.")
    permissions: list[Grant] | None = Field(None, description="System robot (admin): replaces its actions per project.")


def _authorize(caller: Caller, robot: Robot) -> None:
    """Project robots are managed by whoever manages the project's members; system robots by admins."""
    if caller.is_admin:
        return
    if robot.project is None:
        raise Denied("only registry administrators may manage system robots")
    caller.require_project(robot.project, "manage-members")


def _permissions(caller: Caller, body: RobotCreate | RobotUpdate, project: str | None) -> dict | list:
    """The permissions in `body`, in the shape RobotService takes, if the caller may grant them: a project
    robot's manager grants at most what they hold (with what it implies: push brings pull), on that project
    only; system robots are for administrators."""
    if project is not None:
        if body.permissions is not None or not body.actions:
            raise InvalidRequest("a project robot takes `actions` (not `permissions`)")
        held = caller.require_project(project, "manage-members")
        beyond = sorted(robot_grants(body.actions) - held)
        if beyond and not caller.is_admin:
            raise Denied(f"you may not grant actions you do not hold: {', '.join(beyond)}")
        return list(body.actions)
    caller.require_admin()
    if body.actions is not None or not body.permissions:
        raise InvalidRequest("a system robot takes `permissions` (a list of {project, actions})")
    permissions = {g.project: g.actions for g in body.permissions}
    if len(permissions) != len(body.permissions):
        raise InvalidRequest("each project may appear once in `permissions`")
    return permissions


def _load(caller: Caller, name: str) -> Robot:
    """The robot, if the caller may manage it. Otherwise the answer is exactly the one for a robot that
    does not exist, so robot names (and the private projects in them) cannot be confirmed."""
    robot = caller.services.robots.get(name)
    try:
        _authorize(caller, robot)
    except (Denied, NotFound) as exc:
        raise NotFound(f"robot {name} does not exist", detail={"name": name[:200]}) from exc
    return robot


@router.get("", response_model=list[RobotOut], summary="Robots (admin), or one project's robots (manage-members)")
def list_robots(
    caller: CallerDep, paging: PagingDep, request: Request, response: Response,
    project: str | None = Query(None, description="Only this project's own robots."),
):
    if project is None:
        caller.require_admin()
    else:
        caller.require_project(project, "manage-members")
    page = caller.services.robots.list(paging.page, paging.page_size, project=project)
    return paged(request, response, page, RobotOut.of)


@router.post("", response_model=RobotWithSecret, status_code=201, summary="Create a robot; the secret is returned once")
def create_robot(body: RobotCreate, caller: CallerDep):
    permissions = _permissions(caller, body, body.project)
    robot, secret = caller.services.robots.create(
        body.name,
        project=body.project,
        permissions=permissions,
        description=body.description,
        expires_at=body.expires_at,
        duration_days=body.duration_days,
        created_by=caller.principal.name,
        bounded=not caller.is_admin,
    )
    caller.audit(
        "robot.create", f"robot {robot.name}", project=robot.project,
        detail={"permissions": robot.permissions, "expires_at": robot.expires_at},
    )
    return RobotWithSecret(**RobotOut.of(robot).model_dump(), secret=secret)


@router.get("/{name}", response_model=RobotOut, summary="One robot")
def get_robot(name: str, caller: CallerDep):
    return RobotOut.of(_load(caller, name))


@router.patch("/{name}", response_model=RobotOut, summary="Enable/disable, describe, change expiry or permissions")
def update_robot(name: str, body: RobotUpdate, caller: CallerDep):
    robot = _load(caller, name)
    changes = body.model_dump(exclude_unset=True, exclude={"actions", "permissions"})
    if changes.get("disabled") is None:
        changes.pop("disabled", None)
    permissions = _permissions(caller, body, robot.project) if body.actions is not None or body.permissions is not None else None
    updated = caller.services.robots.update(name, **changes, by_admin=caller.is_admin)  # refusals before any write below
    if permissions is not None:
        before, updated = caller.services.robots.set_permissions(name, permissions)
        after = updated
        if any(set(acts) - set(after.permissions.get(p, ())) for p, acts in before.permissions.items()):
            caller.services.tokens.revoke_refresh(name)  # narrowed: its wider tokens end now (new epoch)
        caller.audit("robot.update", f"robot {name}", project=robot.project,
                     detail={"permissions": {"before": before.permissions, "after": after.permissions}})
    if changes.get("disabled"):
        caller.services.tokens.revoke_refresh(name)
    if changes or (body.actions is None and body.permissions is None):
        action = {True: "robot.disable", False: "robot.enable"}.get(changes.get("disabled"), "robot.update")
        caller.audit(action, f"robot {name}", project=robot.project, detail=changes)
    return RobotOut.of(updated)


@router.post("/{name}/rotate", response_model=RobotWithSecret, summary="New secret; the old one stops working")
def rotate_robot(name: str, caller: CallerDep):
    robot = _load(caller, name)
    robot, secret = caller.services.robots.rotate(name)
    caller.services.tokens.revoke_refresh(name)
    caller.audit("robot.rotate", f"robot {name}", project=robot.project)
    return RobotWithSecret(**RobotOut.of(robot).model_dump(), secret=secret)


@router.delete("/{name}", status_code=204, summary="Delete a robot")
def delete_robot(name: str, caller: CallerDep):
    robot = _load(caller, name)
    caller.services.robots.delete(name)
    caller.services.tokens.revoke_refresh(name)
    caller.audit("robot.delete", f"robot {name}", project=robot.project)
    return Response(status_code=204)

