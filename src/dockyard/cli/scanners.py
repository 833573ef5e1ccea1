"""`dockyard scanners list|add|show|remove`: external scanner adapters (Harbor Pluggable Scanner API) registered
on a running registry, through /api/v1/system/scanners (administrators). The built-in scanner is always there."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dockyard.cli.options import JsonOpt, YesOpt
from dockyard.cli.remote import confirm, err, remote, remote_group, seg, show

SCANNER_COLUMNS = ["name", "url", "has_authorization", "created_at"]

scanners = remote_group("scanners", "External scanner adapters (administrators; via /api/v1/system/scanners).")


@scanners.command("list")
def scanners_list(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """List the registered external scanners (a project picks one, or `builtin`, in its security policy)."""
    show(ctx, remote(ctx).call("GET", "/system/scanners").json(), SCANNER_COLUMNS, json_output)


@scanners.command("add")
def scanners_add(
    ctx: typer.Context,
    name: str,
    url: Annotated[str, typer.Option("--adapter-url", help="The adapter's base URL (without /api/v1).")],
    authorization_stdin: Annotated[
        bool, typer.Option("--authorization-stdin", help="Read the Authorization header value the adapter wants from stdin.")
    ] = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Ask the adapter for its metadata first.")] = True,
    json_output: JsonOpt = False,
) -> None:
    """Register a scanner adapter (audited)."""
    body: dict = {"name": name, "url": url, "verify": verify}
    if authorization_stdin:
        body["authorization"] = sys.stdin.readline().rstrip("\r\n")
    show(ctx, remote(ctx).call("POST", "/system/scanners", json=body).json(), SCANNER_COLUMNS, json_output)


@scanners.command("show")
def scanners_show(ctx: typer.Context, name: str, json_output: JsonOpt = False) -> None:
    """Ask a registered adapter for its metadata (name, vendor, version, what it consumes and produces); `builtin` describes
    the built-in scanner."""
    data = remote(ctx).call("GET", f"/system/scanners/{seg(name)}/metadata").json()
    show(ctx, data, ["name", "vendor", "version", "consumes", "produces"], json_output)


@scanners.command("remove")
def scanners_remove(ctx: typer.Context, name: str, yes: YesOpt = False) -> None:
    """Remove a scanner that no project uses (audited)."""
    confirm(f"remove scanner {name}", yes)
    remote(ctx).call("DELETE", f"/system/scanners/{seg(name)}")
    err.print(f"removed scanner {name}")


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.add_typer(scanners, name="scanners")

