"""Per-endpoint ordering: deliveries of one endpoint for one repository go out in id order.

A (webhook, repository) pair is a lane. Only the oldest queued delivery of a lane has a job;
the younger ones are parked (`next_attempt_at` NULL, no job). When the head finishes (succeeded
or dead) the next one is scheduled in the same transaction. A job that finds an older queued
delivery in its lane (a redelivery of an old event jumped in) parks itself, so the rule holds
whatever order jobs are claimed in. Each queued job carries the delivery's `turn`; a job with an
older turn is stale (the delivery was rescheduled or redelivered since) and does nothing.

A job sends its lane in batches (delivery.py): the head and the parked deliveries behind it go out
in order, and one transaction settles them all and takes the next batch over (its head gets a new
turn and `next_attempt_at`, no job; the rest stay parked). That saves the queue's round trip and
a write transaction per delivery. If the worker dies in between, that head is queued with no job;
`repair` (run by the fan-out) gives any delivery overdue by more than a grace period a new job. A
worker that dies mid-batch before settling leaves the job's lease to run out: the job runs again
and sends the batch again (at least once).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, select, update

from dockyard.metadata import job_kinds
from dockyard.metadata.webhook_tables import webhook_deliveries as d

WEBHOOK_JOB = job_kinds.WEBHOOK_DELIVERY  # one attempt of one delivery, then the lane's next ones
JOB_ATTEMPTS = 3  # job-level retries only cover a worker dying mid-attempt; delivery retries are ours


def older_pending(conn: Connection, webhook_id: int, repository: str, delivery_id: int) -> int | None:
    return conn.execute(
        select(d.c.id).where(
            d.c.webhook_id == webhook_id, d.c.repository == repository, d.c.state == "queued", d.c.id < delivery_id
        ).order_by(d.c.id).limit(1)
    ).scalar()


def schedule(conn: Connection, jobs, delivery_id: int, webhook_id: int, when: datetime) -> int:
    """Give the delivery a job due at `when` (a new turn, so any earlier job of it goes stale)."""
    turn = conn.execute(
        update(d).where(d.c.id == delivery_id).values(turn=d.c.turn + 1, next_attempt_at=when).returning(d.c.turn)
    ).scalar_one()
    jobs.enqueue_in(conn, WEBHOOK_JOB, {"delivery": delivery_id, "turn": turn}, run_after=when,
                    max_attempts=JOB_ATTEMPTS, fair_key=f"webhook:{webhook_id}")
    return turn


def park(conn: Connection, delivery_id: int, reason: str | None = None) -> None:
    values: dict = {"next_attempt_at": None}
    if reason:
        values["last_error"] = reason
    conn.execute(update(d).where(d.c.id == delivery_id).values(**values))


def place(conn: Connection, jobs, delivery_id: int, webhook_id: int, repository: str, now: datetime) -> bool:
    """Schedule a (re)queued delivery now if it heads its lane, else park it. True if scheduled."""
    if older_pending(conn, webhook_id, repository, delivery_id) is not None:
        park(conn, delivery_id)
        return False
    schedule(conn, jobs, delivery_id, webhook_id, now)
    return True


def advance(conn: Connection, jobs, webhook_id: int, repository: str, now: datetime) -> int | None:
    """After a lane's head finished: schedule the next parked delivery of the lane, if any."""
    row = conn.execute(
        select(d.c.id, d.c.next_attempt_at).where(
            d.c.webhook_id == webhook_id, d.c.repository == repository, d.c.state == "queued"
        ).order_by(d.c.id).limit(1)
    ).first()
    if row is None or row.next_attempt_at is not None:
        return None
    schedule(conn, jobs, row.id, webhook_id, now)
    return row.id


def queued(conn: Connection, webhook_id: int, repository: str, limit: int) -> list:
    """The lane's queued deliveries, oldest first: (id, turn, event, next_attempt_at)."""
    return conn.execute(
        select(d.c.id, d.c.turn, d.c.event, d.c.next_attempt_at)
        .where(d.c.webhook_id == webhook_id, d.c.repository == repository, d.c.state == "queued")
        .order_by(d.c.id).limit(limit)
    ).all()


def parked_behind(lane: list) -> list:
    """Of `queued`'s rows, those after the head up to the first with a job of its own."""
    out = []
    for row in lane[1:]:
        if row.next_attempt_at is not None:
            break
        out.append(row)
    return out


def repair(conn: Connection, jobs, now: datetime, grace_seconds: float, limit: int = 100) -> int:
    """Give a new job to deliveries overdue by more than `grace_seconds` (one taken over by a worker
    that died). A job still waiting for them becomes stale: at most a duplicate attempt."""
    overdue = conn.execute(
        select(d.c.id, d.c.webhook_id).where(
            d.c.state == "queued", d.c.next_attempt_at.is_not(None),
            d.c.next_attempt_at < now - timedelta(seconds=grace_seconds),
        ).order_by(d.c.id).limit(limit)
    ).all()
    for row in overdue:
        schedule(conn, jobs, row.id, row.webhook_id, now)
    return len(overdue)


def resume(conn: Connection, jobs, webhook_id: int, now: datetime) -> int:
    """A re-enabled endpoint: schedule the head of each of its lanes that has no job."""
    lanes = conn.execute(
        select(d.c.repository).where(d.c.webhook_id == webhook_id, d.c.state == "queued").distinct()
    ).scalars().all()
    return sum(1 for repository in lanes if advance(conn, jobs, webhook_id, repository, now) is not None)
