"""Webhook endpoints (per project, or system-wide) and their delivery log.

Authorization is the caller's (api/mgmt/webhooks.py): project admins for a project's hooks,
system administrators for system hooks. This service checks what only it can: the URL's target
(targets.py) with the caller's standing, the filters, and that a hook belongs to the project it is
asked for. Every change records a `policy.changed` event (data.kind webhook) in its transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from dockyard.domain.events import EVENT_TYPES, record
from dockyard.paging import Page, page_bounds
from dockyard.webhooks import lanes, targets
from dockyard.webhooks.formats import FORMATS
from dockyard.webhooks.signing import new_secret
from dockyard.errors import Denied, InvalidRequest, NotFound
from dockyard.metadata.db import Database, aware, utcnow
from dockyard.metadata.webhook_tables import webhook_attempts, webhook_deliveries, webhooks
from dockyard.policy.tag_patterns import glob_matches, validate_new_tag_glob, validate_repository_glob

MAX_EVENT_TYPES = 64
# Each hook is one delivery row and one outbound POST per matching event: without a cap a project
# admin turns every push into thousands of requests (to a third party's URL, too).
MAX_WEBHOOKS_PER_SCOPE = 20
SYSTEM = None  # the `project` of a system-wide hook
# An administrator's switch-off (say, of a hook aimed at someone else's server) is not the project's to undo.
ADMIN_DISABLED = "disabled by an administrator"


@dataclass(frozen=True)
class WebhookConfig:
    """The webhook settings (settings.py, section webhooks), and where the registry is for payloads."""

    registry_url: str = "http://127.0.0.1:5000"
    timeout_seconds: float = 10.0
    max_attempts: int = 8
    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 3600.0
    disable_after: int = 10
    allow_private_targets: bool = False
    secret_overlap_seconds: int = 86400


@dataclass(frozen=True)
class Webhook:
    id: int
    project: str | None
    name: str
    url: str
    format: str
    event_types: list[str]
    repository_pattern: str | None
    tag_pattern: str | None
    enabled: bool
    private_target: bool
    consecutive_failures: int
    disabled_reason: str | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime


def webhook_of(row) -> Webhook:
    return Webhook(
        id=row.id, project=row.project, name=row.name, url=row.url, format=row.format,
        event_types=json.loads(row.event_types or "[]"), repository_pattern=row.repository_pattern,
        tag_pattern=row.tag_pattern, enabled=row.enabled, private_target=row.private_target,
        consecutive_failures=row.consecutive_failures, disabled_reason=row.disabled_reason,
        created_by=row.created_by, created_at=aware(row.created_at), updated_at=aware(row.updated_at),
    )


def secret_context(webhook_id: int) -> str:
    """Associated data of the sealed secret: a ciphertext copied onto another hook does not open."""
    return f"webhook:{webhook_id}"


def type_matches(event_type: str, wanted: list[str]) -> bool:
    """Empty: every type; `artifact` (no dot) matches every artifact.* type."""
    return not wanted or any(event_type == t or ("." not in t and event_type.startswith(t + ".")) for t in wanted)


def matches(hook: Webhook, event_type: str, project: str | None, repository: str | None, tag: str | None,
            tags: list[str] | None = None) -> bool:
    """Whether `hook` wants this event. Project hooks see their project's events; their repository
    glob is over the path inside the project (`app/*`), a system hook's over the full name. The tag
    filter matches the event's `tag` or any of `tags` (artifact.pushed's data.tags)."""
    if hook.project is not None and project != hook.project:
        return False
    if not type_matches(event_type, hook.event_types):
        return False
    if hook.repository_pattern:
        if not repository:
            return False
        name = repository
        if hook.project is not None and name.startswith(hook.project + "/"):
            name = name[len(hook.project) + 1 :]
        if not glob_matches(name, hook.repository_pattern):
            return False
    if hook.tag_pattern:
        candidates = ([tag] if tag else []) + [t for t in (tags or []) if isinstance(t, str)]
        if not any(glob_matches(t, hook.tag_pattern) for t in candidates):
            return False
    return True


def validate_event_types(types: list[str] | None) -> list[str]:
    types = list(types or [])
    if len(types) > MAX_EVENT_TYPES:
        raise InvalidRequest(f"at most {MAX_EVENT_TYPES} event types")
    for t in types:
        if not isinstance(t, str) or not (t in EVENT_TYPES or ("." not in t and any(k.startswith(t + ".") for k in EVENT_TYPES))):
            raise InvalidRequest(
                f"unknown event type {str(t)[:64]!r}: use a type from docs/events.md or a prefix such as `artifact`",
                detail={"event_type": str(t)[:64]},
            )
    return sorted(set(types))


def delivery_dict(row, attempts: list[dict] | None = None) -> dict[str, Any]:
    out = {
        "id": row.id, "webhook_id": row.webhook_id, "event_key": row.event_key, "event_type": row.event_type,
        "repository": row.repository or None, "state": row.state, "attempts": row.attempts,
        "max_attempts": row.max_attempts, "next_attempt_at": aware(row.next_attempt_at),
        "last_status_code": row.last_status_code, "last_error": row.last_error,
        "created_at": aware(row.created_at), "finished_at": aware(row.finished_at),
    }
    if attempts is not None:
        out["log"] = attempts
    return out


def attempt_dict(row) -> dict[str, Any]:
    return {
        "attempt": row.attempt, "started_at": aware(row.started_at), "duration_ms": row.duration_ms,
        "outcome": row.outcome, "status_code": row.status_code, "response_body": row.response_body,
        "error": row.error,
    }


class WebhookService:
    def __init__(self, db: Database, ring, jobs, config: WebhookConfig, *, resolver: targets.Resolver = targets.system_resolver):
        self.db = db
        self.ring = ring  # auth/secret_box.KeyRing: seals the secrets at rest
        self.jobs = jobs
        self.config = config
        self.resolver = resolver

    # -- endpoints -------------------------------------------------------------------------

    def _check_target(self, url: str, *, caller_is_admin: bool) -> bool:
        """Validate and classify the URL; returns whether it is an (allowed) internal target."""
        target = targets.resolve(url, self.resolver)
        targets.check(target, internal_allowed=caller_is_admin and self.config.allow_private_targets)
        return target.internal

    def _row(self, conn: Connection, webhook_id: int, project: str | None):
        row = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
        if row is None or row.project != project:
            where = f"project {project}" if project is not None else "the system hooks"
            raise NotFound(f"webhook {webhook_id} does not exist in {where}", detail={"webhook": webhook_id})
        return row

    def get(self, webhook_id: int, project: str | None) -> Webhook:
        with self.db.read() as conn:
            return webhook_of(self._row(conn, webhook_id, project))

    def list(self, project: str | None, page: int = 1, page_size: int = 50) -> Page[Webhook]:
        limit, offset = page_bounds(page, page_size)
        where = webhooks.c.project.is_(None) if project is None else webhooks.c.project == project
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(webhooks).where(where)).scalar_one()
            rows = conn.execute(select(webhooks).where(where).order_by(webhooks.c.id).limit(limit).offset(offset)).all()
        return Page([webhook_of(r) for r in rows], int(total), page, page_size)

    def create(
        self, project: str | None, *, name: str, url: str, format: str = "cloudevents",
        event_types: list[str] | None = None, repository_pattern: str | None = None, tag_pattern: str | None = None,
        enabled: bool = True, created_by: str | None = None, caller_is_admin: bool = False,
    ) -> tuple[Webhook, str]:
        """A new hook and its secret (returned once; only the sealed form is kept)."""
        values = self._validated(name=name, format=format, event_types=event_types,
                                 repository_pattern=repository_pattern, tag_pattern=tag_pattern)
        private = self._check_target(url, caller_is_admin=caller_is_admin)
        secret = new_secret()
        now = utcnow()
        with self.db.write() as conn:
            scope = webhooks.c.project.is_(None) if project is None else webhooks.c.project == project
            if conn.execute(select(func.count()).select_from(webhooks).where(scope)).scalar_one() >= MAX_WEBHOOKS_PER_SCOPE:
                raise InvalidRequest(f"at most {MAX_WEBHOOKS_PER_SCOPE} webhooks per project (and system-wide)",
                                     detail={"limit": MAX_WEBHOOKS_PER_SCOPE})
            webhook_id = conn.execute(
                insert(webhooks).values(
                    project=project, url=url, enabled=enabled, secret_sealed="", private_target=private,
                    consecutive_failures=0, created_by=created_by, created_at=now, updated_at=now, **values,
                ).returning(webhooks.c.id)
            ).scalar_one()
            conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(
                secret_sealed=self.ring.seal(secret.encode(), secret_context(webhook_id))))
            self._changed(conn, project, webhook_id, "created")
            row = self._row(conn, webhook_id, project)
        return webhook_of(row), secret

    def update(self, webhook_id: int, project: str | None, *, caller_is_admin: bool = False, **changes: Any) -> Webhook:
        """Change url, name, format, filters or `enabled`. Re-enabling clears the failure count and
        sends the deliveries that were pending when it was disabled (events while it was off matched nothing)."""
        allowed = {"name", "url", "format", "event_types", "repository_pattern", "tag_pattern", "enabled"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidRequest(f"cannot change {', '.join(sorted(unknown))}")
        values = self._validated(**{k: v for k, v in changes.items() if k not in ("url", "enabled")})
        if "url" in changes:
            values["url"] = changes["url"]
            values["private_target"] = self._check_target(changes["url"], caller_is_admin=caller_is_admin)
        now = utcnow()
        with self.db.write() as conn:
            row = self._row(conn, webhook_id, project)
            if "enabled" in changes and changes["enabled"] is not None:
                values["enabled"] = bool(changes["enabled"])
                if values["enabled"] and not row.enabled:
                    if row.disabled_reason == ADMIN_DISABLED and not caller_is_admin:
                        raise Denied("an administrator disabled this webhook; only an administrator may enable it again",
                                     detail={"webhook": webhook_id})
                    values.update(consecutive_failures=0, disabled_reason=None)
                elif not values["enabled"]:
                    values["disabled_reason"] = ADMIN_DISABLED if caller_is_admin else "disabled by a project admin"
            if values:
                conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(updated_at=now, **values))
                self._changed(conn, project, webhook_id, "updated", fields=sorted(values))
            if values.get("enabled") and not row.enabled:
                lanes.resume(conn, self.jobs, webhook_id, now)
            row = self._row(conn, webhook_id, project)
        return webhook_of(row)

    def delete(self, webhook_id: int, project: str | None) -> None:
        with self.db.write() as conn:
            self._row(conn, webhook_id, project)
            ids = select(webhook_deliveries.c.id).where(webhook_deliveries.c.webhook_id == webhook_id)
            conn.execute(delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(ids)))
            conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id))
            conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))
            self._changed(conn, project, webhook_id, "deleted")

    def rotate_secret(self, webhook_id: int, project: str | None) -> tuple[Webhook, str]:
        """A new secret, in force for the next attempt. The old one signs too (a second signature)
        for `secret_overlap_seconds`, so receivers can switch without losing deliveries."""
        secret = new_secret()
        now = utcnow()
        with self.db.write() as conn:
            row = self._row(conn, webhook_id, project)
            overlap = self.config.secret_overlap_seconds
            conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(
                secret_sealed=self.ring.seal(secret.encode(), secret_context(webhook_id)), updated_at=now,
                previous_secret_sealed=row.secret_sealed if overlap else None,
                previous_secret_until=now + timedelta(seconds=overlap) if overlap else None))
            self._changed(conn, project, webhook_id, "secret_rotated")
            row = self._row(conn, webhook_id, project)
        return webhook_of(row), secret

    def secret(self, row) -> str:
        return self.ring.open(row.secret_sealed, secret_context(row.id)).decode()

    def signing_secrets(self, row) -> list[str]:
        """The secret, then the previous one while a rotation's overlap lasts."""
        secrets = [self.secret(row)]
        until = aware(row.previous_secret_until)
        if row.previous_secret_sealed and until is not None and utcnow() < until:
            secrets.append(self.ring.open(row.previous_secret_sealed, secret_context(row.id)).decode())
        return secrets

    def _validated(self, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "name" in fields and fields["name"] is not None:
            name = str(fields["name"]).strip()
            if not name or len(name) > 100 or any(ord(ch) < 0x20 for ch in name):
                raise InvalidRequest("name must be 1-100 printable characters")
            out["name"] = name
        if "format" in fields and fields["format"] is not None:
            if fields["format"] not in FORMATS:
                raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", detail={"format": str(fields['format'])[:40]})
            out["format"] = fields["format"]
        if "event_types" in fields:
            out["event_types"] = json.dumps(validate_event_types(fields["event_types"]))
        if "repository_pattern" in fields:
            pattern = fields["repository_pattern"] or None
            out["repository_pattern"] = validate_repository_glob(pattern) if pattern else None
        if "tag_pattern" in fields:
            pattern = fields["tag_pattern"] or None
            out["tag_pattern"] = validate_new_tag_glob(pattern) if pattern else None
        return out

    @staticmethod
    def _changed(conn: Connection, project: str | None, webhook_id: int, change: str, **extra: Any) -> None:
        record(conn, "policy.changed", project=project,
               data={"kind": "webhook", "webhook": webhook_id, "change": change, **extra})

    # -- the delivery log -----------------------------------------------------------------

    def deliveries(self, webhook_id: int, project: str | None, page: int = 1, page_size: int = 50,
                   state: str | None = None) -> Page[dict]:
        """Newest first, each with its attempts (status, latency, response code, truncated body)."""
        limit, offset = page_bounds(page, page_size)
        where = [webhook_deliveries.c.webhook_id == webhook_id]
        if state:
            where.append(webhook_deliveries.c.state == state)
        with self.db.read() as conn:
            self._row(conn, webhook_id, project)
            total = conn.execute(select(func.count()).select_from(webhook_deliveries).where(*where)).scalar_one()
            rows = conn.execute(select(webhook_deliveries).where(*where)
                                .order_by(webhook_deliveries.c.id.desc()).limit(limit).offset(offset)).all()
            log: dict[int, list[dict]] = {r.id: [] for r in rows}
            if rows:
                for a in conn.execute(select(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(list(log)))
                                      .order_by(webhook_attempts.c.id)).all():
                    log[a.delivery_id].append(attempt_dict(a))
        return Page([delivery_dict(r, log[r.id]) for r in rows], int(total), page, page_size)

    def delivery(self, webhook_id: int, project: str | None, delivery_id: int) -> dict:
        with self.db.read() as conn:
            self._row(conn, webhook_id, project)
            return self._delivery(conn, webhook_id, delivery_id)

    @staticmethod
    def _delivery(conn: Connection, webhook_id: int, delivery_id: int) -> dict:
        row = conn.execute(select(webhook_deliveries).where(
            webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.webhook_id == webhook_id)).first()
        if row is None:
            raise NotFound(f"delivery {delivery_id} of webhook {webhook_id} does not exist",
                           detail={"delivery": delivery_id})
        attempts = conn.execute(select(webhook_attempts).where(webhook_attempts.c.delivery_id == delivery_id)
                                .order_by(webhook_attempts.c.id)).all()
        return delivery_dict(row, [attempt_dict(a) for a in attempts])

    def purge_deliveries(self, retention_days: int, *, now: datetime | None = None) -> int:
        """Drop finished deliveries (and their attempts) older than the retention; queued ones stay."""
        cutoff = (now or utcnow()) - timedelta(days=retention_days)
        with self.db.write() as conn:
            old = select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.state != "queued", webhook_deliveries.c.finished_at < cutoff)
            conn.execute(delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(old)))
            return conn.execute(delete(webhook_deliveries).where(
                webhook_deliveries.c.state != "queued", webhook_deliveries.c.finished_at < cutoff)).rowcount or 0

    def redeliver(self, webhook_id: int, project: str | None, delivery_id: int) -> dict:
        """Send a finished delivery again (same webhook-id, a fresh attempt budget), in its lane's order."""
        now = utcnow()
        with self.db.write() as conn:
            self._row(conn, webhook_id, project)
            current = self._delivery(conn, webhook_id, delivery_id)
            if current["state"] != "queued":
                conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(
                    state="queued", max_attempts=current["attempts"] + self.config.max_attempts, finished_at=None))
                lanes.place(conn, self.jobs, delivery_id, webhook_id, current["repository"] or "", now)
            return self._delivery(conn, webhook_id, delivery_id)


