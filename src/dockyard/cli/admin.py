"""`dockyard admin projects|members|users|robots`: remote clients of the management API.

Connection options go at the end (`dockyard admin projects list --url https://registry.example.com -u alice`)
or before the subcommand, else come from DOCKYARD_URL / DOCKYARD_USERNAME / DOCKYARD_PASSWORD, else from the last
`dockyard login` (dockyard.cli.remote.connect). Output is a Rich table, or JSON with `--json`.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from dockyard.cli.options import JsonOpt, PageOpt, PageSizeOpt, YesOpt
from dockyard.cli.remote import confirm, err, fail, out, remote, remote_group, seg, show

PROJECT_COLUMNS = ["name", "public", "created_at"]
MEMBER_COLUMNS = ["username", "role", "created_at"]
USER_COLUMNS = ["username", "email", "is_admin", "disabled", "created_at", "password_changed_at"]
ROBOT_COLUMNS = ["name", "kind", "permissions", "disabled", "expires_at", "description", "created_by"]


# -- projects ---------------------------------------------------------------------------------

projects = remote_group("projects", "Projects on a running registry (via /api/v1).")


@projects.command("list")
def projects_list(ctx: typer.Context, page: PageOpt = None, page_size: PageSizeOpt = 50, json_output: JsonOpt = False) -> None:
    """List the projects you can see."""
    show(ctx, remote(ctx).listing("/projects", page, page_size), PROJECT_COLUMNS, json_output)


@projects.command("create")
def projects_create(
    ctx: typer.Context,
    name: str,
    public: Annotated[bool, typer.Option("--public", help="Anyone may pull.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Create a project (administrators); you become its admin member."""
    data = remote(ctx).call("POST", "/projects", json={"name": name, "public": public}).json()
    show(ctx, data, PROJECT_COLUMNS, json_output)


@projects.command("show")
def projects_show(ctx: typer.Context, name: str, json_output: JsonOpt = False) -> None:
    """Show a project, its repository count and what you may do in it."""
    data = remote(ctx).call("GET", f"/projects/{seg(name)}").json()
    show(ctx, data, PROJECT_COLUMNS + ["repository_count", "actions"], json_output)


