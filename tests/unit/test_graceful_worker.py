"""Graceful shutdown of a job worker (issue 16), driven the way the server's lifespan stops it
(`stop()`, then cancel and await `run_forever`): it claims nothing new, a job in progress finishes,
and a long job that honours `stopping` goes back to the queue as it was, for the next process."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from dockyard.jobs.queue import JobQueue
from dockyard.jobs.worker import JobReleased, Worker

from tests.unit.test_scan_queue import until


@pytest.fixture
def queue(db):
    return JobQueue(db, lease_seconds=60)


async def _shut_down(worker: Worker, task: asyncio.Task) -> None:
    """What app.py's lifespan does on SIGTERM."""
    worker.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)


async def test_a_job_in_progress_finishes_and_nothing_new_is_claimed(queue):
    worker = Worker(queue, poll_seconds=0.05, worker_id="old-process")
    entered, proceed = threading.Event(), threading.Event()

    def handler(payload, progress):
        entered.set()
        assert proceed.wait(30)
        return {"done": payload["n"]}

    worker.register("gc", handler)
    running = queue.enqueue("gc", {"n": 1})
    task = asyncio.create_task(worker.run_forever())
    await until(entered.is_set)
    waiting = queue.enqueue("gc", {"n": 2})
    stopping = asyncio.create_task(_shut_down(worker, task))
    await until(worker.stopping.is_set)
    proceed.set()  # the job in flight completes after shutdown began
    await stopping
    assert queue.get(running)["state"] == "succeeded" and queue.get(running)["result"] == {"done": 1}
    assert queue.get(waiting)["state"] == "queued" and queue.get(waiting)["attempts"] == 0


async def test_a_long_job_is_released_untouched_and_the_next_process_runs_it(queue):
    worker = Worker(queue, poll_seconds=0.05, worker_id="old-process")
    entered = threading.Event()

    def long_handler(payload, progress):
        entered.set()
        while not worker.stopping.wait(0.01):
            pass
        raise JobReleased("shutting down")

    worker.register("scan", long_handler)
    job_id = queue.enqueue("scan", {"n": 1})
    task = asyncio.create_task(worker.run_forever())
    await until(entered.is_set)
    await _shut_down(worker, task)
    job = queue.get(job_id)
    assert job["state"] == "queued" and job["attempts"] == 0  # not a failed attempt

    successor = Worker(queue, poll_seconds=0.05, worker_id="new-process")
    successor.register("scan", lambda payload, progress: {"scanned": payload["n"]})
    assert successor.run_one()
    assert queue.get(job_id)["state"] == "succeeded" and queue.get(job_id)["result"] == {"scanned": 1}
