"""/api/v1/events: the change feed, listed by cursor or followed as server-sent events.

Visibility is the audit log's (action read-audit): administrators see every event, others name a
project in which they hold read-audit (its admins). See docs/events.md.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response
from starlette.responses import StreamingResponse

from dockyard.api.mgmt.common import PROJECT_HINT, Caller, CallerDep, Model
from dockyard.domain.events import EVENT_TYPES, Event, head, parse_cursor
from dockyard.domain.names import validate_name
from dockyard.errors import InvalidRequest, NotFound, TooManyRequests

router = APIRouter(prefix="/events", tags=["events"])

MAX_LIMIT = 1000
KEEPALIVE_SECONDS = 15.0
# Each open stream polls the database every event_poll_seconds from the shared thread pool: one
# reader must not be able to open them by the thousand.
MAX_STREAMS_PER_READER = 8
_streams: dict[str, int] = {}  # open streams per reader, in this process
_streams_lock = threading.Lock()


class EventOut(Model):
    id: int
    cursor: str
    key: str
    type: str
    occurred_at: datetime
    project: str | None
    repository: str | None
    digest: str | None
    tag: str | None
    actor: str | None
    request_id: str | None
    data: dict[str, Any]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _filters(caller: Caller, project: str | None, repository: str | None, types: list[str] | None,
             since: datetime | None, until: datetime | None) -> dict:
    """Authorize like GET /api/v1/audit and turn the query into EventLog.query arguments."""
    if repository is not None:
        validate_name(repository)
        owner = repository.split("/", 1)[0]
        if project is not None and project != owner:
            raise InvalidRequest(f"repository {repository} is not in project {project}")
        project = owner
    if project is None:
        caller.require_admin(PROJECT_HINT)
    else:
        caller.require_project(project, "read-audit")
    # Each distinct type once: repeats would only lengthen the query's OR (SQLite caps its depth).
    wanted = list(dict.fromkeys(t.strip() for value in (types or []) for t in value.split(",") if t.strip()))
    for t in wanted:
        if t not in EVENT_TYPES and not any(k.startswith(t + ".") for k in EVENT_TYPES):
            raise InvalidRequest(f"unknown event type {t[:64]!r}", detail={"type": t[:64]})
    # A project deleted and created again keeps its name: members of the new one (not administrators)
    # read only the events from its creation on, not the former project's.
    start = caller.services.events.incarnation(project) if project is not None and not caller.is_admin else None
    return {"project": project, "repository": repository, "types": wanted or None, "since": _utc(since),
            "until": _utc(until), "start": start}


def _after(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        return parse_cursor(value)
    except ValueError as exc:
        raise InvalidRequest(str(exc), detail={"after": value[:40]}) from None


ProjectQ = Annotated[str | None, Query(description="Required unless you are an administrator (needs read-audit).")]
RepositoryQ = Annotated[str | None, Query(description="Only this repository (implies its project).")]
TypeQ = Annotated[list[str] | None, Query(
    description="Event types (repeat, or comma-separated); a prefix without a dot (artifact) matches the family.")]
SinceQ = Annotated[datetime | None, Query(description="ISO 8601; inclusive.")]
UntilQ = Annotated[datetime | None, Query(description="ISO 8601; exclusive.")]
AfterQ = Annotated[str | None, Query(description="Continue after this event's `cursor` (the previous page's last).")]


@router.get("", response_model=list[EventOut], summary="Change-feed events, oldest first, by cursor")
def list_events(
    caller: CallerDep,
    request: Request,
    response: Response,
    project: ProjectQ = None,
    repository: RepositoryQ = None,
    type: TypeQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    after: AfterQ = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Events per page.")] = 100,
    latest: Annotated[bool, Query(description="The newest `limit` events (after `after`), still oldest first.")] = False,
):
    filters = _filters(caller, project, repository, type, since, until)
    position = _after(after)
    items = caller.services.events.query(**filters, after=position, limit=limit, latest=latest)
    # The cursor to continue from: the last event listed, or the one given (nothing new yet).
    cursor = items[-1].cursor if items else (after or "")
    response.headers["Dockyard-Next-Cursor"] = cursor
    if len(items) == limit and not latest:
        next_url = request.url.include_query_params(after=cursor)
        response.headers["Link"] = f'<{next_url.path}?{next_url.query}>; rel="next"'
    return [EventOut.model_validate(e.to_dict()) for e in items]


@router.get(
    "/stream",
    summary="Follow the change feed as server-sent events (text/event-stream)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "One SSE message per event."}},
)
async def stream_events(
    caller: CallerDep,
    request: Request,
    project: ProjectQ = None,
    repository: RepositoryQ = None,
    type: TypeQ = None,
    after: Annotated[str | None, Query(
        description="Start after this cursor (the Last-Event-ID header wins); default: only new events.")] = None,
    max_events: Annotated[int | None, Query(ge=1, le=100_000, description="Close the stream after this many.")] = None,
):
    filters = _filters(caller, project, repository, type, None, None)
    project_name = filters["project"]
    reader = f"{caller.principal.kind}:{caller.principal.name}"
    if _streams.get(reader, 0) >= MAX_STREAMS_PER_READER:
        raise TooManyRequests(f"at most {MAX_STREAMS_PER_READER} open event streams per account; close one first")
    services = caller.services
    start = _after(request.headers.get("last-event-id") or after)
    if start is None:
        start = await anyio.to_thread.run_sync(_head, services)
    poll = services.settings.event_poll_seconds

    async def messages():
        with _streams_lock:
            _streams[reader] = _streams.get(reader, 0) + 1
        try:
            async for message in _messages():
                yield message
        finally:
            with _streams_lock:
                _streams[reader] -= 1
                if not _streams[reader]:
                    del _streams[reader]

    async def _messages():
        position, sent, idle = start, 0, 0.0
        yield f"retry: {int(poll * 1000)}\n: dockyard events from {position[0]}-{position[1]}\n\n"
        while max_events is None or sent < max_events:
            # Checked again before every read, not only at connect: a reader removed from the
            # project, disabled, deleted or no longer an administrator stops receiving at once.
            if not await anyio.to_thread.run_sync(_still_allowed, caller, project_name):
                yield ": access revoked\n\n"
                return
            batch: list[Event] = await anyio.to_thread.run_sync(
                lambda: services.events.query(**filters, after=position, limit=200))
            for event in batch:
                yield _sse(event)
                position, sent = event.position, sent + 1
                if max_events is not None and sent >= max_events:
                    return
            if batch:
                idle = 0.0
                continue
            if await request.is_disconnected():
                return
            await asyncio.sleep(poll)  # other processes' events arrive by polling; so do ours
            idle += poll
            if idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                yield ": keepalive\n\n"

    return StreamingResponse(messages(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _still_allowed(caller: Caller, project: str | None) -> bool:
    """Whether the stream's reader may still read what it asked for (as `_filters` decided at connect)."""
    principal = caller.principal
    if principal.kind != "user":
        return bool(project) and "read-audit" in caller.services.access.project_actions(principal, project)
    try:
        user = caller.services.users.get(principal.name)
    except NotFound:
        return False
    if user.disabled or user.id != principal.id:
        return False
    fresh = user.principal()
    if project is None:
        return fresh.is_admin
    return "read-audit" in caller.services.access.project_actions(fresh, project)


def _head(services) -> tuple[int, int]:
    with services.db.read() as conn:
        return head(conn)


def _sse(event: Event) -> str:
    return f"id: {event.cursor}\nevent: {event.type}\ndata: {json.dumps(event.to_dict(), default=str)}\n\n"