@projects.command("update")
def projects_update(
    ctx: typer.Context,
    name: str,
    public: Annotated[Optional[bool], typer.Option("--public/--private", help="Anonymous pulls on or off.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Change project settings (manage-policies)."""
    body = {} if public is None else {"public": public}
    data = remote(ctx).call("PATCH", f"/projects/{seg(name)}", json=body).json()
    show(ctx, data, PROJECT_COLUMNS, json_output)


@projects.command("delete")
def projects_delete(
    ctx: typer.Context,
    name: str,
    force: Annotated[bool, typer.Option("--force", help="Delete its repositories (manifests, tags) too; blobs go to GC.")] = False,
    reason: Annotated[Optional[str], typer.Option(
        "--break-glass-reason", help="Delete immutable tags too, for this reason (audited).")] = None,
    yes: YesOpt = False,
) -> None:
    """Delete a project (administrators); with --force, every repository in it first."""
    confirm(f"delete project {name}" + (" and every repository in it" if force else ""), yes)
    params: dict = {"force": "true"} if force else {}
    if reason is not None:
        params["override_reason"] = reason
    remote(ctx).call("DELETE", f"/projects/{seg(name)}", params=params)
    err.print(f"deleted project {name}")


# -- members ----------------------------------------------------------------------------------

members = remote_group("members", "Project members and their roles (via /api/v1).")


@members.command("list")
def members_list(ctx: typer.Context, project: str, json_output: JsonOpt = False) -> None:
    """List a project's members (manage-members)."""
    show(ctx, remote(ctx).get_all(f"/projects/{seg(project)}/members"), MEMBER_COLUMNS, json_output)


@members.command("add")
def members_add(
    ctx: typer.Context,
    project: str,
    username: str,
    role: Annotated[str, typer.Option("--role", help="admin, maintainer, developer or guest.")] = "developer",
    json_output: JsonOpt = False,
) -> None:
    """Add a user to a project with a role."""
    data = remote(ctx).call("POST", f"/projects/{seg(project)}/members", json={"username": username, "role": role}).json()
    show(ctx, data, MEMBER_COLUMNS, json_output)


@members.command("set-role")
def members_set_role(ctx: typer.Context, project: str, username: str, role: str, json_output: JsonOpt = False) -> None:
    """Change a member's role."""
    data = remote(ctx).call("PUT", f"/projects/{seg(project)}/members/{seg(username)}", json={"role": role}).json()
    show(ctx, data, MEMBER_COLUMNS, json_output)


@members.command("remove")
def members_remove(ctx: typer.Context, project: str, username: str) -> None:
    """Remove a member from a project."""
    remote(ctx).call("DELETE", f"/projects/{seg(project)}/members/{seg(username)}")
    err.print(f"removed {username} from project {project}")


# -- users ------------------------------------------------------------------------------------

users = remote_group("users", "User accounts (via /api/v1; administrators, except your own password).")

NewPassOpt = Annotated[Optional[str], typer.Option("--new-password", help="The user's password (prompted if omitted).")]
NewPassStdinOpt = Annotated[bool, typer.Option("--new-password-stdin", help="Read the user's password from standard input.")]


def _new_password(new_password: str | None, from_stdin: bool) -> str:
    if from_stdin:
        if new_password:
            fail("give --new-password or --new-password-stdin, not both", 2)
        return sys.stdin.readline().rstrip("\r\n")
    if new_password:
        return new_password
    if not sys.stdin.isatty():
        fail("no new password: use --new-password or --new-password-stdin", 2)
    return typer.prompt("New password", hide_input=True, confirmation_prompt=True)


@users.command("list")
def users_list(ctx: typer.Context, page: PageOpt = None, page_size: PageSizeOpt = 50, json_output: JsonOpt = False) -> None:
    """List users."""
    show(ctx, remote(ctx).listing("/users", page, page_size), USER_COLUMNS, json_output)


@users.command("create")
def users_create(
    ctx: typer.Context,
    username: str,
    new_password: NewPassOpt = None,
    new_password_stdin: NewPassStdinOpt = False,
    email: Annotated[Optional[str], typer.Option("--email")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Registry administrator.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Create a user."""
    body = {"username": username, "password": _new_password(new_password, new_password_stdin), "email": email, "is_admin": admin}
    show(ctx, remote(ctx).call("POST", "/users", json=body).json(), USER_COLUMNS, json_output)


@users.command("show")
def users_show(ctx: typer.Context, username: Annotated[str, typer.Argument(help="A username, or `me`.")] = "me", json_output: JsonOpt = False) -> None:
    """Show a user (yourself by default)."""
    show(ctx, remote(ctx).call("GET", f"/users/{seg(username)}").json(), USER_COLUMNS, json_output)


def _set_disabled(ctx: typer.Context, username: str, disabled: bool, json_output: bool) -> None:
    data = remote(ctx).call("PATCH", f"/users/{seg(username)}", json={"disabled": disabled}).json()
    show(ctx, data, USER_COLUMNS, json_output)


@users.command("disable")
def users_disable(ctx: typer.Context, username: str, json_output: JsonOpt = False) -> None:
    """Disable a user: their credentials and tokens stop working."""
    _set_disabled(ctx, username, True, json_output)


@users.command("enable")
def users_enable(ctx: typer.Context, username: str, json_output: JsonOpt = False) -> None:
    """Enable a disabled user."""
    _set_disabled(ctx, username, False, json_output)


@users.command("set-password")
def users_set_password(
    ctx: typer.Context,
    username: str,
    new_password: NewPassOpt = None,
    new_password_stdin: NewPassStdinOpt = False,
    old_password: Annotated[
        Optional[str], typer.Option("--old-password", help="For your own account; default: the connection password.")
    ] = None,
) -> None:
    """Set a user's password (yours needs the old one; administrators may set anyone's)."""
    r = remote(ctx)
    body: dict = {"new_password": _new_password(new_password, new_password_stdin)}
    if username == r.username:
        body["old_password"] = old_password if old_password is not None else r.password
    r.call("PUT", f"/users/{seg(username)}/password", json=body)
    err.print(f"password of {username} changed; their refresh tokens were revoked")


@users.command("delete")
def users_delete(ctx: typer.Context, username: str, yes: YesOpt = False) -> None:
    """Delete a user."""
    confirm(f"delete user {username}", yes)
    remote(ctx).call("DELETE", f"/users/{seg(username)}")
    err.print(f"deleted user {username}")


# -- robots -----------------------------------------------------------------------------------

robots = remote_group("robots", "Robot accounts for CI and automation (via /api/v1).")


def _effective(robot: dict) -> dict:
    """A robot row for the table: each grant with what it implies, `team: push (+pull)`, so a push-only
    robot is not taken for one that cannot pull (--json keeps the granted actions as stored)."""
    from dockyard.policy.access_matrix import robot_grants

    def grant(p: dict) -> str:
        granted = list(p.get("actions", []))
        implied = sorted(robot_grants(granted) - set(granted))
        return f"{p.get('project')}: {','.join(granted)}" + (f" (+{','.join(implied)})" if implied else "")

    permissions = robot.get("permissions")
    if not isinstance(permissions, list):
        return robot
    return {**robot, "permissions": [grant(p) if isinstance(p, dict) else p for p in permissions]}


def _show_robot(ctx: typer.Context, data: dict, json_output: bool) -> None:
    secret = data.pop("secret", None)
    if json_output or remote(ctx).json:
        out.print_json(json.dumps({**data, **({"secret": secret} if secret else {})}, default=str))
        return
    show(ctx, _effective(data), ROBOT_COLUMNS, False)
    if secret:
        out.print(f"[bold]secret:[/bold] {escape(secret)}", highlight=False)
        err.print("[yellow]store this secret now: it is shown only once[/yellow]")


@robots.command("list")
def robots_list(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Option("--project", help="Only this project's robots.")] = None,
    page: PageOpt = None,
    page_size: PageSizeOpt = 50,
    json_output: JsonOpt = False,
) -> None:
    """List robots (all: administrators; one project: manage-members)."""
    params = {"project": project} if project else {}
    rows = remote(ctx).listing("/robots", page, page_size, params)
    json_mode = json_output or remote(ctx).json
    show(ctx, rows if json_mode else [_effective(r) for r in rows], ROBOT_COLUMNS, json_output)


@robots.command("show")
def robots_show(ctx: typer.Context, name: str, json_output: JsonOpt = False) -> None:
    """Show a robot (never its secret)."""
    _show_robot(ctx, remote(ctx).call("GET", f"/robots/{seg(name)}").json(), json_output)


@robots.command("create")
def robots_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Short name; becomes robot$<project>+<name> or robot$<name>.")],
    project: Annotated[Optional[str], typer.Option("--project", help="Create a project robot in this project.")] = None,
    action: Annotated[
        Optional[list[str]], typer.Option("--action", help="Project robot: pull, push, delete or read-scan (repeat).")
    ] = None,
    grant: Annotated[
        Optional[list[str]], typer.Option("--grant", help="System robot: PROJECT=ACTION[,ACTION] (repeat).")
    ] = None,
    description: Annotated[Optional[str], typer.Option("--description")] = None,
    expires_days: Annotated[Optional[int], typer.Option("--expires-days", help="Expire after this many days.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Create a robot; prints its secret once."""
    body: dict[str, Any] = {"name": name, "description": description}
    if expires_days is not None:
        body["duration_days"] = expires_days
    if project:
        if grant:
            fail("--grant is for system robots; use --action with --project", 2)
        body.update(project=project, actions=list(action or ["pull"]))
    else:
        if action or not grant:
            fail("a system robot needs --grant PROJECT=ACTIONS (or pass --project for a project robot)", 2)
        body["permissions"] = _grants(grant)
    _show_robot(ctx, remote(ctx).call("POST", "/robots", json=body).json(), json_output)


def _grants(grant: list[str]) -> list[dict]:
    permissions = []
    for item in grant:
        proj, sep, acts = item.partition("=")
        if not sep or not proj or not acts:
            fail(f"--grant {item!r}: expected PROJECT=ACTION[,ACTION]", 2)
        permissions.append({"project": proj, "actions": [a for a in acts.split(",") if a]})
    return permissions


@robots.command("update")
def robots_update(
    ctx: typer.Context,
    name: str,
    action: Annotated[
        Optional[list[str]], typer.Option("--action", help="Project robot: its new actions (repeat; replaces them).")
    ] = None,
    grant: Annotated[
        Optional[list[str]], typer.Option("--grant", help="System robot: PROJECT=ACTION[,ACTION] (repeat; replaces them).")
    ] = None,
    description: Annotated[Optional[str], typer.Option("--description")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Change a robot's permissions (and description); audited. Taking actions away ends its current tokens."""
    if action and grant:
        fail("give --action (project robot) or --grant (system robot), not both", 2)
    body: dict[str, Any] = {}
    if action:
        body["actions"] = list(action)
    if grant:
        body["permissions"] = _grants(grant)
    if description is not None:
        body["description"] = description
    if not body:
        fail("nothing to change: give --action, --grant or --description", 2)
    _show_robot(ctx, remote(ctx).call("PATCH", f"/robots/{seg(name)}", json=body).json(), json_output)


@robots.command("rotate")
def robots_rotate(ctx: typer.Context, name: str, json_output: JsonOpt = False) -> None:
    """Give a robot a new secret (printed once); the old one stops working."""
    _show_robot(ctx, remote(ctx).call("POST", f"/robots/{seg(name)}/rotate").json(), json_output)


@robots.command("disable")
def robots_disable(ctx: typer.Context, name: str, json_output: JsonOpt = False) -> None:
    """Disable a robot."""
    _show_robot(ctx, remote(ctx).call("PATCH", f"/robots/{seg(name)}", json={"disabled": True}).json(), json_output)


@robots.command("enable")
def robots_enable(ctx: typer.Context, name: str, json_output: JsonOpt = False) -> None:
    """Enable a disabled robot."""
    _show_robot(ctx, remote(ctx).call("PATCH", f"/robots/{seg(name)}", json={"disabled": False}).json(), json_output)


@robots.command("delete")
def robots_delete(ctx: typer.Context, name: str, yes: YesOpt = False) -> None:
    """Delete a robot."""
    confirm(f"delete robot {name}", yes)
    remote(ctx).call("DELETE", f"/robots/{seg(name)}")
    err.print(f"deleted robot {name}")


def register(app: typer.Typer, admin: typer.Typer) -> None:
    for group in (projects, members, users, robots):
        admin.add_typer(group, name=group.info.name)
