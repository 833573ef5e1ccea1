"""`dockyard webhooks …`: webhook endpoints on a running registry (a client of /api/v1).

Connection options go at the end (or before the subcommand), as for `dockyard admin …`
(`dockyard webhooks --url https://registry.example.com -u alice list --project acme`).
Without `--project` a command acts on the system-wide hooks (system administrators).
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

from enum import Enum

import typer

from dockyard.cli.options import JsonOpt, YesOpt
from dockyard.cli.remote import confirm, err, out, remote, remote_group, seg, show
from dockyard.webhooks.formats import FORMATS

webhooks = remote_group("webhooks", "Webhooks: list, create, delete, deliveries, redeliver, ping, rotate-secret.")

# Enums so that typer checks the choice (exit 2) before anything is sent.
Format = Enum("Format", {f: f for f in FORMATS}, type=str)
DeliveryState = Enum("DeliveryState", {s: s for s in ("queued", "succeeded", "dead", "failed")}, type=str)


def check_event_types(values: list[str] | None) -> list[str] | None:
    """Unknown event types are a usage error (exit 2) before anything is sent."""
    from dockyard.domain.events import EVENT_TYPES

    for value in values or []:
        for t in (p.strip() for p in value.split(",")):
            if t and t not in EVENT_TYPES and not any(k.startswith(t + ".") for k in EVENT_TYPES):
                families = sorted({k.split(".", 1)[0] for k in EVENT_TYPES})
                raise typer.BadParameter(f"unknown event type {t!r}: a type from docs/events.md "
                                         f"or a family: {', '.join(families)}")
    return values


ProjectOpt = Annotated[Optional[str], typer.Option("--project", help="The project's hooks; omit for system-wide hooks.")]
HOOK_COLUMNS = ["id", "name", "enabled", "format", "url", "event_types", "repository_pattern", "tag_pattern",
                "consecutive_failures", "disabled_reason"]
DELIVERY_COLUMNS = ["id", "event_type", "repository", "state", "attempts", "last_status_code", "last_error", "created_at"]
ATTEMPT_COLUMNS = ["attempt", "outcome", "status_code", "duration_ms", "started_at", "error", "response_body"]


def _path(project: str | None, webhook_id: int | None = None, tail: str = "") -> str:
    path = "/system/webhooks" if project is None else f"/projects/{seg(project)}/webhooks"
    if webhook_id is not None:
        path += f"/{webhook_id}"
    return path + tail


def _with_secret(ctx: typer.Context, data: dict, json_output: bool) -> None:
    """The hook (with its secret in the JSON), or a table and then the secret on a line of its own."""
    if json_output or remote(ctx).json:
        out.print_json(json.dumps(data, default=str))
        return
    secret = data.pop("secret")
    show(ctx, data, HOOK_COLUMNS, False)
    err.print("signing secret (shown once; receivers verify webhook-signature with it):")
    out.print(secret, markup=False, highlight=False)


@webhooks.command("list")
def webhooks_list(ctx: typer.Context, project: ProjectOpt = None, json_output: JsonOpt = False) -> None:
    """List a project's webhooks, or the system-wide ones."""
    show(ctx, remote(ctx).get_all(_path(project)), HOOK_COLUMNS, json_output)


@webhooks.command("create")
def webhooks_create(
    ctx: typer.Context,
    url: str,
    project: ProjectOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Defaults to the URL's host.")] = None,
    format: Annotated[Format, typer.Option("--format", help="cloudevents, harbor or slack.")] = Format.cloudevents,
    event: Annotated[Optional[list[str]], typer.Option("--event", callback=check_event_types,
                                                       help="An event type or prefix (repeat); default: all.")] = None,
    repository: Annotated[Optional[str], typer.Option("--repository", help="Repository glob.")] = None,
    tag: Annotated[Optional[str], typer.Option("--tag", help="Tag glob.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it switched off.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Create a webhook; prints its signing secret once."""
    body = {"url": url, "name": name, "format": format.value, "event_types": event or [], "repository_pattern": repository,
            "tag_pattern": tag, "enabled": not disabled}
    _with_secret(ctx, remote(ctx).call("POST", _path(project), json=body).json(), json_output)


@webhooks.command("delete")
def webhooks_delete(ctx: typer.Context, webhook_id: int, project: ProjectOpt = None, yes: YesOpt = False) -> None:
    """Delete a webhook and its delivery log."""
    confirm(f"delete webhook {webhook_id}", yes)
    remote(ctx).call("DELETE", _path(project, webhook_id))
    err.print(f"deleted webhook {webhook_id}")


@webhooks.command("deliveries")
def webhooks_deliveries(
    ctx: typer.Context, webhook_id: int, project: ProjectOpt = None,
    state: Annotated[Optional[DeliveryState], typer.Option("--state", help="queued, succeeded, dead or failed.")] = None,
    attempts: Annotated[bool, typer.Option("--attempts", help="Also print every attempt of each delivery.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """The delivery log, newest first."""
    items = remote(ctx).get_all(_path(project, webhook_id, "/deliveries"), {"state": state.value} if state else None)
    if json_output or remote(ctx).json:
        out.print_json(json.dumps(items, default=str))
        return
    show(ctx, items, DELIVERY_COLUMNS, False)
    if attempts:
        for item in items:
            out.print(f"delivery {item['id']}:", markup=False, highlight=False)  # with its table, on stdout
            show(ctx, item["log"], ATTEMPT_COLUMNS, False)


@webhooks.command("redeliver")
def webhooks_redeliver(ctx: typer.Context, webhook_id: int, delivery_id: int, project: ProjectOpt = None,
                       json_output: JsonOpt = False) -> None:
    """Queue a delivery again (same webhook-id, a fresh attempt budget)."""
    data = remote(ctx).call("POST", _path(project, webhook_id, f"/deliveries/{delivery_id}/redeliver")).json()
    show(ctx, data, DELIVERY_COLUMNS, json_output)


@webhooks.command("ping")
def webhooks_ping(ctx: typer.Context, webhook_id: int, project: ProjectOpt = None, json_output: JsonOpt = False) -> None:
    """Send a webhook.ping now and print how the receiver answered."""
    data = remote(ctx).call("POST", _path(project, webhook_id, "/ping")).json()
    if json_output or remote(ctx).json:
        out.print_json(json.dumps(data, default=str))
    else:
        show(ctx, data["log"], ATTEMPT_COLUMNS, False)
    if data["state"] != "succeeded":  # the same exit code with or without --json
        raise typer.Exit(1)


@webhooks.command("rotate-secret")
def webhooks_rotate_secret(ctx: typer.Context, webhook_id: int, project: ProjectOpt = None,
                           json_output: JsonOpt = False) -> None:
    """A new signing secret, printed once; the old one also signs for webhook_secret_overlap_seconds."""
    _with_secret(ctx, remote(ctx).call("POST", _path(project, webhook_id, "/rotate-secret")).json(), json_output)


@webhooks.command("enable")
def webhooks_enable(ctx: typer.Context, webhook_id: int, project: ProjectOpt = None, json_output: JsonOpt = False) -> None:
    """Re-enable a webhook; deliveries pending when it was disabled go out (events while it was off are not sent)."""
    data = remote(ctx).call("PATCH", _path(project, webhook_id), json={"enabled": True}).json()
    show(ctx, data, HOOK_COLUMNS, json_output)


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.add_typer(webhooks, name="webhooks")
