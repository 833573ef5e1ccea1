"""The change feed: every write records an event in the same transaction as the change.

Why an outbox table: a crash can then neither lose the event of a committed change nor emit one
for a change that rolled back, and every consumer (scan on push, webhooks, metrics, gate caches,
replication, the UI) reads one ordered feed instead of hooks scattered through HTTP handlers.
Consumers live in jobs/feed.py. `record` is called by the domain service that makes the change,
with the connection of its write transaction.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, literal_column, or_, select

from dockyard import request_context
from dockyard.metadata.db import Database, aware, utcnow
from dockyard.metadata.event_tables import event_cursors, events

# Every event type, with what it means. docs/events.md documents each one (tests/unit/test_docs.py).
EVENT_TYPES: dict[str, str] = {
    "artifact.pushed": "A manifest was stored or (re)tagged in a repository (data.via: push, promotion, retag; data.new: first stored here).",
    "artifact.deleted": "A manifest and the tags on it were deleted (data.via: api, retention).",
    "artifact.pulled": "Manifests were pulled; recorded in batches (data.count) as pull times are flushed.",
    "artifact.promoted": "An artifact was promoted or copied into another repository (data.source).",
    "tag.updated": "A tag was created or moved to another manifest (data.previous_digest when moved).",
    "tag.deleted": "A tag was removed; the manifest stays.",
    "blob.mounted": "A blob was mounted into a repository from another one (data.source).",
    "retention.completed": "A retention policy run (not a dry run) finished (data: policy, policy_id and the run's counts).",
    "gc.completed": "A garbage collection run finished (data: blobs and bytes reclaimed, skipped, orphans_reclaimed).",
    "scan.completed": "A vulnerability scan stored its report (data: scanner, summary of severity counts).",
    "scan.failed": "A vulnerability scan failed with no earlier good report to keep (data: scanner, error).",
    "scan.verdict_changed": "A new report changed the artifact's verdict (highest severity, none, failed; previous unscanned for the first).",
    "signature.attached": "A signature (cosign tag or bundle, Notation) was stored for an artifact (data: format, subject).",
    "quota.warning": "A write took a project's storage use across 80% of its quota (recorded with that write).",
    "quota.exceeded": "A write was refused for the project's quota (recorded in its own transaction after the rollback).",
    "repository.deleted": "A repository was deleted with its manifests and tags (data.via: api, project-delete, or empty when its last manifest went; data: manifests, tags, overridden immutable tags).",
    "project.created": "A project was created.",
    "project.updated": "A project's settings changed.",
    "project.deleted": "A project was deleted.",
    "member.added": "A member was added to a project.",
    "member.updated": "A project member's role changed.",
    "member.removed": "A member was removed from a project.",
    "robot.created": "A robot account was created.",
    "robot.updated": "A robot account was changed (permissions, secret, enabled).",
    "robot.deleted": "A robot account was deleted.",
    "policy.changed": "A policy changed (data.kind: tag_rules, retention, security, quota, webhook; project None: system-wide).",
    "webhook.disabled": "A webhook endpoint was disabled after too many consecutive dead deliveries (data: webhook, name).",
}


@dataclass(frozen=True)
class Event:
    id: int
    key: str
    txid: int
    occurred_at: datetime
    type: str
    project: str | None = None
    repository: str | None = None
    digest: str | None = None
    tag: str | None = None
    actor: str | None = None
    request_id: str | None = None
    data: dict = field(default_factory=dict)

    @property
    def position(self) -> tuple[int, int]:
        return (self.txid, self.id)

    @property
    def cursor(self) -> str:
        """The position as the API's opaque `after` cursor and the stream's event id."""
        return format_cursor(self.position)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cursor": self.cursor,
            "key": self.key,
            "type": self.type,
            "occurred_at": rfc3339(self.occurred_at),
            "project": self.project,
            "repository": self.repository,
            "digest": self.digest,
            "tag": self.tag,
            "actor": self.actor,
            "request_id": self.request_id,
            "data": self.data,
        }


def rfc3339(value: datetime) -> str:
    """UTC with a `Z`, as the REST API (pydantic) writes it, so the API, the SSE stream and webhook
    payloads spell `occurred_at` alike."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_from_row(row) -> Event:
    return Event(
        id=row.id, key=row.key, txid=row.txid, occurred_at=aware(row.occurred_at), type=row.type,
        project=row.project, repository=row.repository, digest=row.digest, tag=row.tag, actor=row.actor,
        request_id=row.request_id, data=json.loads(row.data) if row.data else {},
    )


def format_cursor(position: tuple[int, int]) -> str:
    return f"{position[0]}-{position[1]}"


def parse_cursor(text: str) -> tuple[int, int]:
    """`txid-id` (what `cursor` gives) or a bare event id (SQLite, where txid is always 0)."""
    txid, sep, event_id = text.strip().partition("-")
    try:
        position = (int(txid), int(event_id)) if sep else (0, int(txid))
    except ValueError:
        raise ValueError(f"not an event cursor: {text[:40]!r}") from None
    if position[0] < 0 or position[1] < 0:
        raise ValueError(f"not an event cursor: {text[:40]!r}")
    return position


# Built once: every write records events, and a statement with bound parameters is compiled once
# per dialect instead of once per call.
_INSERT = events.insert()
_INSERT_PG = events.insert().values(txid=literal_column("pg_current_xact_id()::text::bigint"))

PENDING_FLAG = "dockyard_events_pending"
RECORDED = "dockyard_events_recorded"  # this transaction's events, for immediate in-process subscribers


