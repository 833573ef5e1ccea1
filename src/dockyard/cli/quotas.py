"""`dockyard quotas show|set`: a project's storage quota and usage through /api/v1/projects/{project}/quota."""

from __future__ import annotations

import re
from typing import Annotated, Optional

import typer

from dockyard.cli.options import JsonOpt
from dockyard.cli.remote import fail, remote, remote_group, seg, show
from dockyard.domain.quotas import human_bytes

QUOTA_COLUMNS = ["project", "quota", "used", "quota_bytes", "used_bytes"]
_SIZE = re.compile(r"(\d+)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB|K|M|G|T)?", re.I)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "K": 2**10, "KIB": 2**10, "M": 2**20, "MIB": 2**20, "G": 2**30, "GIB": 2**30, "T": 2**40, "TIB": 2**40}

quotas = remote_group("quotas", "Project storage quotas and usage (read-settings to show; administrators set them).")


def parse_size(text: str) -> int:
    """`500MiB`, `10G` (binary), `2GB` (decimal) or a byte count."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        fail(f"--limit {text!r}: expected a size such as 500MiB, 10GiB, 2GB or a number of bytes", 2)
    value = int(m.group(1)) * _UNITS[(m.group(2) or "").upper()]
    if value >= 2**63:
        fail(f"--limit {text!r} is too large", 2)
    return value


def _row(data: dict) -> dict:
    quota = data.get("quota_bytes")
    return {**data, "quota": "unlimited" if quota is None else human_bytes(quota), "used": human_bytes(data["used_bytes"])}


@quotas.command("show")
def quotas_show(ctx: typer.Context, project: str, json_output: JsonOpt = False) -> None:
    """Show a project's quota and the bytes its repositories use (read-settings)."""
    data = remote(ctx).call("GET", f"/projects/{seg(project)}/quota").json()
    show(ctx, data if json_output or remote(ctx).json else _row(data), QUOTA_COLUMNS, json_output)


@quotas.command("set")
def quotas_set(
    ctx: typer.Context,
    project: str,
    limit: Annotated[Optional[str], typer.Option("--limit", help="The quota: 500MiB, 10GiB, 2GB or bytes.")] = None,
    unlimited: Annotated[bool, typer.Option("--unlimited", help="Remove the quota.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Set or remove a project's quota (administrators; audited). Pushes past it are refused."""
    if (limit is None) == (not unlimited):
        fail("give --limit SIZE or --unlimited", 2)
    body = {"quota_bytes": None if unlimited else parse_size(limit)}
    data = remote(ctx).call("PUT", f"/projects/{seg(project)}/quota", json=body).json()
    show(ctx, data if json_output or remote(ctx).json else _row(data), QUOTA_COLUMNS, json_output)


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.add_typer(quotas, name="quotas")
