"""`dockyard events tail [--follow]`: the change feed of a running registry (via /api/v1/events).

Connects like the other remote groups (`--url`, `-u`, `-p`/`--password-stdin` at the end or before the
subcommand, else DOCKYARD_URL / DOCKYARD_USERNAME / DOCKYARD_PASSWORD, else the last `dockyard login`). `--follow` reads the server-sent event
stream (`/api/v1/events/stream`) and, when the connection drops, reconnects with Last-Event-ID, so
no event is skipped or shown twice. Visibility is the audit log's: administrators, or --project.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import httpx
import typer
from rich.markup import escape

from dockyard.cli.options import JsonOpt
from dockyard.cli.remote import Remote, describe_error, fail, out, remote, remote_group
from dockyard.cli.webhooks import check_event_types
from dockyard.safe_text import one_line

events = remote_group("events", "The change feed of a running registry (via /api/v1/events).")

RECONNECT_ATTEMPTS = 5


def _params(project: str | None, repository: str | None, types: list[str] | None) -> dict:
    params: dict = {}
    if project:
        params["project"] = project
    if repository:
        params["repository"] = repository
    if types:
        params["type"] = ",".join(types)
    return params


def _print(event: dict, as_json: bool) -> None:
    if as_json:
        out.print(json.dumps(event, default=str), soft_wrap=True, highlight=False, markup=False)
        return
    where = event.get("repository") or event.get("project") or "-"
    if event.get("tag"):
        where += f":{event['tag']}"
    elif event.get("digest"):
        where += f"@{event['digest'][:19]}"
    data = json.dumps(event.get("data") or {}, sort_keys=True)
    line = f"{event['occurred_at']}  {event['type']:<22} {where}  {event.get('actor') or '-'}  {data}"
    out.print(escape(one_line(line)), soft_wrap=True, highlight=False)


@events.command("tail")
def tail(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Option("--project", help="Only this project (required unless admin).")] = None,
    repository: Annotated[Optional[str], typer.Option("--repository", help="Only this repository.")] = None,
    types: Annotated[Optional[list[str]], typer.Option(
        "--type", callback=check_event_types, help="Event type, or a family such as artifact; repeatable.")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, max=1000, help="Recent events to show first.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events as they happen.")] = False,
    count: Annotated[Optional[int], typer.Option(
        "--count", min=1, help="With --follow: exit after this many new events.")] = None,
    after: Annotated[Optional[str], typer.Option(
        "--after", help="Start after this event cursor (an event's `cursor`) instead of at the latest events.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Print the most recent events, oldest first; with --follow, then stream new ones."""
    r = remote(ctx)
    as_json = json_output or r.json
    params = _params(project, repository, types)
    cursor = after
    if lines:
        window = {"after": after} if after else {}
        resp = r.call("GET", "/events", params={**params, **window, "limit": lines, "latest": "true"})
        for event in resp.json():
            _print(event, as_json)
        cursor = resp.headers.get("dockyard-next-cursor") or after
    if not follow:
        return
    if cursor is None:  # start at the feed's head: what happens from now on
        cursor = r.call("GET", "/events", params={**params, "limit": 1, "latest": "true"}).headers.get(
            "dockyard-next-cursor") or None
    _follow(r, params, cursor, count, as_json)


def _follow(r: Remote, params: dict, cursor: str | None, count: int | None, as_json: bool) -> None:
    shown, failures = 0, 0
    while count is None or shown < count:
        headers = {"Accept": "text/event-stream"}
        if cursor:
            headers["Last-Event-ID"] = cursor
        try:
            with r.client() as client, client.stream(
                "GET", "/events/stream", params={**params, **({"max_events": count - shown} if count else {})},
                headers=headers, timeout=httpx.Timeout(60, read=None),
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    fail(describe_error(resp))
                failures = 0
                for message in _messages(resp.iter_lines()):
                    if "data" not in message:
                        continue
                    _print(json.loads(message["data"]), as_json)
                    cursor = message.get("id", cursor)
                    shown += 1
                    if count is not None and shown >= count:
                        return
        except httpx.HTTPError as exc:
            failures += 1
            if failures > RECONNECT_ATTEMPTS:
                fail(f"lost the event stream of {r.url}: {exc}")
            time.sleep(min(2 ** failures, 30))  # back off, then resume after the last event shown


def _messages(lines):
    """Server-sent events: fields until a blank line; comments (`:`) ignored."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if fields:
                yield fields
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value
    if fields:
        yield fields


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.add_typer(events, name="events")  # events tail [--follow]
