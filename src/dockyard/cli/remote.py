"""The one way a `dockyard` command talks to a running registry's /api/v1.

`connect()` resolves the URL and the credentials (see `credentials()`) into a `Remote`, whose
`call()` turns API errors into one line with the OCI code and a non-zero exit. `remote_group()`
makes a sub-app that takes the connection options before its subcommand. Output is a Rich table
(`show()`), or JSON with `--json`. Conventions: dockyard.cli.options.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import typer
from typer.core import TyperGroup
from rich.markup import escape
from rich.table import Column, Table

from dockyard.cli.options import (
    DEFAULT_URL,
    JsonOpt,
    PassOpt,
    PassStdinOpt,
    PlainHttpOpt,
    UrlOpt,
    UserOpt,
    group,
)
from dockyard.client.credentials import CLIENT_HEADERS
from dockyard.client.tls import describe_connection_error, ssl_context
from dockyard.safe_text import one_line, safe_console

out = safe_console(soft_wrap=True)
err = safe_console(stderr=True)


@dataclass
class Remote:
    url: str
    username: str | None
    password: str | None
    json: bool
    saved_for: str | None = None  # the registry whose saved `dockyard login` credentials these are

    def client(self) -> httpx.Client:
        auth = (self.username, self.password or "") if self.username else None
        try:
            verify = ssl_context()
        except ValueError as exc:
            fail(str(exc))
        return httpx.Client(base_url=self.url.rstrip("/") + "/api/v1", auth=auth, timeout=60, trust_env=False,
                            headers=CLIENT_HEADERS, verify=verify)

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            with self.client() as client:
                resp = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            fail(describe_connection_error(self.url, exc))
        if resp.status_code >= 400:
            hint = ""
            if resp.status_code == 401 and not self.username:
                hint = ("; no credentials were given: run `dockyard login`, or add -u USER (and -p/--password-stdin) "
                        "at the end of the command, e.g. `dockyard admin projects list -u admin`, or set DOCKYARD_USERNAME "
                        "and DOCKYARD_PASSWORD")
            elif resp.status_code == 401 and self.saved_for:
                hint = (f" (used the credentials saved for {self.saved_for} as {self.username}; if the password changed, "
                        f"run `dockyard login {self.saved_for} -u {self.username}` again)")
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

    def listing(self, path: str, page: int | None, page_size: int, params: dict | None = None) -> list[dict]:
        """Every page, or only `page` when one is asked for."""
        if page is None:
            return self.get_all(path, params)
        return self.call("GET", path, params={**(params or {}), "page": page, "page_size": page_size}).json()


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


# -- credentials and connection ------------------------------------------------------------------


@dataclass
class Login:
    username: str | None
    password: str | None
    saved: bool = False  # taken from what `dockyard login` (or `docker login`) saved


def credentials(server: str, username: str | None, password: str | None, password_stdin: bool) -> Login:
    """The credentials of every remote command: --password / --password-stdin / DOCKYARD_PASSWORD; else what
    `dockyard login` (or `docker login`) saved for `server`, for the same account only; else a prompt on a
    terminal. Without a username nor saved credentials: anonymous."""
    from dockyard.client import credentials as creds

    if password_stdin:
        if password:
            fail("give --password or --password-stdin, not both", 2)
        password = sys.stdin.readline().rstrip("\r\n")
    other = None
    if password is None:
        try:
            stored = creds.saved_credentials(server)
        except creds.CredentialError as exc:
            fail(str(exc))
        if stored is not None and username in (None, stored.username):
            return Login(stored.username, stored.secret, saved=True)
        other = stored.username if stored is not None else None
    if username and password is None:
        if sys.stdin.isatty():
            password = typer.prompt(f"Password for {username}", hide_input=True)
        elif other is not None:
            # Never send one account's saved secret under another account's name.
            key = creds.server_key(server)
            fail(f"no password for {username}: the credentials saved for {key} are {other}'s; give --password, "
                 f"--password-stdin or DOCKYARD_PASSWORD, or `dockyard login {key} -u {username}`")
        else:
            fail("no password: use --password, --password-stdin or DOCKYARD_PASSWORD", 2)
    return Login(username, password)


def resolve_server(server: str | None) -> str:
    """--url / --registry / -r, else DOCKYARD_URL (both arrive as `server`), else the registry of the last
    `dockyard login`, else the local default."""
    from dockyard.client.credentials import current_registry

    return server or current_registry() or DEFAULT_URL


def connect(server: str | None, username: str | None = None, password: str | None = None, password_stdin: bool = False,
            plain_http: bool | None = None, json_output: bool = False) -> Remote:
    """The management-API client for `server` (host[:port] or URL; None: `resolve_server()`), with `credentials()`."""
    from dockyard.client.credentials import base_url, is_loopback, server_key

    server = resolve_server(server)
    login = credentials(server, username, password, password_stdin)
    url = base_url(server, plain_http)
    if login.saved and url.startswith("http://") and not is_loopback(server_key(server)):
        # A saved secret (stored by host:port, as docker does) must not cross the network in clear text
        # because one command named http://; an explicit --password is the user's own choice.
        fail(f"not sending the credentials saved for {server_key(server)} over plain HTTP; use https, or give "
             "--password, --password-stdin or DOCKYARD_PASSWORD")
    return Remote(url, login.username, login.password, json_output,
                  saved_for=server_key(server) if login.saved else None)


class RemoteGroup(TyperGroup):
    """Connection options are taken after the subcommand too (`dockyard events tail -r HOST`): they
    are moved before it, unless the subcommand has an option of that name itself (`--json`)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._hoist(ctx, list(args)))

    def _hoist(self, ctx, args: list[str]) -> list[str]:
        mine = _option_names(self.params)
        i = 0
        while i < len(args) and args[i] != "--" and args[i].startswith("-"):  # the group's own options
            i += 2 if args[i] in mine and mine[args[i]] else 1
        command = self.get_command(ctx, args[i]) if i < len(args) and args[i] != "--" else None
        if command is None:
            return args
        theirs = _option_names(command.params)
        moved, kept, j = [], [], i + 1
        while j < len(args):
            arg = args[j]
            if arg == "--":
                kept += args[j:]
                break
            name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2] if arg.startswith("-") else None
            if name in theirs or name not in mine:
                takes = name in theirs and theirs[name] and name == arg  # its value is the next argument
                kept += args[j : j + 1 + bool(takes)]
                j += 1 + bool(takes)
                continue
            takes = mine[name] and name == arg
            moved += args[j : j + 1 + bool(takes)]
            j += 1 + bool(takes)
        return args[:i] + moved + [args[i]] + kept


