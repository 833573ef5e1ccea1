"""Sending webhooks: the feed consumer that fans events out to endpoints, and the job that makes
one attempt of one delivery.

Durable end to end: `fan_out` runs as the durable feed consumer `webhooks` (jobs/feed.py), so the
delivery rows and their jobs commit with the consumer's cursor; a crash before that commit means
the batch is read again, after it the jobs are in the queue. Each job makes ONE attempt and, on
failure, queues the next one itself (exponential backoff with ±50% jitter) until the delivery's
attempt budget is spent: then it is `dead` (the dead-letter state; `redeliver` revives it). An
endpoint whose deliveries die `disable_after` times in a row is disabled, with a
`webhook.disabled` event. Ordering per endpoint and repository: lanes.py.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, event as sa_event, insert, select, update

from dockyard import request_context
from dockyard.domain.events import Event, record, rfc3339
from dockyard.webhooks import lanes, targets
from dockyard.webhooks.formats import PING_TYPE, Context, render
from dockyard.webhooks.service import WebhookConfig, WebhookService, matches, webhook_of
from dockyard.webhooks.signing import signature_headers
from dockyard.errors import DockyardError, InvalidRequest, TooManyRequests
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import projects
from dockyard.metadata.webhook_tables import webhook_attempts, webhook_deliveries as d, webhooks
from dockyard.safe_text import terminal_safe

log = logging.getLogger("dockyard.webhooks")

CONSUMER = "webhooks"  # the durable feed consumer's name
CHAIN_MAX = 100  # deliveries one job sends from its lane before handing the rest to a new job
CHAIN_SECONDS = 10.0
RESPONSE_BODY_LIMIT = 1024  # bytes of a receiver's answer kept in the log
# Pings are sent inside the request, on the server's thread pool: a project admin pinging a receiver
# that never answers must not hold every thread for `webhook_timeout_seconds`.
PING_CONCURRENCY = 4
USER_AGENT = "Dockyard-Webhooks/1"
_JOBS_FLAG = "dockyard_webhook_jobs"


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status_code: int | None
    duration_ms: int
    body: str | None
    error: str | None


@dataclass(frozen=True)
class _Next:
    """A delivery a job took over from its lane (lanes.take_next): its turn, event JSON and webhook row."""
    id: int
    turn: int
    event: str
    hook: Any


def backoff_seconds(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Delay after failed attempt number `attempt` (1-based): base·2^(attempt-1), capped, ±50% jitter."""
    delay = min(base * 2 ** (attempt - 1), cap)
    return delay * (0.5 + rand())


