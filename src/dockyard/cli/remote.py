"""`dockyard admin projects|members|users|robots`: a remote client of the management API.

Every group takes the connection options (`--url`, `--username`, `--password`, `--password-stdin`)
before its subcommand, or from DOCKYARD_URL / DOCKYARD_USERNAME / DOCKYARD_PASSWORD. Output is a
Rich table, or JSON with `--json`. API errors print their OCI code and message and exit non-zero.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Optional
from urllib.parse import quote

import httpx
import typer
from dockyard.safe_text import one_line, safe_console
from rich.markup import escape
from rich.table import Column, Table

from dockyard.client.credentials import CLIENT_HEADERS

DEFAULT_URL = "http://127.0.0.1:5000"
out = safe_console(soft_wrap=True)
err = safe_console(stderr=True)


@dataclass
class Remote:
    url: str
    username: str | None
    password: str | None
    json: bool

    def client(self) -> httpx.Client:
        auth = (self.username, self.password or "") if self.username else None
        return httpx.Client(base_url=self.url.rstrip("/") + "/api/v1", auth=auth, timeout=60, trust_env=False,
                            headers=CLIENT_HEADERS)

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            with self.client() as client:
                resp = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {self.url}: {exc}")
        if resp.status_code >= 400:
            hint = ""
            if resp.status_code == 401 and not self.username:
                hint = ("; no credentials were given: put -u USER (and -p/--password-stdin) before the subcommand, "
                        "e.g. `dockyard admin projects -u admin list`, or set DOCKYARD_USERNAME and DOCKYARD_PASSWORD")
            fail(describe_error(resp) + hint)
        return resp

    def get_all(self, path: str, params: dict | None = None) -> list[dict]:
        """Follow Link rel="next" through every page."""
        items: list[dict] = []
        params = {"page_size": 100, **(params or {})}
        resp = self.call("GET", path, params=params)
        while True:
            items.extend(resp.json())
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                return items
            resp = self.call("GET", nxt)


def describe_error(resp: httpx.Response) -> str:
    try:
        errors = resp.json()["errors"]
        parts = []
        for e in errors:
            text = f"{e.get('code', 'UNKNOWN')}: {e.get('message', '')}"
            if isinstance(e.get("detail"), list) and e["detail"] and isinstance(e["detail"][0], dict) and "field" in e["detail"][0]:
                text += " (" + "; ".join(f"{d['field']}: {d['problem']}" for d in e["detail"]) + ")"
            parts.append(text)
        return f"HTTP {resp.status_code} " + "; ".join(parts)
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code}: {resp.text[:200]}"


def fail(message: str, code: int = 1):
    err.print(f"[red]error:[/red] {escape(one_line(message))}", markup=True, highlight=False)
    raise typer.Exit(code)


def seg(value: str) -> str:
    """One URL path segment (robot names hold `$` and `+`)."""
    return quote(value, safe="")


# -- connection options, shared by every group --------------------------------------------------

UrlOpt = Annotated[str, typer.Option("--url", envvar="DOCKYARD_URL", help="Registry base URL.")]
UserOpt = Annotated[Optional[str], typer.Option("--username", "-u", envvar="DOCKYARD_USERNAME", help="Account to act as.")]
PassOpt = Annotated[
    Optional[str], typer.Option("--password", "-p", envvar="DOCKYARD_PASSWORD", help="Its password or robot secret.")
]
PassStdinOpt = Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def connect(
    ctx: typer.Context,
    url: UrlOpt = DEFAULT_URL,
    username: UserOpt = None,
    password: PassOpt = None,
    password_stdin: PassStdinOpt = False,
    json_output: JsonOpt = False,
) -> None:
    ctx.obj = Remote(url, username, resolve_password(username, password, password_stdin), json_output)


def resolve_password(username: str | None, password: str | None, password_stdin: bool) -> str | None:
    """--password, --password-stdin, or a prompt when a terminal is attached."""
    if password_stdin:
        if password:
            fail("give --password or --password-stdin, not both", 2)
        password = sys.stdin.readline().rstrip("\r\n")
    if username and password is None:
        if not sys.stdin.isatty():
            fail("no password: use --password, --password-stdin or DOCKYARD_PASSWORD", 2)
        password = typer.prompt(f"Password for {username}", hide_input=True)
    return password


def remote(ctx: typer.Context) -> Remote:
    return ctx.obj


def show(ctx: typer.Context, data: Any, columns: list[str], json_output: bool, title: str | None = None,
         whole: int = 1) -> None:
    if json_output or remote(ctx).json:
        out.print_json(json.dumps(data, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    # The first `whole` columns name the object (kid, robot, user) that the next command needs, and its state:
    # never cut them short on a narrow terminal; the others shrink instead.
    def column(name: str) -> Column:
        width = max([len(name)] + [len(_cell(row.get(name))) for row in rows])
        return Column(name, no_wrap=True, min_width=min(width, 72))

    table = Table(*[column(c) for c in columns[:whole]], *columns[whole:], title=title)
    for row in rows:
        table.add_row(*[escape(_cell(row.get(c))) for c in columns])
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(
            _cell(v) if not isinstance(v, dict) else one_line(f"{v.get('project')}: {','.join(v.get('actions', []))}")
            for v in value
        )
    if isinstance(value, dict):
        return json.dumps(value)  # escapes control characters itself
    return one_line(str(value))


def _group(name: str, help_text: str) -> typer.Typer:
    group = typer.Typer(name=name, help=help_text, no_args_is_help=True, add_completion=False)
    group.callback()(connect)
    return group


def _confirm(what: str, yes: bool) -> None:
    if yes:
        return
    try:
        confirmed = typer.confirm(f"Really {what}?")
    except typer.Abort:  # end of input: a script without a terminal to answer on
        fail(f"refusing to {what} without confirmation: nothing answered the prompt; add --yes", 2)
    if not confirmed:
        raise typer.Exit(1)


YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
PageOpt = Annotated[Optional[int], typer.Option("--page", help="Fetch only this page (default: all pages).")]
PageSizeOpt = Annotated[int, typer.Option("--page-size", help="Items per page (max 100).")]

PROJECT_COLUMNS = ["name", "public", "created_at"]
MEMBER_COLUMNS = ["username", "role", "created_at"]
USER_COLUMNS = ["username", "email", "is_admin", "disabled", "created_at", "password_changed_at"]
ROBOT_COLUMNS = ["name", "kind", "permissions", "disabled", "expires_at", "description", "created_by"]


def _list(r: Remote, path: str, page: int | None, page_size: int, params: dict | None = None) -> list[dict]:
    if page is None:
        return r.get_all(path, params)
    return r.call("GET", path, params={**(params or {}), "page": page, "page_size": page_size}).json()


# -- projects ---------------------------------------------------------------------------------

projects = _group("projects", "Projects on a running registry (via /api/v1).")


@projects.command("list")
def projects_list(ctx: typer.Context, page: PageOpt = None, page_size: PageSizeOpt = 50, json_output: JsonOpt = False) -> None:
    """List the projects you can see."""
    show(ctx, _list(remote(ctx), "/projects", page, page_size), PROJECT_COLUMNS, json_output)


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
def projects_delete(ctx: typer.Context, name: str, yes: YesOpt = False) -> None:
    """Delete an empty project (administrators)."""
    _confirm(f"delete project {name}", yes)
    remote(ctx).call("DELETE", f"/projects/{seg(name)}")
    err.print(f"deleted project {name}")


# -- members ----------------------------------------------------------------------------------

members = _group("members", "Project members and their roles (via /api/v1).")


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

users = _group("users", "User accounts (via /api/v1; administrators, except your own password).")

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
    show(ctx, _list(remote(ctx), "/users", page, page_size), USER_COLUMNS, json_output)


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
    _confirm(f"delete user {username}", yes)
    remote(ctx).call("DELETE", f"/users/{seg(username)}")
    err.print(f"deleted user {username}")


# -- robots -----------------------------------------------------------------------------------

robots = _group("robots", "Robot accounts for CI and automation (via /api/v1).")


def _show_robot(ctx: typer.Context, data: dict, json_output: bool) -> None:
    secret = data.pop("secret", None)
    if json_output or remote(ctx).json:
        out.print_json(json.dumps({**data, **({"secret": secret} if secret else {})}, default=str))
        return
    show(ctx, data, ROBOT_COLUMNS, False)
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
    show(ctx, _list(remote(ctx), "/robots", page, page_size, params), ROBOT_COLUMNS, json_output)


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
        permissions = []
        for item in grant:
            proj, sep, acts = item.partition("=")
            if not sep or not proj or not acts:
                fail(f"--grant {item!r}: expected PROJECT=ACTION[,ACTION]", 2)
            permissions.append({"project": proj, "actions": [a for a in acts.split(",") if a]})
        body["permissions"] = permissions
    _show_robot(ctx, remote(ctx).call("POST", "/robots", json=body).json(), json_output)


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
    _confirm(f"delete robot {name}", yes)
    remote(ctx).call("DELETE", f"/robots/{seg(name)}")
    err.print(f"deleted robot {name}")


GROUPS = {"projects": projects, "members": members, "users": users, "robots": robots}
"""Name -> Typer app; cli/__init__.py adds each (and cli/audit.py's) with `admin.add_typer(app, name=name)`."""