def _option_names(params) -> dict[str, bool]:
    """Option name -> whether it takes a value."""
    names: dict[str, bool] = {}
    for param in params:
        if getattr(param, "param_type_name", "") == "option":  # typer vendors its own click
            for opt in (*param.opts, *param.secondary_opts):
                names[opt] = not getattr(param, "is_flag", False) and not getattr(param, "count", False)
    return names


def remote_group(name: str, help_text: str) -> typer.Typer:
    """A sub-app whose connection options come after the subcommand and its arguments (RemoteGroup), or before it;
    its commands get the client with `remote(ctx)`."""
    sub = group(name, help_text)
    sub.info.cls = RemoteGroup

    @sub.callback()
    def connection(
        ctx: typer.Context,
        url: UrlOpt = None,
        username: UserOpt = None,
        password: PassOpt = None,
        password_stdin: PassStdinOpt = False,
        plain_http: PlainHttpOpt = None,
        json_output: JsonOpt = False,
    ) -> None:
        ctx.obj = connect(url, username, password, password_stdin, plain_http, json_output)

    return sub


def remote(ctx: typer.Context) -> Remote:
    return ctx.obj


# -- output ---------------------------------------------------------------------------------------


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


def confirm(what: str, yes: bool) -> None:
    if yes:
        return
    try:
        confirmed = typer.confirm(f"Really {what}?")
    except typer.Abort:  # end of input: a script without a terminal to answer on
        fail(f"refusing to {what} without confirmation: nothing answered the prompt; add --yes", 2)
    if not confirmed:
        raise typer.Exit(1)