class WebhookDispatcher:
    def __init__(
        self, db: Database, service: WebhookService, jobs, *,
        transport: httpx.BaseTransport | None = None, wake: Callable[[], None] | None = None,
        rand: Callable[[], float] = random.random, stopping: Callable[[], bool] = lambda: False,
        repair_grace_seconds: float = 360.0,
    ):
        self.db = db
        self.service = service
        self.jobs = jobs
        self.config: WebhookConfig = service.config
        self.transport = transport
        self.wake = wake
        self.rand = rand
        self.stopping = stopping
        self.repair_grace_seconds = repair_grace_seconds
        self._listening = False
        self._client: httpx.Client | None = None
        # Called with "succeeded", "failed" (an attempt that will be retried) or "dead" after each
        # attempt of a queued delivery, in the process that made it: metrics count with these.
        self.outcome_listeners: list[Callable[[str], None]] = []
        self._client_transport: httpx.BaseTransport | None = None
        self._pings = threading.BoundedSemaphore(PING_CONCURRENCY)

    # -- waking the worker once fan-out's jobs are committed --------------------------------

    def start(self) -> None:
        if not self._listening and self.wake is not None:
            sa_event.listen(self.db.engine, "commit", self._on_commit)
            sa_event.listen(self.db.engine, "rollback", self._on_rollback)
            self._listening = True

    def stop(self) -> None:
        if self._listening:
            sa_event.remove(self.db.engine, "commit", self._on_commit)
            sa_event.remove(self.db.engine, "rollback", self._on_rollback)
            self._listening = False
        if self._client is not None:
            self._client.close()
            self._client = None

    def _on_commit(self, conn: Connection) -> None:
        if conn.info.pop(_JOBS_FLAG, False) and self.wake is not None:
            self.wake()

    @staticmethod
    def _on_rollback(conn: Connection) -> None:
        conn.info.pop(_JOBS_FLAG, None)

    # -- fan-out: the durable feed consumer ---------------------------------------------------

    def fan_out(self, conn: Connection, events: list[Event]) -> None:
        """One delivery per (event, matching enabled endpoint), in the consumer's transaction."""
        now = utcnow()
        if lanes.repair(conn, self.jobs, now, self.repair_grace_seconds):
            conn.info[_JOBS_FLAG] = True
        hooks = [webhook_of(r) for r in conn.execute(select(webhooks).where(webhooks.c.enabled.is_(True))
                                                     .order_by(webhooks.c.id)).all()]
        if not hooks:
            return
        dialect = conn.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        # A lane that got a delivery in this batch already has an older queued one: the later ones stay
        # parked as inserted (next_attempt_at NULL), with no older_pending query each.
        lanes_seen: set[tuple[int, str]] = set()
        for event in events:
            for hook in hooks:
                if not matches(hook, event.type, event.project, event.repository, event.tag,
                               event.data.get("tags") if isinstance(event.data.get("tags"), list) else None):
                    continue
                repository = event.repository or ""
                delivery_id = conn.execute(
                    dialect_insert(d).values(
                        webhook_id=hook.id, event_key=event.key, event_type=event.type,
                        event=json.dumps(event.to_dict(), default=str), repository=repository, state="queued",
                        attempts=0, max_attempts=self.config.max_attempts, turn=0, created_at=now,
                    ).on_conflict_do_nothing().returning(d.c.id)
                ).scalar()
                if delivery_id is None or (hook.id, repository) in lanes_seen:
                    continue
                lanes_seen.add((hook.id, repository))
                # The job carries the event's request id (jobs.request_id), so the worker runs and logs
                # the delivery under the request that pushed.
                with request_context.acting_as(request_context.actor.get(), event.request_id):
                    placed = lanes.place(conn, self.jobs, delivery_id, hook.id, repository, now)
                if placed:
                    conn.info[_JOBS_FLAG] = True

    # -- one attempt: the job handler ------------------------------------------------------------

    def handle_job(self, payload: dict, progress=None) -> dict:
        """Send the job's delivery; then, while the lane has more and the bounds allow, the next ones
        (lanes.take_next). Whatever is left of the lane gets a job of its own."""
        delivery_id, turn = int(payload["delivery"]), int(payload["turn"])
        publics: dict[str, bool | None] = {}  # project -> public, for the whole chain
        outcome = self._attempt(delivery_id, turn, publics)
        sent, deadline = 1, time.monotonic() + CHAIN_SECONDS
        while (nxt := outcome.pop("next", None)) is not None:
            if sent >= CHAIN_MAX or time.monotonic() > deadline or self.stopping():
                with self.db.write() as conn:
                    lanes.schedule(conn, self.jobs, nxt.id, nxt.hook.id, utcnow())
                    conn.info[_JOBS_FLAG] = True
                break
            outcome = self._chained(nxt, publics)
            sent += 1
        outcome["sent"] = sent
        return outcome

    def _attempt(self, delivery_id: int, turn: int, publics: dict[str, bool | None]) -> dict:
        now = utcnow()
        # A read first: the common case (the lane's head, endpoint on) writes nothing before sending.
        with self.db.read() as conn:
            row = conn.execute(select(d).where(d.c.id == delivery_id)).first()
            if row is None or row.state != "queued" or row.turn != turn:
                return {"skipped": "stale job"}
            hook_row = conn.execute(select(webhooks).where(webhooks.c.id == row.webhook_id)).first()
            if hook_row is None:
                return {"skipped": "webhook deleted"}
            older = lanes.older_pending(conn, row.webhook_id, row.repository, delivery_id)
            event = json.loads(row.event)
            public = self._public(conn, event.get("project"), publics)
        if not hook_row.enabled or older is not None:
            reason = "the endpoint is disabled; re-enable it to send" if not hook_row.enabled else None
            with self.db.write() as conn:  # parked only if nothing moved it meanwhile
                current = conn.execute(select(d.c.state, d.c.turn).where(d.c.id == delivery_id)).first()
                if current is not None and current.state == "queued" and current.turn == turn:
                    lanes.park(conn, delivery_id, reason)
            return {"parked": reason or f"waits for delivery {older}"}
        return self._deliver(delivery_id, turn, hook_row, event, public, now)

    def _chained(self, nxt: _Next, publics: dict[str, bool | None]) -> dict:
        """The lane's next delivery, taken over in the settle transaction that just committed: it is
        the lane's head, queued with `nxt.turn`, and `nxt.hook` was read there. No read transaction."""
        if not nxt.hook.enabled:
            reason = "the endpoint is disabled; re-enable it to send"
            with self.db.write() as conn:  # parked only if nothing moved it meanwhile
                conn.execute(update(d).where(d.c.id == nxt.id, d.c.state == "queued", d.c.turn == nxt.turn)
                             .values(next_attempt_at=None, last_error=reason))
            return {"parked": reason}
        event = json.loads(nxt.event)
        project = event.get("project")
        if project and project not in publics:
            with self.db.read() as conn:
                self._public(conn, project, publics)
        return self._deliver(nxt.id, nxt.turn, nxt.hook, event, publics.get(project) if project else None, utcnow())

    def _deliver(self, delivery_id: int, turn: int, hook_row, event: dict, public: bool | None, now: datetime) -> dict:
        # A job may send several deliveries of a lane: each runs (and logs) under its own event's request id.
        with request_context.acting_as(request_context.actor.get(), event.get("request_id")):
            result = self._send(hook_row, event, public)
            outcome = self._settle(delivery_id, turn, result, now)
        # The delivery's new state says what this attempt was: queued again means it failed.
        self._notify({"succeeded": "succeeded", "dead": "dead", "queued": "failed"}.get(outcome.get("state", "")))
        return outcome

    def _notify(self, outcome: str | None) -> None:
        if outcome is None:  # superseded by a redelivery meanwhile: logged, not counted here
            return
        for listener in self.outcome_listeners:
            try:
                listener(outcome)
            except Exception:  # a metrics hiccup must not fail a delivery
                log.exception("webhook outcome listener failed")

    def _settle(self, delivery_id: int, turn: int, result: AttemptResult, started: datetime) -> dict:
        now = utcnow()
        with self.db.write() as conn:
            if result.ok:  # the common case in few statements: the WHERE is the concurrency check
                done = conn.execute(
                    update(d).where(d.c.id == delivery_id, d.c.state == "queued", d.c.turn == turn).values(
                        attempts=d.c.attempts + 1, state="succeeded", finished_at=now, next_attempt_at=None,
                        last_status_code=result.status_code, last_error=None,
                    ).returning(d.c.attempts, d.c.webhook_id, d.c.repository)
                ).first()
                if done is not None:
                    self._log_attempt(conn, delivery_id, done.attempts, started, result)
                    conn.execute(update(webhooks).where(webhooks.c.id == done.webhook_id, webhooks.c.consecutive_failures != 0)
                                 .values(consecutive_failures=0))
                    return {"attempt": done.attempts, "state": "succeeded",
                            "next": self._next(conn, done.webhook_id, done.repository, now)}
            row = conn.execute(select(d).where(d.c.id == delivery_id)).first()
            if row is None:
                return {"skipped": "deleted while sending"}
            attempt = row.attempts + 1
            self._log_attempt(conn, delivery_id, attempt, started, result)
            values: dict = {"attempts": attempt, "last_status_code": result.status_code, "last_error": result.error}
            current = row.state == "queued" and row.turn == turn
            if not current:  # redelivered or rescheduled meanwhile: log the attempt, leave the rest
                conn.execute(update(d).where(d.c.id == delivery_id).values(attempts=attempt))
                return {"attempt": attempt, "ok": result.ok, "superseded": True}
            hook = conn.execute(select(webhooks).where(webhooks.c.id == row.webhook_id)).first()
            if result.ok:
                values.update(state="succeeded", finished_at=now, next_attempt_at=None, last_error=None)
                conn.execute(update(d).where(d.c.id == delivery_id).values(**values))
                if hook.consecutive_failures:
                    conn.execute(update(webhooks).where(webhooks.c.id == row.webhook_id).values(consecutive_failures=0))
                return {"attempt": attempt, "state": "succeeded", "next": self._next(conn, row.webhook_id, row.repository, now)}
            if attempt < row.max_attempts:
                conn.execute(update(d).where(d.c.id == delivery_id).values(**values))
                delay = backoff_seconds(attempt, self.config.backoff_base_seconds, self.config.backoff_max_seconds, self.rand)
                lanes.schedule(conn, self.jobs, delivery_id, row.webhook_id, now + timedelta(seconds=delay))
                return {"attempt": attempt, "state": "queued", "retry_in_seconds": round(delay, 3)}
            values.update(state="dead", finished_at=now, next_attempt_at=None)
            conn.execute(update(d).where(d.c.id == delivery_id).values(**values))
            failures = hook.consecutive_failures + 1
            hook_values: dict = {"consecutive_failures": failures}
            limit = self.config.disable_after
            if limit and failures >= limit and hook.enabled:
                reason = f"disabled after {failures} consecutive dead deliveries (last: {result.error or result.status_code})"
                hook_values.update(enabled=False, disabled_reason=reason[:500], updated_at=now)
                record(conn, "webhook.disabled", project=hook.project,
                       data={"webhook": hook.id, "name": hook.name, "consecutive_failures": failures})
                log.warning("webhook %s disabled: %s", hook.id, reason)
            conn.execute(update(webhooks).where(webhooks.c.id == hook.id).values(**hook_values))
            return {"attempt": attempt, "state": "dead", "next": self._next(conn, row.webhook_id, row.repository, now)}

    @staticmethod
    def _next(conn: Connection, webhook_id: int, repository: str, now: datetime) -> _Next | None:
        """The lane's next delivery, taken over by this job, with what sending it needs."""
        taken = lanes.take_next(conn, webhook_id, repository, now)
        if taken is None:
            return None
        hook = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
        if hook is None:  # deleted in this transaction? its deliveries went with it
            return None
        return _Next(taken[0], taken[1], taken[2], hook)

    @staticmethod
    def _log_attempt(conn: Connection, delivery_id: int, attempt: int, started: datetime, result: AttemptResult) -> None:
        conn.execute(insert(webhook_attempts).values(
            delivery_id=delivery_id, attempt=attempt, started_at=started, duration_ms=result.duration_ms,
            outcome="succeeded" if result.ok else "failed", status_code=result.status_code,
            response_body=result.body, error=(result.error or None) and result.error[:2000],
        ))

    @staticmethod
    def _public(conn: Connection, project: str | None, cache: dict[str, bool | None] | None = None) -> bool | None:
        if not project:
            return None
        if cache is not None and project in cache:
            return cache[project]
        public = conn.execute(select(projects.c.public).where(projects.c.name == project)).scalar()
        if cache is not None:
            cache[project] = public
        return public

    # -- the HTTP request ---------------------------------------------------------------------

    def _send(self, hook_row, event: dict, public: bool | None) -> AttemptResult:
        started = time.monotonic()

        def done(ok: bool, status: int | None = None, body: str | None = None, error: str | None = None) -> AttemptResult:
            return AttemptResult(ok, status, int((time.monotonic() - started) * 1000), body, error)

        try:
            target = targets.resolve(hook_row.url, self.service.resolver)
            # Checked again at every attempt: the name may resolve elsewhere now (DNS rebinding).
            targets.check(target, internal_allowed=self.config.allow_private_targets and hook_row.private_target)
        except (DockyardError, InvalidRequest) as exc:
            return done(False, error=f"target refused: {exc.message}")
        rendered = render(hook_row.format, event, Context(self.config.registry_url, public))
        headers = {
            "Content-Type": rendered.content_type, "User-Agent": USER_AGENT,
            **signature_headers(*self._secrets(hook_row, event["key"], utcnow(), rendered.body)),
        }
        url, host_header, extensions = targets.pinned_request(target)
        headers.update(host_header)
        try:
            client = self._http()
            request = client.build_request("POST", url, content=rendered.body, headers=headers, extensions=extensions)
            response = client.send(request, stream=True)
            try:
                body = self._read_limited(response)
            finally:
                response.close()
        except httpx.TimeoutException:
            return done(False, error=f"timed out after {self.config.timeout_seconds:g} s")
        except httpx.HTTPError as exc:
            return done(False, error=f"{type(exc).__name__}: {exc}"[:500])
        status = response.status_code
        if 200 <= status < 300:
            return done(True, status, body)
        if 300 <= status < 400:
            return done(False, status, body, "redirects are not followed; point the webhook at the final URL")
        return done(False, status, body, f"HTTP {status}")

    def _secrets(self, hook_row, message_id: str, timestamp: datetime, body: bytes) -> tuple:
        current, *previous = self.service.signing_secrets(hook_row)
        return (current, message_id, timestamp, body, *previous)

    def _http(self) -> httpx.Client:
        """One client (and connection pool, kept alive) for every delivery of this process."""
        if self._client is None or self._client_transport is not self.transport:
            self._client = httpx.Client(transport=self.transport, timeout=self.config.timeout_seconds,
                                        follow_redirects=False, trust_env=False,
                                        limits=httpx.Limits(max_connections=32, max_keepalive_connections=8))
            self._client_transport = self.transport
        return self._client

    @staticmethod
    def _read_limited(response: httpx.Response) -> str:
        data = b""
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= RESPONSE_BODY_LIMIT:
                break
        text = terminal_safe(data[:RESPONSE_BODY_LIMIT].decode("utf-8", "replace"))
        if len(data) > RESPONSE_BODY_LIMIT or len(text) > RESPONSE_BODY_LIMIT:
            text = text[:RESPONSE_BODY_LIMIT] + "…"  # escapes lengthen the text: cut again
        return text

    # -- ping ---------------------------------------------------------------------------------

    def ping(self, webhook_id: int, project: str | None) -> dict:
        """Send a `webhook.ping` now, in the request, and log it as a delivery (it never counts
        towards disabling the endpoint, and takes no lane)."""
        self.service.get(webhook_id, project)
        if not self._pings.acquire(blocking=False):
            raise TooManyRequests(f"{PING_CONCURRENCY} webhook pings are already in progress; retry shortly")
        try:
            return self._ping(webhook_id, project)
        finally:
            self._pings.release()

    def _ping(self, webhook_id: int, project: str | None) -> dict:
        now = utcnow()
        event = {
            "id": 0, "key": str(uuid.uuid4()), "type": PING_TYPE, "occurred_at": rfc3339(now), "project": project,
            "repository": None, "digest": None, "tag": None, "actor": None, "request_id": None,
            "data": {"webhook": webhook_id, "message": "ping from Dockyard"},
        }
        with self.db.write() as conn:
            hook_row = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
            delivery_id = conn.execute(insert(d).values(
                webhook_id=webhook_id, event_key=event["key"], event_type=PING_TYPE, event=json.dumps(event),
                repository="", state="sending", attempts=0, max_attempts=1, turn=0, created_at=now,
            ).returning(d.c.id)).scalar_one()
            public = self._public(conn, project)
        result = self._send(hook_row, event, public)
        with self.db.write() as conn:
            self._log_attempt(conn, delivery_id, 1, now, result)
            conn.execute(update(d).where(d.c.id == delivery_id).values(
                state="succeeded" if result.ok else "failed", attempts=1, finished_at=utcnow(),
                last_status_code=result.status_code, last_error=result.error))
        return self.service.delivery(webhook_id, project, delivery_id)
