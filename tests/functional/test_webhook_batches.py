"""Webhook delivery in lane batches: a job sends its lane's head and the parked deliveries behind it
in order, then settles every outcome in ONE write transaction; fan-out inserts a feed batch's
deliveries with one statement. Ordering, retries and the delivery log are as with one at a time.

Reuses test_webhooks.py's in-process environment (MockTransport receiver, no background worker).
"""

from __future__ import annotations

import contextlib
import json
import threading

import anyio.to_thread
import httpx
import pytest
from sqlalchemy import event as sa_event, select

from dockyard.metadata.db import utcnow
from dockyard.metadata.models import jobs
from dockyard.metadata.webhook_tables import webhook_attempts, webhook_deliveries, webhooks
from dockyard.webhooks.lanes import WEBHOOK_JOB

from .test_webhooks import Env, _open, env  # noqa: F401  (env is the fixture: SQLite and PostgreSQL)


async def run_job(env: Env, payload: dict) -> tuple[dict, int]:
    """Run the webhook job handler; returns its outcome and the write transactions IT opened (the
    app's background consumers, e.g. metrics, write from other threads meanwhile)."""
    db = env.services.db
    original = db.write
    ours = threading.local()
    count = [0]

    @contextlib.contextmanager
    def write():
        if getattr(ours, "job", False):
            count[0] += 1
        with original() as conn:
            yield conn

    def job() -> dict:
        ours.job = True
        return env.services.webhook_dispatcher.handle_job(payload)

    db.write = write
    try:
        outcome = await anyio.to_thread.run_sync(job)
    finally:
        del db.write  # back to the class's method
    return outcome, count[0]


def lane_job(env: Env) -> dict:
    """The payload of the only queued webhook job."""
    with env.services.db.read() as conn:
        payloads = conn.execute(select(jobs.c.payload).where(jobs.c.kind == WEBHOOK_JOB, jobs.c.state == "queued")).scalars().all()
    assert len(payloads) == 1, payloads
    return json.loads(payloads[0])


def attempts_log(env: Env) -> list[tuple[int, int, str]]:
    with env.services.db.read() as conn:
        return [tuple(r) for r in conn.execute(select(webhook_attempts.c.delivery_id, webhook_attempts.c.attempt,
                                                      webhook_attempts.c.outcome).order_by(webhook_attempts.c.id)).all()]


async def test_a_lanes_pending_deliveries_are_sent_in_order_and_settled_in_one_transaction(env: Env):
    await env.project("acme")
    await env.hook("acme")
    keys = [env.event("artifact.pushed", "acme/a") for _ in range(5)]
    await anyio.to_thread.run_sync(env.services.feed.drain)
    payload = lane_job(env)  # one job for the lane: its head; the other four are parked behind it
    outcome, writes = await run_job(env, payload)
    assert writes == 1, "five outcomes, one write transaction"
    assert outcome["sent"] == 5 and outcome["state"] == "succeeded"
    assert [r.headers["webhook-id"] for r in env.receiver.requests] == keys
    rows = env.deliveries()
    assert [(d.state, d.attempts, d.last_status_code) for d in rows] == [("succeeded", 1, 200)] * 5
    assert attempts_log(env) == [(d.id, 1, "succeeded") for d in rows]  # every attempt logged, in order sent


async def test_a_failure_mid_batch_stops_the_lane_there_and_its_retry_goes_before_the_rest(env: Env):
    await env.project("acme")
    await env.hook("acme")
    keys = [env.event("artifact.pushed", "acme/a") for _ in range(4)]
    await anyio.to_thread.run_sync(env.services.feed.drain)
    env.receiver.statuses = [200, 500]  # the second delivery fails once
    outcome, writes = await run_job(env, lane_job(env))
    assert writes == 1
    assert outcome["sent"] == 2 and outcome["state"] == "queued"
    assert [r.headers["webhook-id"] for r in env.receiver.requests] == keys[:2]  # nothing after the failure
    first, second, third, fourth = env.deliveries()
    assert (first.state, first.attempts) == ("succeeded", 1)
    assert (second.state, second.attempts, second.last_error) == ("queued", 1, "HTTP 500")
    assert second.next_attempt_at is not None  # its retry has a job
    assert (third.attempts, third.next_attempt_at, fourth.attempts, fourth.next_attempt_at) == (0, None, 0, None)

    await env.pump(lambda: all(d.state == "succeeded" for d in env.deliveries()))
    assert [r.headers["webhook-id"] for r in env.receiver.requests] == [keys[0], keys[1], keys[1], keys[2], keys[3]]
    assert [d.attempts for d in env.deliveries()] == [1, 2, 1, 1]
    ids = [d.id for d in env.deliveries()]
    assert attempts_log(env) == [(ids[0], 1, "succeeded"), (ids[1], 1, "failed"), (ids[1], 2, "succeeded"),
                                 (ids[2], 1, "succeeded"), (ids[3], 1, "succeeded")]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_dead_delivery_mid_batch_lets_the_lane_go_on_and_a_later_success_clears_the_count(tmp_path, backend,
                                                                                                database_url_for):
    async with await _open(tmp_path, max_attempts=1, disable_after=3, database_url=database_url_for(backend)) as env:
        await env.project("acme")
        hook = await env.hook("acme")
        keys = [env.event("artifact.pushed", "acme/a") for _ in range(4)]
        await anyio.to_thread.run_sync(env.services.feed.drain)
        env.receiver.statuses = [200, 500]
        outcome, writes = await run_job(env, lane_job(env))
        # Batch 1 ends at the dead delivery; its settle takes the remaining two over as batch 2.
        assert writes == 2 and outcome["sent"] == 4
        assert [r.headers["webhook-id"] for r in env.receiver.requests] == keys
        assert [d.state for d in env.deliveries()] == ["succeeded", "dead", "succeeded", "succeeded"]
        with env.services.db.read() as conn:
            failures = conn.execute(select(webhooks.c.consecutive_failures).where(webhooks.c.id == hook["id"])).scalar_one()
        assert failures == 0