def delivery_outcomes(db: Database) -> dict[str, int]:
    """Attempts by outcome (`succeeded`, `failed`) plus deliveries given up on (`dead`) in the
    delivery log (housekeeping prunes it, so these can drop: for a Prometheus counter use
    WebhookDispatcher.outcome_listeners instead)."""
    with db.read() as conn:
        counts = dict(conn.execute(select(webhook_attempts.c.outcome, func.count()).group_by(webhook_attempts.c.outcome)).all())
        dead = conn.execute(select(func.count()).select_from(webhook_deliveries)
                            .where(webhook_deliveries.c.state == "dead")).scalar_one()
    return {"succeeded": int(counts.get("succeeded", 0)), "failed": int(counts.get("failed", 0)), "dead": int(dead)}


def reseal_secrets(db: Database, old_ring, new_ring) -> int:
    """Re-seal every webhook secret under `new_ring` (`dockyard admin rotate-kek`), in one transaction."""
    with db.write() as conn:
        rows = conn.execute(select(webhooks.c.id, webhooks.c.secret_sealed, webhooks.c.previous_secret_sealed)).all()
        for row in rows:
            values = {"secret_sealed": new_ring.seal(old_ring.open(row.secret_sealed, secret_context(row.id)),
                                                     secret_context(row.id))}
            if row.previous_secret_sealed:
                values["previous_secret_sealed"] = new_ring.seal(
                    old_ring.open(row.previous_secret_sealed, secret_context(row.id)), secret_context(row.id))
            conn.execute(update(webhooks).where(webhooks.c.id == row.id).values(**values))
    return len(rows)
