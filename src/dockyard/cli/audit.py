"""`dockyard admin audit list`: the audit log through the management API (a remote client, as
cli/admin.py's groups are)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dockyard.cli.options import JsonOpt, PageSizeOpt
from dockyard.cli.remote import err, remote, remote_group, show

AUDIT_COLUMNS = ["time", "actor", "action", "object", "project", "outcome", "source_ip"]

audit = remote_group("audit", "The audit log (via /api/v1; administrators, or read-audit with --project).")


@audit.command("list")
def audit_list(
    ctx: typer.Context,
    actor: Annotated[Optional[str], typer.Option("--actor")] = None,
    action: Annotated[Optional[str], typer.Option("--action", help="e.g. member.add, or a prefix like member.")] = None,
    project: Annotated[Optional[str], typer.Option("--project")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="ISO 8601 time (inclusive).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="ISO 8601 time (exclusive).")] = None,
    outcome: Annotated[Optional[str], typer.Option("--outcome", help="success or failure.")] = None,
    page: Annotated[int, typer.Option("--page")] = 1,
    page_size: PageSizeOpt = 50,
    json_output: JsonOpt = False,
) -> None:
    """List audit events, newest first (one page)."""
    params = {k: v for k, v in {"actor": actor, "action": action, "project": project, "since": since,
                                "until": until, "outcome": outcome}.items() if v is not None}
    resp = remote(ctx).call("GET", "/audit", params={**params, "page": page, "page_size": page_size})
    events = resp.json()
    show(ctx, events, AUDIT_COLUMNS, json_output, title=None)
    if not (json_output or remote(ctx).json):
        err.print(f"page {page}: {len(events)} of {resp.headers.get('x-total-count', '?')} events", markup=False, highlight=False)


def register(app: typer.Typer, admin: typer.Typer) -> None:
    admin.add_typer(audit, name="audit")