async def test_fan_out_inserts_a_feed_batch_with_one_statement_and_queues_one_job_per_lane(env: Env):
    await env.project("acme")
    project_hook = await env.hook("acme")
    await env.hook(None, url="https://hooks.example/system", name="system")  # a second endpoint: its own lanes
    for repository in ["acme/a", "acme/b", "acme/a", "acme/a", "acme/b"]:
        env.event("artifact.pushed", repository)
    inserts = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO WEBHOOK_DELIVERIES"):
            inserts.append(statement)

    sa_event.listen(env.services.db.engine, "before_cursor_execute", count)
    try:
        await anyio.to_thread.run_sync(env.services.feed.drain)
    finally:
        sa_event.remove(env.services.db.engine, "before_cursor_execute", count)
    assert len(inserts) == 1
    rows = env.deliveries()
    assert len(rows) == 10
    with env.services.db.read() as conn:
        queued = [json.loads(p)["delivery"] for p in conn.execute(
            select(jobs.c.payload).where(jobs.c.kind == WEBHOOK_JOB).order_by(jobs.c.id)).scalars()]
    heads = {}
    for d in rows:  # each lane's oldest delivery has the job; the rest are parked
        heads.setdefault((d.webhook_id, d.repository), d.id)
    assert sorted(queued) == sorted(heads.values())
    assert all((d.next_attempt_at is None) == (d.id not in heads.values()) for d in rows)
    await env.pump(lambda: all(d.state == "succeeded" for d in env.deliveries()))
    for webhook_id, repository in heads:  # per-endpoint, per-repository order held
        path = "/in" if webhook_id == project_hook["id"] else "/system"
        expected = [d.event_key for d in rows if (d.webhook_id, d.repository) == (webhook_id, repository)]
        got = [r.headers["webhook-id"] for r in env.receiver.requests
               if r.url.path == path and r.headers["webhook-id"] in expected]
        assert got == expected


@pytest.mark.parametrize("change", ["url", "disabled"])
async def test_an_endpoint_changed_mid_batch_is_read_again_before_the_next_delivery(env: Env, change: str):
    await env.project("acme")
    hook = await env.hook("acme")
    keys = [env.event("artifact.pushed", "acme/a") for _ in range(3)]
    await anyio.to_thread.run_sync(env.services.feed.drain)
    answer = env.receiver.__call__

    def change_during_the_first(request):
        if not env.receiver.requests:
            body = {"url": "https://hooks.example/moved"} if change == "url" else {"enabled": False}
            with env.services.db.write() as conn:
                conn.execute(webhooks.update().where(webhooks.c.id == hook["id"]).values(updated_at=utcnow(), **body))
        return answer(request)

    env.services.webhook_dispatcher.transport = httpx.MockTransport(change_during_the_first)
    await run_job(env, lane_job(env))
    if change == "url":
        assert [(r.headers["webhook-id"], r.url.path) for r in env.receiver.requests] == [
            (keys[0], "/in"), (keys[1], "/moved"), (keys[2], "/moved")]
    else:
        assert [r.headers["webhook-id"] for r in env.receiver.requests] == keys[:1]
        assert [d.state for d in env.deliveries()] == ["succeeded", "queued", "queued"]
        assert "disabled" in env.deliveries()[1].last_error


async def test_a_worker_failing_before_a_batch_is_recorded_sends_the_batch_again(env: Env):
    """At least once: the job's own retry (as after a worker died and its lease ran out) sends the
    unrecorded batch again, in order; the log holds the attempts that were recorded."""
    await env.project("acme")
    await env.hook("acme")
    keys = [env.event("artifact.pushed", "acme/a") for _ in range(3)]
    await anyio.to_thread.run_sync(env.services.feed.drain)
    dispatcher = env.services.webhook_dispatcher
    settle = dispatcher._settle

    def crash_once(*args, **kwargs):
        dispatcher._settle = settle
        raise RuntimeError("worker lost before recording the batch")

    dispatcher._settle = crash_once
    await anyio.to_thread.run_sync(env.services.worker.run_pending)
    assert [r.headers["webhook-id"] for r in env.receiver.requests] == keys
    assert [(d.state, d.attempts) for d in env.deliveries()] == [("queued", 0)] * 3  # nothing recorded
    with env.services.db.write() as conn:  # the job's retry is due now instead of in 5 s
        conn.execute(jobs.update().where(jobs.c.kind == WEBHOOK_JOB, jobs.c.state == "queued").values(run_after=utcnow()))
    await env.pump(lambda: all(d.state == "succeeded" for d in env.deliveries()))
    assert [r.headers["webhook-id"] for r in env.receiver.requests] == keys + keys
    assert [(d.state, d.attempts) for d in env.deliveries()] == [("succeeded", 1)] * 3
    assert attempts_log(env) == [(d.id, 1, "succeeded") for d in env.deliveries()]