def record(
    conn: Connection,
    type: str,
    *,
    repository: str | None = None,
    project: str | None = None,
    digest: str | None = None,
    tag: str | None = None,
    data: dict | None = None,
    actor: str | None = None,
) -> None:
    """Add an event to the caller's open write transaction; it commits or rolls back with the change."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}: add it to EVENT_TYPES and docs/events.md")
    if project is None and repository:
        project = repository.split("/", 1)[0]
    values: dict[str, Any] = {
        "key": str(uuid.uuid4()),
        "occurred_at": utcnow(),
        "type": type,
        "project": project,
        "repository": repository,
        "digest": digest,
        "tag": tag,
        "actor": (actor if actor is not None else request_context.actor.get()),
        "request_id": request_context.request_id.get(),
        "data": json.dumps(data, default=str, sort_keys=True) if data else None,
    }
    conn.execute(_INSERT_PG if conn.dialect.name == "postgresql" else _INSERT, values)
    conn.info[PENDING_FLAG] = True  # the after-commit hook wakes local consumers (jobs/feed.py)
    conn.info.setdefault(RECORDED, []).append(Event(
        id=0, key=values["key"], txid=0, occurred_at=values["occurred_at"], type=type, project=project,
        repository=repository, digest=digest, tag=tag, actor=values["actor"], request_id=values["request_id"],
        data=data or {},
    ))


def visible_clause(conn: Connection):
    """On PostgreSQL only events of transactions older than every running one are read, so a
    consumer never passes a position that a slower transaction could still fill in."""
    if conn.dialect.name == "postgresql":
        return events.c.txid < literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    return None


def after_clause(position: tuple[int, int]):
    txid, event_id = position
    return or_(events.c.txid > txid, and_(events.c.txid == txid, events.c.id > event_id))


def read_after(conn: Connection, position: tuple[int, int], limit: int) -> list[Event]:
    """The next `limit` committed events after `position`, in feed order."""
    query = select(events).where(after_clause(position))
    visible = visible_clause(conn)
    if visible is not None:
        query = query.where(visible)
    rows = conn.execute(query.order_by(events.c.txid, events.c.id).limit(limit)).all()
    return [event_from_row(r) for r in rows]


def head(conn: Connection) -> tuple[int, int]:
    """The position of the newest readable event ((0, 0) when the feed is empty)."""
    query = select(events.c.txid, events.c.id)
    visible = visible_clause(conn)
    if visible is not None:
        query = query.where(visible)
    row = conn.execute(query.order_by(events.c.txid.desc(), events.c.id.desc()).limit(1)).first()
    return (row.txid, row.id) if row else (0, 0)


class EventLog:
    """Reading and pruning the feed: the API's query, the CLI's tail and the retention job."""

    def __init__(self, db: Database):
        self.db = db

    def query(
        self,
        *,
        projects: set[str] | None = None,
        project: str | None = None,
        repository: str | None = None,
        types: list[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[int, int] | None = None,
        start: tuple[int, int] | None = None,
        limit: int = 100,
        latest: bool = False,
    ) -> list[Event]:
        """Events in feed order (the order durable consumers see). `projects` (None: all) is the
        caller's visibility; `after` the position to continue from (a page's last event's cursor, or
        a tail's). On PostgreSQL only settled events are listed (see visible_clause), so paging
        or tailing by cursor never skips an event that committed late with a lower id."""
        conditions = []
        if projects is not None:
            if not projects:
                return []
            conditions.append(events.c.project.in_(sorted(projects)))
        if project:
            conditions.append(events.c.project == project)
        if repository:
            conditions.append(events.c.repository == repository)
        if types:
            # "artifact" matches artifact.pushed, artifact.deleted …: a prefix when no dot is given.
            conditions.append(or_(*[
                events.c.type == t if "." in t else events.c.type.like(f"{t}.%") for t in types
            ]))
        if since:
            conditions.append(events.c.occurred_at >= since)
        if until:
            conditions.append(events.c.occurred_at < until)
        if after is not None:
            conditions.append(after_clause(after))
        if start is not None:  # this position and later (see `incarnation`)
            conditions.append(after_clause((start[0], start[1] - 1)))
        with self.db.read() as conn:
            visible = visible_clause(conn)
            if visible is not None:
                conditions.append(visible)
            order = (events.c.txid.desc(), events.c.id.desc()) if latest else (events.c.txid, events.c.id)
            rows = conn.execute(select(events).where(*conditions).order_by(*order).limit(limit)).all()
        found = [event_from_row(r) for r in rows]
        return found[::-1] if latest else found  # `latest`: the newest `limit`, still oldest first

    def incarnation(self, project: str) -> tuple[int, int] | None:
        """The position of the project's latest `project.created`: events name their project, so a
        project deleted and created again (by anyone) shares its name with the former one, whose
        events its members must not read from there on. None: created before the feed existed."""
        with self.db.read() as conn:
            row = conn.execute(
                select(events.c.txid, events.c.id)
                .where(events.c.project == project, events.c.type == "project.created")
                .order_by(events.c.txid.desc(), events.c.id.desc()).limit(1)
            ).first()
        return (row.txid, row.id) if row else None

    def latest_id(self) -> int:
        with self.db.read() as conn:
            return conn.execute(select(func.max(events.c.id))).scalar() or 0

    def prune(self, retention_days: int, *, now: datetime | None = None) -> int:
        """Delete events older than the retention that every durable consumer has passed."""
        cutoff = (now or utcnow()) - timedelta(days=retention_days)
        with self.db.write() as conn:
            cursors = conn.execute(select(event_cursors.c.txid, event_cursors.c.event_id)).all()
            condition = events.c.occurred_at < cutoff
            if cursors:
                lowest = min((c.txid, c.event_id) for c in cursors)
                condition = and_(condition, ~after_clause(lowest))
            return conn.execute(delete(events).where(condition)).rowcount or 0
