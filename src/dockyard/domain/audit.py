"""The audit log: who did what to which object, when, from where. Never holds secrets."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text

from dockyard import request_context
from dockyard.auth.principals import Principal
from dockyard.metadata.db import Database, aware, utcnow
from dockyard.metadata.models import audit_events

# Detail keys that must never reach the log, whatever a caller passes.
_SECRET_KEYS = {"password", "secret", "token", "refresh_token", "access_token", "authorization"}


def _clean(detail: dict | None) -> str | None:
    if not detail:
        return None
    return json.dumps({k: v for k, v in detail.items() if k.lower() not in _SECRET_KEYS}, default=str)


class AuditService:
    def __init__(self, db: Database):
        self.db = db

    def record(
        self,
        *,
        actor: Principal,
        action: str,
        object: str,
        outcome: str = "success",
        project: str | None = None,
        source_ip: str | None = None,
        user_agent: str | None = None,
        detail: dict | None = None,
    ) -> None:
        with self.db.write() as conn:
            conn.execute(
                audit_events.insert().values(
                    occurred_at=utcnow(),
                    actor=actor.name or "anonymous",
                    actor_kind=actor.kind,
                    action=action,
                    object=object[:500],
                    project=project,
                    outcome=outcome,
                    source_ip=source_ip,
                    user_agent=(user_agent or "")[:500] or None,
                    detail=_clean(detail),
                    request_id=request_context.request_id.get(),
                )
            )

    def record_refusal(
        self,
        *,
        actor: Principal,
        action: str,
        object: str,
        reason: str,
        code: str,
        window_seconds: int,
        keys_per_actor: int = 50,
        project: str | None = None,
        source_ip: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        """A refused request, as `outcome: failure`, aggregated: a client retrying a refused push (podman
        tries several formats; CI loops) must not flood the log. One row per (actor, action, object,
        reason, client address) per `window_seconds`: a repeat within the window adds to `detail.count` and moves
        `detail.last_at` instead of adding a row. An actor whose refusals already hold `keys_per_actor` rows
        in the window (random tags or repository names, each a new key) is counted on one `object: "*"` row
        per action instead, so one account cannot grow the table by a row per request."""
        now = utcnow()
        name = actor.name or "anonymous"
        object = object[:500]
        reason = reason[:1000]
        since = now - timedelta(seconds=window_seconds)
        with self.db.write() as conn:
            if self._add_to_recent(conn, name, action, object, reason, since, now, source_ip):
                return
            refusal_rows = conn.execute(
                select(func.count()).select_from(audit_events).where(
                    audit_events.c.actor == name,  # indexed
                    audit_events.c.occurred_at >= since,
                    audit_events.c.outcome == "failure",
                    audit_events.c.action.not_like("auth.%"),
                )
            ).scalar_one()
            if refusal_rows >= keys_per_actor:
                # Bounded: past the cap, every further key of this actor and action shares one row.
                object, reason = "*", f"more than {keys_per_actor} distinct refusals within {window_seconds}s"
                if self._add_to_recent(conn, name, action, object, reason, since, now, any_address=True):
                    return
            conn.execute(
                audit_events.insert().values(
                    occurred_at=now,
                    actor=name,
                    actor_kind=actor.kind,
                    action=action,
                    object=object,
                    project=None if object == "*" else project,
                    outcome="failure",
                    source_ip=source_ip,
                    user_agent=(user_agent or "")[:500] or None,
                    detail=_clean({"reason": reason, "code": code, "count": 1, "last_at": now.isoformat()}),
                    request_id=request_context.request_id.get(),
                )
            )

    def _add_to_recent(self, conn, name: str, action: str, object: str, reason: str, since: datetime, now: datetime,
                       source_ip: str | None = None, *, any_address: bool = False) -> bool:
        """Add one to the count of this key's row of the window, if there is one. The client address is part of
        the key (a stolen password used elsewhere must not be counted under the owner's address), except on the
        overflow row."""
        if not self.db.is_sqlite:
            # SQLite's write transaction is exclusive already; on PostgreSQL concurrent refusals of one key
            # would each insert a row or lose a count: take a lock for this key until the commit. The overflow
            # key (`*`) is only ever taken second, so two keys never deadlock.
            key = int.from_bytes(hashlib.sha256(f"{name}\0{action}\0{object}".encode()).digest()[:8], "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        recent = conn.execute(
            select(audit_events.c.id, audit_events.c.detail)
            .where(
                audit_events.c.actor == name,  # indexed
                audit_events.c.occurred_at >= since,
                audit_events.c.action == action,
                audit_events.c.object == object,
                audit_events.c.outcome == "failure",
                *([] if any_address else [audit_events.c.source_ip.is_(None) if source_ip is None
                                           else audit_events.c.source_ip == source_ip]),
            )
            .order_by(audit_events.c.id.desc())
            .limit(20)
        ).all()
        for row in recent:
            detail = json.loads(row.detail) if row.detail else {}
            if detail.get("reason") == reason and "count" in detail:
                detail["count"] += 1
                detail["last_at"] = now.isoformat()
                conn.execute(audit_events.update().where(audit_events.c.id == row.id).values(detail=json.dumps(detail)))
                return True
        return False

    def query(
        self,
        actor: str | None = None,
        action: str | None = None,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        outcome: str | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> tuple[list[dict], int]:
        conditions = []
        if actor:
            conditions.append(audit_events.c.actor == actor)
        if action:
            # "auth" matches auth.success and auth.failure: filter by prefix when no dot is given.
            conditions.append(audit_events.c.action == action if "." in action else audit_events.c.action.like(f"{action}.%"))
        if project:
            conditions.append(audit_events.c.project == project)
        if since:
            conditions.append(audit_events.c.occurred_at >= since)
        if until:
            conditions.append(audit_events.c.occurred_at < until)
        if outcome:
            conditions.append(audit_events.c.outcome == outcome)
        page, page_size = max(page, 1), min(max(page_size, 1), 100)
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(audit_events).where(*conditions)).scalar_one()
            rows = conn.execute(
                select(audit_events)
                .where(*conditions)
                .order_by(audit_events.c.id.desc())
                .offset((page - 1) * page_size)
                .limit(page_size)
            ).all()
        items = [
            {
                "id": r.id,
                "time": aware(r.occurred_at).isoformat(),
                "actor": r.actor,
                "actor_kind": r.actor_kind,
                "action": r.action,
                "object": r.object,
                "project": r.project,
                "outcome": r.outcome,
                "source_ip": r.source_ip,
                "user_agent": r.user_agent,
                "detail": json.loads(r.detail) if r.detail else None,
                "request_id": r.request_id,
            }
            for r in rows
        ]
        return items, total

    def purge(self, retention_days: int) -> int:
        cutoff = utcnow() - timedelta(days=retention_days)
        with self.db.write() as conn:
            return conn.execute(delete(audit_events).where(audit_events.c.occurred_at < cutoff)).rowcount
