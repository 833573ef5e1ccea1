"""The job queue, worker and scheduler against real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from dockyard.errors import InvalidRequest, NotFound
from dockyard.jobs.queue import JobQueue
from dockyard.jobs.scheduler import Scheduler
from dockyard.jobs.worker import Worker
from dockyard.metadata.db import utcnow


class Clock:
    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def queue(db, clock):
    return JobQueue(db, lease_seconds=60, clock=clock)


def test_enqueue_claim_succeed_records_result_and_progress(queue):
    job_id = queue.enqueue("echo", {"x": 1})
    assert queue.get(job_id)["state"] == "queued"
    worker = Worker(queue, worker_id="w1")
    seen = []

    def handler(payload, progress):
        progress({"done": 1, "total": 2})
        seen.append(queue.get(job_id)["progress"])
        return {"echo": payload["x"]}

    worker.register("echo", handler)
    assert worker.run_one() is True
    assert worker.run_one() is False
    job = queue.get(job_id)
    assert seen == [{"done": 1, "total": 2}]
    assert (job["state"], job["result"], job["attempts"], job["error"]) == ("succeeded", {"echo": 1}, 1, None)
    assert job["finished_at"] is not None


def test_unknown_job_is_not_found(queue):
    with pytest.raises(NotFound):
        queue.get(987654)


def test_claim_only_takes_registered_kinds_and_due_jobs(queue, clock):
    queue.enqueue("other", {})
    later = queue.enqueue("echo", {}, run_after=clock() + timedelta(seconds=30))
    assert queue.claim("w1", ["echo"]) is None
    clock.advance(31)
    claimed = queue.claim("w1", ["echo"])
    assert claimed is not None and claimed.id == later


def test_failures_retry_with_exponential_backoff_then_fail(queue, clock):
    job_id = queue.enqueue("boom", {}, max_attempts=3)
    worker = Worker(queue, worker_id="w1")
    worker.register("boom", lambda payload, progress: 1 / 0)
    delays = []
    for _ in range(2):
        before = clock()
        assert worker.run_one()
        job = queue.get(job_id)
        assert job["state"] == "queued" and "ZeroDivisionError" in job["error"]
        delays.append((job["run_after"] - before).total_seconds())
        assert not worker.run_one()  # not due yet
        clock.advance(delays[-1])
    assert delays == [5, 10]
    assert worker.run_one()
    job = queue.get(job_id)
    assert (job["state"], job["attempts"]) == ("failed", 3)
    assert not worker.run_one()


def test_a_dead_workers_job_is_claimed_again_after_its_lease(queue, clock):
    job_id = queue.enqueue("echo", {}, max_attempts=2)
    first = queue.claim("dead-worker", ["echo"])
    assert first is not None and queue.claim("w2", ["echo"]) is None  # leased
    clock.advance(61)
    second = queue.claim("w2", ["echo"])
    assert second is not None and second.id == job_id and second.attempts == 2
    # The dead worker waking up cannot overwrite the new owner's outcome.
    assert queue.succeed(first, "dead-worker", {"stale": True}) is False
    assert queue.succeed(second, "w2", {"ok": True}) is True
    assert queue.get(job_id)["result"] == {"ok": True}


def test_lease_expiry_on_the_last_attempt_fails_the_job(queue, clock):
    job_id = queue.enqueue("echo", {}, max_attempts=1)
    assert queue.claim("dead-worker", ["echo"]) is not None
    clock.advance(61)
    assert queue.claim("w2", ["echo"]) is None
    assert queue.fail_exhausted() == 1
    job = queue.get(job_id)
    assert job["state"] == "failed" and "stopped" in job["error"]


def test_concurrent_claims_take_each_job_exactly_once(queue):
    ids = {queue.enqueue("echo", {"n": n}) for n in range(30)}
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while True:
            job = queue.claim(name, ["echo"])
            if job is None:
                return
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(ids)


def test_list_pages_newest_first_and_filters_by_kind(queue):
    a = queue.enqueue("gc", {})
    queue.enqueue("other", {})
    b = queue.enqueue("gc", {})
    page = queue.list("gc", 1, 1)
    assert [j["id"] for j in page.items] == [b] and page.total == 2 and page.has_next
    assert [j["id"] for j in queue.list("gc", 2, 1).items] == [a]
    assert queue.list(None).total == 3


def test_scheduler_enqueues_each_due_run_once_across_workers(db, queue, clock):
    schedulers = [Scheduler(db, queue, clock=clock) for _ in range(3)]
    schedulers[0].set_schedule("gc", "gc", {"dry_run": False}, "*/5 * * * *")
    first = schedulers[0].get("gc")["next_run_at"]
    clock.now = first + timedelta(seconds=1)
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.tick())) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    enqueued = [job for r in results for job in r]
    assert len(enqueued) == 1
    assert queue.get(enqueued[0])["payload"] == {"dry_run": False}
    assert schedulers[1].get("gc")["next_run_at"] == first + timedelta(minutes=5)
    assert all(s.tick() == [] for s in schedulers)


def test_set_schedule_keeps_next_run_when_unchanged_and_removes_on_none(db, queue, clock):
    scheduler = Scheduler(db, queue, clock=clock)
    scheduler.set_schedule("gc", "gc", {}, "0 3 * * *")
    first = scheduler.get("gc")["next_run_at"]
    clock.advance(3600 * 30)
    scheduler.set_schedule("gc", "gc", {}, "0 3 * * *")
    assert scheduler.get("gc")["next_run_at"] == first
    scheduler.set_schedule("gc", "gc", {}, "30 4 * * *")
    assert scheduler.get("gc")["next_run_at"] != first
    scheduler.set_schedule("gc", "gc", {}, None)
    assert scheduler.get("gc") is None


def test_invalid_cron_is_refused(db, queue):
    with pytest.raises(InvalidRequest):
        Scheduler(db, queue).set_schedule("x", "gc", {}, "every day")


async def test_worker_loop_runs_jobs_and_wakes_on_demand(queue):
    worker = Worker(queue, poll_seconds=30, worker_id="loop")
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handler(payload, progress):
        loop.call_soon_threadsafe(done.set)
        return {"ok": 1}

    worker.register("echo", handler)
    claims = []
    claim = queue.claim
    queue.claim = lambda *args: claims.append(claim(*args)) or claims[-1]
    task = asyncio.create_task(worker.run_forever())
    try:
        for _ in range(200):  # until the loop found nothing to claim: it now waits for 30 s
            if claims:
                break
            await asyncio.sleep(0.05)
        assert claims == [None]
        job_id = queue.enqueue("echo", {})
        worker.wake()
        await asyncio.wait_for(done.wait(), 10)
        for _ in range(100):
            if queue.get(job_id)["state"] == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert queue.get(job_id)["state"] == "succeeded"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
