"""Issue 19 item 6 at the queue: fair claims per project, child jobs for an index's platform
images, and scan_concurrency lanes in the worker. SQLite and PostgreSQL; ordering is asserted
through the queue, never through timing."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dockyard.jobs.queue import Children, JobQueue
from dockyard.jobs.worker import Worker


@pytest.fixture
def queue(db):
    return JobQueue(db, lease_seconds=60)


async def until(condition, limit: float = 60) -> None:
    """Poll `condition`; fail (not hang) if it never holds."""
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


def test_item6_claims_go_round_robin_across_projects(queue):
    hog = [queue.enqueue("scan", {"n": n}, fair_key="hog") for n in range(60)]
    first_other = queue.enqueue("scan", {"n": "other"}, fair_key="other")
    second_other = queue.enqueue("scan", {"n": "other-2"}, fair_key="other")
    claimed = [queue.claim("w", ["scan"]).id for _ in range(5)]
    # The other project's first job is the second claim, not the 61st; then turns alternate.
    assert claimed == [hog[0], first_other, hog[1], second_other, hog[2]]
    rest = []
    while (job := queue.claim("w", ["scan"])) is not None:
        rest.append(job.id)
    assert rest == hog[3:]  # oldest first within a project


def test_item6_a_new_project_is_served_next_even_after_long_service_of_others(queue):
    for n in range(3):
        queue.enqueue("scan", {"n": n}, fair_key="a")
        queue.enqueue("scan", {"n": n}, fair_key="b")
    assert [queue.claim("w", ["scan"]).fair_key for _ in range(2)] == ["a", "b"]
    newcomer = queue.enqueue("scan", {}, fair_key="c")
    assert queue.claim("w", ["scan"]).id == newcomer


def test_item6_parent_waits_for_its_children_and_succeeds_with_them(queue):
    parent_id = queue.enqueue("scan", {"index": True}, fair_key="p")
    parent = queue.claim("w", ["scan"])
    ids = queue.wait_for_children(parent, "w", Children("scan", [{"image": 1}, {"image": 2}]))
    assert len(ids) == 2
    assert queue.get(parent_id)["state"] == "waiting"
    assert [c["fair_key"] for c in queue.children(parent_id)] == ["p", "p"]
    one = queue.claim("w", ["scan"])
    assert queue.succeed(one, "w", {"images": [{"digest": "one"}]})
    assert queue.get(parent_id)["state"] == "waiting"  # one child left
    two = queue.claim("w", ["scan"])
    assert queue.succeed(two, "w", {"images": [{"digest": "two"}]})
    done = queue.get(parent_id)
    assert done["state"] == "succeeded"
    assert done["result"] == {"children": 2, "failed": 0, "images": [{"digest": "one"}, {"digest": "two"}]}


def test_item6_parent_fails_when_a_child_fails_for_good(queue):
    parent_id = queue.enqueue("scan", {}, fair_key="p")
    parent = queue.claim("w", ["scan"])
    queue.wait_for_children(parent, "w", Children("scan", [{"image": 1}, {"image": 2}], max_attempts=1))
    first = queue.claim("w", ["scan"])
    assert queue.fail(first, "w", "boom") == "failed"
    assert queue.get(parent_id)["state"] == "waiting"
    second = queue.claim("w", ["scan"])
    queue.succeed(second, "w", {})
    done = queue.get(parent_id)
    assert done["state"] == "failed" and "1 of 2 child jobs failed" in done["error"] and "boom" in done["error"]


def test_item6_a_released_child_keeps_its_parent_waiting(queue):
    parent_id = queue.enqueue("scan", {}, fair_key="p")
    queue.wait_for_children(queue.claim("w", ["scan"]), "w", Children("scan", [{"image": 1}]))
    child = queue.claim("w", ["scan"])
    assert queue.release(child, "w")
    assert queue.get(parent_id)["state"] == "waiting"
    assert queue.succeed(queue.claim("w", ["scan"]), "w", {})
    assert queue.get(parent_id)["state"] == "succeeded"


def test_item6_a_pending_duplicate_is_adopted_not_run_twice(queue):
    standalone = queue.enqueue("scan", {"image": 1}, fair_key="p")
    parent_id = queue.enqueue("scan", {"index": True}, fair_key="p")
    assert queue.claim("w", ["scan"]).id == standalone  # running now
    parent = queue.claim("w", ["scan"])
    ids = queue.wait_for_children(parent, "w", Children("scan", [{"image": 1}, {"image": 2}], adopt=[standalone, None]))
    assert ids[0] == standalone and len(queue.children(parent_id)) == 2


def test_item6_an_index_without_images_succeeds_at_once(queue):
    parent_id = queue.enqueue("scan", {}, fair_key="p")
    assert queue.wait_for_children(queue.claim("w", ["scan"]), "w", Children("scan", [], result={"images": []})) == []
    assert queue.get(parent_id)["state"] == "succeeded"


async def test_item6_scan_concurrency_runs_scans_side_by_side_and_other_jobs_beside_them(queue):
    """lanes={"scan": 2}: two scans run at once (they meet at a barrier; with one slot the barrier
    would break), never three, and a GC job runs while both scan slots are busy."""
    worker = Worker(queue, poll_seconds=0.05, worker_id="lanes", lanes={"scan": 2})
    lock = threading.Lock()
    in_flight: list[int] = []
    peak = [0]
    both_running = threading.Barrier(2, timeout=60)
    gc_done = threading.Event()
    seen_by_gc: list[int] = []

    def scan(payload, progress):
        with lock:
            in_flight.append(payload["n"])
            peak[0] = max(peak[0], len(in_flight))
        try:
            if payload["n"] < 2:
                both_running.wait()  # BrokenBarrierError (a failed job) unless two scans run at once
                assert gc_done.wait(60), "GC never ran beside the scans"
        finally:
            with lock:
                in_flight.remove(payload["n"])
        return {"n": payload["n"]}

    def gc(payload, progress):
        with lock:
            seen_by_gc.append(len(in_flight))  # the scans cannot finish before gc_done
        gc_done.set()
        return {}

    worker.register("scan", scan)
    worker.register("gc", gc)
    scans = [queue.enqueue("scan", {"n": n}, fair_key="p") for n in range(3)]
    task = asyncio.create_task(worker.run_forever())
    try:
        await until(lambda: len(in_flight) == 2 or any(queue.get(j)["state"] == "failed" for j in scans))
        gc_job = queue.enqueue("gc", {})
        worker.wake()
        for job_id in [*scans, gc_job]:
            await until(lambda: queue.get(job_id)["state"] not in ("queued", "running"))
        assert [queue.get(j)["state"] for j in [*scans, gc_job]] == ["succeeded"] * 4, [queue.get(j) for j in scans]
        assert peak[0] == 2
        assert seen_by_gc == [2]  # GC ran in its own slot while both scan slots were taken
    finally:
        worker.stop()
        gc_done.set()
        both_running.abort()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class CountingEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    def is_set(self) -> bool:
        self.checks += 1
        return super().is_set()


async def test_item6_a_stopping_worker_claims_nothing_new(queue):
    worker = Worker(queue, poll_seconds=0.05, worker_id="stopping", lanes={"scan": 2})
    ran: list[int] = []
    worker.register("scan", lambda payload, progress: ran.append(payload["n"]) or {})
    turns = CountingEvent()  # each loop turn asks whether the worker is stopping
    worker.stopping = turns
    worker.stop()
    job_id = queue.enqueue("scan", {"n": 1})
    task = asyncio.create_task(worker.run_forever())
    try:

        def five_turns() -> bool:
            worker.wake()  # do not leave it waiting for the poll interval
            return turns.checks >= 5

        await until(five_turns)
        assert ran == [] and queue.get(job_id)["state"] == "queued"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_issue15_a_scan_queued_or_running_for_a_digest_is_reused(db, queue):
    """A blocked pull and a blocked inspect 0.1 s apart queued two scans of one digest: the second request
    found the first already running. Now it joins it; only an explicit rescan (force) queues another."""
    from dockyard.scanning.service import SCAN_JOB, ScanService

    scans = ScanService(db, None, None, None, queue, None, None, None, None)
    digest = "sha256:" + "c" * 64
    first = scans.request("team/app", digest, "builtin")
    assert scans.request("team/app", digest, "builtin") == first
    assert queue.claim("w", [SCAN_JOB]).id == first  # running now
    assert scans.request("team/web", digest, "builtin") == first
    assert scans.request("team/app", digest, "other-scanner") != first  # another scanner's verdict is another scan
    forced = scans.request("team/app", digest, "builtin", force=True)
    assert forced != first and scans.request("team/app", digest, "builtin", force=True) == forced  # joins the queued one


def test_issue15_concurrent_requests_for_one_digest_queue_one_scan(db, queue):
    from dockyard.scanning.service import SCAN_JOB, ScanService

    scans = ScanService(db, None, None, None, queue, None, None, None, None)
    digest = "sha256:" + "d" * 64
    start = threading.Barrier(6)
    ids: list[int] = []

    def ask():
        start.wait()
        ids.append(scans.request("team/app", digest, "builtin"))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 6
    assert queue.claim("w", [SCAN_JOB]).id == ids[0] and queue.claim("w", [SCAN_JOB]) is None
