"""Sending webhooks: the feed consumer that fans events out to endpoints, and the job that sends
a lane's deliveries.

Durable end to end: `fan_out` runs as the durable feed consumer `webhooks` (jobs/feed.py), so the
delivery rows and their jobs commit with the consumer's cursor; a crash before that commit means
the batch is read again, after it the jobs are in the queue. A job sends its lane in batches: the
head and the parked deliveries behind it, POSTed in order, then every outcome settled in ONE write
transaction (which also takes the next batch over), so a burst of events costs a few transactions,
not one per delivery. A batch stops at its first failure, whose next attempt is queued (exponential
backoff with ±50% jitter) until the delivery's attempt budget is spent: then it is `dead` (the
dead-letter state; `redeliver` revives it). An endpoint whose deliveries die `disable_after` times
in a row is disabled, with a `webhook.disabled` event. Ordering per endpoint and repository: lanes.py.
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
from sqlalchemy import Connection, bindparam, event as sa_event, insert, select, update

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
BATCH_MAX = 50  # deliveries of a lane read, sent and settled together (one write transaction)
FAN_OUT_CHUNK = 500  # delivery rows per insert (SQLite caps a statement's parameters)
RESPONSE_BODY_LIMIT = 1024  # bytes of a receiver's answer kept in the log
# Pings are sent inside the request, on the server's thread pool: a project admin pinging a receiver
# that never answers must not hold every thread for `webhook_timeout_seconds`.
PING_CONCURRENCY = 4
USER_AGENT = "Dockyard-Webhooks/1"
_JOBS_FLAG = "dockyard_webhook_jobs"
# Built once: a settle runs these per delivery while holding the write lock, and building a statement
# costs more than SQLite takes to run it (reusing the object also reuses its cache key).
_SUCCEEDED = update(d).where(d.c.id == bindparam("b_id"), d.c.state == "queued", d.c.turn == bindparam("b_turn")).values(
    attempts=d.c.attempts + 1, state="succeeded", finished_at=bindparam("b_now"), next_attempt_at=None,
    last_status_code=bindparam("b_status"), last_error=None,
).returning(d.c.attempts)
_LOG_ATTEMPTS = insert(webhook_attempts)


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status_code: int | None
    duration_ms: int
    body: str | None
    error: str | None


@dataclass(frozen=True)
class _Item:
    """One delivery of a batch: its id, its turn when read (the settle's concurrency check) and its event."""
    id: int
    turn: int
    event: dict


@dataclass(frozen=True)
class _Batch:
    """A lane's head and the parked deliveries behind it, sent in order with one endpoint row. `seen`
    is the endpoint's raw (enabled, updated_at), read before that row."""
    hook: Any
    repository: str
    items: list[_Item]
    seen: tuple | None


def _attempt_row(delivery_id: int, attempt: int, started: datetime, result: AttemptResult) -> dict:
    return {"delivery_id": delivery_id, "attempt": attempt, "started_at": started, "duration_ms": result.duration_ms,
            "outcome": "succeeded" if result.ok else "failed", "status_code": result.status_code,
            "response_body": result.body, "error": (result.error or None) and result.error[:2000]}


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
        """One delivery per (event, matching enabled endpoint), in the consumer's transaction: the
        batch's deliveries in one multi-row insert, then one job per lane that got a new head."""
        now = utcnow()
        if lanes.repair(conn, self.jobs, now, self.repair_grace_seconds):
            conn.info[_JOBS_FLAG] = True
        hooks = [webhook_of(r) for r in conn.execute(select(webhooks).where(webhooks.c.enabled.is_(True))
                                                     .order_by(webhooks.c.id)).all()]
        if not hooks:
            return
        rows, by_key = [], {}
        for event in events:
            for hook in hooks:
                if not matches(hook, event.type, event.project, event.repository, event.tag,
                               event.data.get("tags") if isinstance(event.data.get("tags"), list) else None):
                    continue
                by_key[event.key] = event
                rows.append({
                    "webhook_id": hook.id, "event_key": event.key, "event_type": event.type,
                    "event": json.dumps(event.to_dict(), default=str), "repository": event.repository or "",
                    "state": "queued", "attempts": 0, "max_attempts": self.config.max_attempts, "turn": 0,
                    "created_at": now, "next_attempt_at": None,
                })
        if not rows:
            return
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        heads: dict[tuple[int, str], Any] = {}  # lane -> its oldest delivery inserted now
        for chunk in range(0, len(rows), FAN_OUT_CHUNK):  # SQLite caps a statement's parameters
            inserted = conn.execute(dialect_insert(d).values(rows[chunk:chunk + FAN_OUT_CHUNK]).on_conflict_do_nothing()
                                    .returning(d.c.id, d.c.webhook_id, d.c.repository, d.c.event_key)).all()
            for r in inserted:  # RETURNING's row order is not promised: take each lane's lowest id
                lane = (r.webhook_id, r.repository)
                if lane not in heads or r.id < heads[lane].id:
                    heads[lane] = r
        # Only a lane's oldest new delivery may get a job; the later ones stay parked as inserted.
        for head in sorted(heads.values(), key=lambda r: r.id):
            # The job carries the event's request id (jobs.request_id), so the worker runs and logs
            # the lane's deliveries under the request that pushed.
            with request_context.acting_as(request_context.actor.get(), by_key[head.event_key].request_id):
                if lanes.place(conn, self.jobs, head.id, head.webhook_id, head.repository, now):
                    conn.info[_JOBS_FLAG] = True

    # -- sending a lane: the job handler ---------------------------------------------------------

    def handle_job(self, payload: dict, progress=None) -> dict:
        """Send the job's delivery and the lane's parked ones behind it, in order, then settle them all
        in one transaction, which also takes the lane's next batch over; repeat while the lane has
        more and the bounds allow. Whatever is left of the lane gets a job of its own."""
        delivery_id, turn = int(payload["delivery"]), int(payload["turn"])
        publics: dict[str, bool | None] = {}  # project -> public, for the whole job
        first = self._first_batch(delivery_id, turn, publics)
        if isinstance(first, dict):
            return first
        batch: _Batch | None = first
        sent, deadline, outcome = 0, time.monotonic() + CHAIN_SECONDS, {}
        while batch is not None:
            results = self._send_batch(batch, publics, deadline)
            sent += len(results)
            more = sent < CHAIN_MAX and time.monotonic() <= deadline and not self.stopping()
            outcome, batch = self._settle(batch, results, publics, more)
        outcome["sent"] = sent
        return outcome

    def _first_batch(self, delivery_id: int, turn: int, publics: dict[str, bool | None]) -> _Batch | dict:
        """One read: the job's delivery (still its lane's head, with this turn?), the endpoint, and the
        lane's parked deliveries behind it. The common case writes nothing before sending."""
        seen = self._seen_of_delivery(delivery_id)
        with self.db.read() as conn:
            row = conn.execute(select(d).where(d.c.id == delivery_id)).first()
            if row is None or row.state != "queued" or row.turn != turn:
                return {"skipped": "stale job"}
            hook_row = conn.execute(select(webhooks).where(webhooks.c.id == row.webhook_id)).first()
            if hook_row is None:
                return {"skipped": "webhook deleted"}
            lane = lanes.queued(conn, row.webhook_id, row.repository, BATCH_MAX)
            older = lane[0].id if lane and lane[0].id != delivery_id else None
            items = [_Item(r.id, r.turn, json.loads(r.event)) for r in lanes.parked_behind(lane)] if older is None else []
            self._publics(conn, [json.loads(row.event), *(i.event for i in items)], publics)
        if not hook_row.enabled or older is not None:
            reason = "the endpoint is disabled; re-enable it to send" if not hook_row.enabled else None
            with self.db.write() as conn:  # parked only if nothing moved it meanwhile
                current = conn.execute(select(d.c.state, d.c.turn).where(d.c.id == delivery_id)).first()
                if current is not None and current.state == "queued" and current.turn == turn:
                    lanes.park(conn, delivery_id, reason)
            return {"parked": reason or f"waits for delivery {older}"}
        return _Batch(hook_row, row.repository, [_Item(delivery_id, turn, json.loads(row.event)), *items], seen)

    def _publics(self, conn: Connection, events: list[dict], publics: dict[str, bool | None]) -> None:
        for project in dict.fromkeys(e.get("project") for e in events):
            self._public(conn, project, publics)

    def _seen_of_delivery(self, delivery_id: int) -> tuple | None:
        return self.db.fetchone("SELECT w.enabled, w.updated_at FROM webhooks w JOIN webhook_deliveries x "
                                "ON x.webhook_id = w.id WHERE x.id = ?", (delivery_id,))

    def _seen_of(self, webhook_id: int) -> tuple | None:
        """The endpoint's (enabled, updated_at), raw: any change (disabled, new URL, format or secret)
        moves it. Read before the row a batch sends with, and again before each later delivery."""
        return self.db.fetchone("SELECT enabled, updated_at FROM webhooks WHERE id = ?", (webhook_id,))

    def _send_batch(self, batch: _Batch, publics: dict[str, bool | None], deadline: float) -> list[tuple]:
        """POST the batch's deliveries in order (over the client's kept-alive connection). Stops at the
        first failure (the lane waits for its retry), when the endpoint changed since its row was read
        (the next batch re-reads it), or at the job's bounds. Returns (item, started, result) per POST."""
        results: list[tuple] = []
        prepared: dict = {}  # the checked target and the secrets, for the whole batch
        for item in batch.items:
            if results and (self.stopping() or time.monotonic() > deadline or self._seen_of(batch.hook.id) != batch.seen):
                break
            project = item.event.get("project")
            started = utcnow()
            # Each delivery runs (and logs) under its own event's request id.
            with request_context.acting_as(request_context.actor.get(), item.event.get("request_id")):
                result = self._send(batch.hook, item.event, publics.get(project) if project else None, prepared)
            results.append((item, started, result))
            if not result.ok:
                break
        return results

    def _notify(self, outcome: str | None) -> None:
        if outcome is None:  # superseded by a redelivery meanwhile: logged, not counted here
            return
        for listener in self.outcome_listeners:
            try:
                listener(outcome)
            except Exception:  # a metrics hiccup must not fail a delivery
                log.exception("webhook outcome listener failed")

    def _settle(self, batch: _Batch, results: list[tuple], publics: dict[str, bool | None],
                more: bool) -> tuple[dict, _Batch | None]:
        """Every outcome of a batch in ONE write transaction; only the last POST can have failed.
        Then, if the lane's head finished, take its next batch over (`more`) or give it a job."""
        now = utcnow()
        states: list[str | None] = []
        logged: list[dict] = []
        outcome: dict = {}
        nxt: _Batch | None = None
        hook_id = batch.hook.id
        with self.db.write() as conn:
            cont, reset = True, False
            for item, started, result in results:
                if result.ok:  # the common case in one statement: the WHERE is the concurrency check
                    attempts = conn.execute(_SUCCEEDED, {"b_id": item.id, "b_turn": item.turn, "b_now": now,
                                                         "b_status": result.status_code}).scalar()
                    if attempts is not None:
                        logged.append(_attempt_row(item.id, attempts, started, result))
                        states.append("succeeded")
                        outcome, reset = {"attempt": attempts, "state": "succeeded"}, True
                        continue
                if reset:  # successes before a failure clear the endpoint's count first
                    self._reset_failures(conn, hook_id)
                    reset = False
                outcome, state, cont = self._settle_other(conn, item, started, result, now, logged, cont)
                states.append(state)
            if reset:
                self._reset_failures(conn, hook_id)
            if logged:  # the delivery log: one insert for the batch, rows in the order sent
                conn.execute(_LOG_ATTEMPTS, logged)
            if cont:
                nxt = self._take_next(conn, hook_id, batch.repository, now, more, publics)
        for state in states:  # the delivery's new state says what the attempt was: queued again means it failed
            self._notify({"succeeded": "succeeded", "dead": "dead", "queued": "failed"}.get(state or ""))
        return outcome, nxt

    @staticmethod
    def _reset_failures(conn: Connection, webhook_id: int) -> None:
        conn.execute(update(webhooks).where(webhooks.c.id == webhook_id, webhooks.c.consecutive_failures != 0)
                     .values(consecutive_failures=0))

    def _settle_other(self, conn: Connection, item: _Item, started: datetime, result: AttemptResult, now: datetime,
                      logged: list[dict], cont: bool) -> tuple[dict, str | None, bool]:
        """A failed attempt, or one whose delivery moved meanwhile: (outcome, new state, whether the
        lane's next delivery may go now)."""
        row = conn.execute(select(d).where(d.c.id == item.id)).first()
        if row is None:
            return {"skipped": "deleted while sending"}, None, False
        attempt = row.attempts + 1
        logged.append(_attempt_row(item.id, attempt, started, result))
        values: dict = {"attempts": attempt, "last_status_code": result.status_code, "last_error": result.error}
        if not (row.state == "queued" and row.turn == item.turn):
            # redelivered or rescheduled meanwhile: log the attempt, leave the rest (and the lane) alone
            conn.execute(update(d).where(d.c.id == item.id).values(attempts=attempt))
            return {"attempt": attempt, "ok": result.ok, "superseded": True}, None, False
        hook = conn.execute(select(webhooks).where(webhooks.c.id == row.webhook_id)).first()
        if attempt < row.max_attempts:
            conn.execute(update(d).where(d.c.id == item.id).values(**values))
            delay = backoff_seconds(attempt, self.config.backoff_base_seconds, self.config.backoff_max_seconds, self.rand)
            lanes.schedule(conn, self.jobs, item.id, row.webhook_id, now + timedelta(seconds=delay))
            conn.info[_JOBS_FLAG] = True
            return {"attempt": attempt, "state": "queued", "retry_in_seconds": round(delay, 3)}, "queued", False
        values.update(state="dead", finished_at=now, next_attempt_at=None)
        conn.execute(update(d).where(d.c.id == item.id).values(**values))
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
        return {"attempt": attempt, "state": "dead"}, "dead", cont

    def _take_next(self, conn: Connection, webhook_id: int, repository: str, now: datetime, more: bool,
                   publics: dict[str, bool | None]) -> _Batch | None:
        """The lane's head finished: its next parked deliveries become this job's next batch (the head
        marked taken over, so `repair` finds it if this worker dies), or, past the job's bounds, the
        head gets a job. A head with a job of its own (a retry, a redelivery) is left to it."""
        lane = lanes.queued(conn, webhook_id, repository, BATCH_MAX)
        if not lane or lane[0].next_attempt_at is not None:
            return None
        if not more:
            lanes.schedule(conn, self.jobs, lane[0].id, webhook_id, now)
            conn.info[_JOBS_FLAG] = True
            return None
        seen = self._seen_of(webhook_id)  # before the row: a change after it shows as a difference
        hook = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
        if hook is None:  # deleted in this transaction? its deliveries went with it
            return None
        if not hook.enabled:  # stays parked; re-enabling the endpoint resumes the lane
            lanes.park(conn, lane[0].id, "the endpoint is disabled; re-enable it to send")
            return None
        turn = conn.execute(update(d).where(d.c.id == lane[0].id).values(turn=d.c.turn + 1, next_attempt_at=now)
                            .returning(d.c.turn)).scalar_one()
        items = [_Item(lane[0].id, turn, json.loads(lane[0].event)),
                 *(_Item(r.id, r.turn, json.loads(r.event)) for r in lanes.parked_behind(lane))]
        self._publics(conn, [i.event for i in items], publics)
        return _Batch(hook, repository, items, seen)

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

    def _send(self, hook_row, event: dict, public: bool | None, prepared: dict | None = None) -> AttemptResult:
        """POST one delivery. `prepared` carries the checked target and the opened secrets from one
        delivery of a batch to the next (same endpoint row); the request always goes to that address."""
        started = time.monotonic()
        prepared = {} if prepared is None else prepared

        def done(ok: bool, status: int | None = None, body: str | None = None, error: str | None = None) -> AttemptResult:
            return AttemptResult(ok, status, int((time.monotonic() - started) * 1000), body, error)

        if "target" not in prepared:
            try:
                target = targets.resolve(hook_row.url, self.service.resolver)
                # Checked again at every batch and attempt: the name may resolve elsewhere now (DNS rebinding).
                targets.check(target, internal_allowed=self.config.allow_private_targets and hook_row.private_target)
            except (DockyardError, InvalidRequest) as exc:
                return done(False, error=f"target refused: {exc.message}")
            prepared["target"], prepared["secrets"] = target, self.service.signing_secrets(hook_row)
        target = prepared["target"]
        rendered = render(hook_row.format, event, Context(self.config.registry_url, public))
        current, *previous = prepared["secrets"]
        headers = {
            "Content-Type": rendered.content_type, "User-Agent": USER_AGENT,
            **signature_headers(current, event["key"], utcnow(), rendered.body, *previous),
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
            conn.execute(insert(webhook_attempts).values(**_attempt_row(delivery_id, 1, now, result)))
            conn.execute(update(d).where(d.c.id == delivery_id).values(
                state="succeeded" if result.ok else "failed", attempts=1, finished_at=utcnow(),
                last_status_code=result.status_code, last_error=result.error))
        return self.service.delivery(webhook_id, project, delivery_id)
