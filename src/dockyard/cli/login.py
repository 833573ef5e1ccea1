"""`dockyard login` and `dockyard get-login-password`: client-side credentials, as cloud CLIs do them.

`login` saves what every other remote command then uses (dockyard.cli.remote.credentials);
`get-login-password` exchanges it for a short-lived password for docker/podman/skopeo.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import httpx
import typer
from rich.markup import escape

from dockyard.cli.options import JsonOpt, PassOpt, PassStdinOpt, PlainHttpOpt, UrlOpt, UserOpt, console
from dockyard.cli.remote import credentials, fail, resolve_server
from dockyard.client.tls import describe_connection_error
from dockyard.safe_text import one_line


def login(
    server: Annotated[str, typer.Argument(help="Registry host[:port] or URL.")],
    # No environment variables here: `login` saves what it is given, so it asks rather than guess.
    username: Annotated[Optional[str], typer.Option("--username", "-u", help="User or robot name.")] = None,
    password: Annotated[Optional[str], typer.Option("--password", "-p", help="Password (prefer --password-stdin).")] = None,
    password_stdin: PassStdinOpt = False,
    plain_http: PlainHttpOpt = None,
) -> None:
    """Verify credentials and store them in docker's config.json, as `docker login` does."""
    from dockyard.client.credentials import (
        CredentialError, CredentialStore, base_url, set_current_registry, verify_login, write_docker_auth,
    )

    username = username or typer.prompt("Username")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif password is None:
        password = typer.prompt("Password", hide_input=True)
    url = base_url(server, plain_http)
    try:
        verify_login(url, username, password)
    except httpx.HTTPError as exc:
        fail(describe_connection_error(url, exc))
    except CredentialError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")  # the registry's words: text, never markup
        raise typer.Exit(1) from exc
    path = write_docker_auth(server, username, password)
    CredentialStore().put(server, username, password)
    set_current_registry(url)  # the default registry of every remote command from now on
    where = path or "Dockyard's credential store only: config.json sends this registry to a credential helper"
    console.print(f"Login Succeeded (credentials saved in {where}; {url} is now the default registry)")


def get_login_password(
    registry: UrlOpt = None,
    username: UserOpt = None,
    password: PassOpt = None,
    password_stdin: PassStdinOpt = False,
    plain_http: PlainHttpOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Print a short-lived password for `docker login --password-stdin` (like `aws ecr get-login-password`)."""
    from dockyard.client import credentials as creds

    registry = resolve_server(registry)
    key = creds.server_key(registry)
    found = credentials(registry, username, password, password_stdin)
    if found.username is None or found.password is None:
        console.print(f"[red]no credentials for {key}: run `dockyard login {key}` or set DOCKYARD_USERNAME/DOCKYARD_PASSWORD[/red]")
        raise typer.Exit(1)
    if found.saved:
        try:
            creds.refuse_clear_text(creds.base_url(registry, plain_http), registry)
        except creds.CredentialError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(1) from exc
    url = creds.base_url(registry, plain_http)
    try:
        secret = one_line(creds.fetch_login_password(url, found.username, found.password))
        typer.echo(json.dumps({"registry": key, "username": found.username, "password": secret}) if json_output else secret)
    except httpx.HTTPError as exc:
        fail(describe_connection_error(url, exc))
    except creds.CredentialError as exc:
        hint = (f" (used the credentials saved for {key} as {found.username}; if the password changed, "
                f"run `dockyard login {key} -u {found.username}` again)") if found.saved else ""
        console.print(f"[red]{escape(f'{exc}{hint}')}[/red]")
        raise typer.Exit(1) from exc


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.command("login")(login)
    app.command("get-login-password")(get_login_password)
