"""The worker: claims jobs from the queue and runs their handlers in a thread.

It runs in-process (started in the app lifespan when `worker_enabled`) or as separate
`dockyard worker` processes; every copy is safe to run at once, because claims are
exclusive (see queue.py) and handlers are idempotent. While a handler runs, the loop renews
its lease, so only a dead worker's job is ever claimed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Callable

import anyio.to_thread

from dockyard.jobs.queue import ClaimedJob, JobQueue

log = logging.getLogger("dockyard.jobs")

class JobReleased(Exception):
    """Raised by a handler that stopped early because the worker is stopping: the job goes back to
    the queue as it was (not a failed attempt), to be resumed by the next worker."""


Progress = Callable[[dict], None]
Handler = Callable[[dict, Progress], dict | None]


class Worker:
    def __init__(self, queue: JobQueue, *, scheduler=None, poll_seconds: float = 1.0, worker_id: str | None = None):
        self.queue = queue
        self.scheduler = scheduler
        self.poll_seconds = poll_seconds
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.handlers: dict[str, Handler] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping = threading.Event()  # set by stop(); long handlers check it (see JobReleased)

    def register(self, kind: str, handler: Handler) -> None:
        """`handler(payload, progress) -> result dict` runs in a worker thread; it must be idempotent."""
        self.handlers[kind] = handler

    def wake(self) -> None:
        """Look for work now instead of at the next poll (thread-safe; a no-op without a running loop)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        """Ask running handlers to wrap up: they release their job instead of finishing it."""
        self.stopping.set()

    # -- one job, synchronously (the loop, the CLI and tests all go through here) -------

    def run_one(self) -> bool:
        """Claim and run one due job; False when there was none."""
        job = self.queue.claim(self.worker_id, self.handlers)
        if job is None:
            return False
        self._execute(job, heartbeat=None)
        return True

    def run_pending(self, limit: int = 1000) -> int:
        """Run due jobs until none is left (or `limit`); returns how many ran."""
        ran = 0
        while ran < limit and self.run_one():
            ran += 1
        return ran

    def _execute(self, job: ClaimedJob, heartbeat: threading.Event | None) -> None:
        handler = self.handlers[job.kind]

        def progress(data: dict) -> None:
            self.queue.heartbeat(job, self.worker_id, data)

        try:
            result = handler(job.payload, progress)
        except JobReleased as exc:
            self.queue.release(job, self.worker_id)
            log.info("job %s (%s) released: %s", job.id, job.kind, exc)
            return
        except Exception as exc:  # a job's failure is recorded on the job, never kills the worker
            state = self.queue.fail(job, self.worker_id, f"{type(exc).__name__}: {exc}")
            log.warning("job %s (%s) failed, now %s:\n%s", job.id, job.kind, state, traceback.format_exc())
            return
        finally:
            if heartbeat is not None:
                heartbeat.set()
        if not self.queue.succeed(job, self.worker_id, result):
            log.warning("job %s (%s) finished after its lease was lost; its result was dropped", job.id, job.kind)

    # -- the loop ------------------------------------------------------------------------

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        ticks = 0
        while True:
            try:
                if self.scheduler is not None:
                    await anyio.to_thread.run_sync(self.scheduler.tick)
                if ticks % 60 == 0:
                    await anyio.to_thread.run_sync(self.queue.fail_exhausted)
                ticks += 1
                job = await anyio.to_thread.run_sync(self.queue.claim, self.worker_id, list(self.handlers))
                if job is not None:
                    await self._run_with_lease(job)
                    continue  # there may be more
            except asyncio.CancelledError:
                raise
            except Exception:  # database hiccup: log, wait, try again
                log.exception("job worker loop failed; retrying")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except asyncio.TimeoutError:
                pass

    async def _run_with_lease(self, job: ClaimedJob) -> None:
        done = threading.Event()
        renew_every = max(self.queue.lease_seconds / 3, 0.05)

        async def renew() -> None:
            while not done.is_set():
                await asyncio.sleep(renew_every)
                if not done.is_set():
                    await anyio.to_thread.run_sync(self.queue.heartbeat, job, self.worker_id)

        renewer = asyncio.create_task(renew())
        try:
            # Not cancellable: a cancelled server waits for the handler rather than orphaning it.
            await anyio.to_thread.run_sync(self._execute, job, done)
        finally:
            renewer.cancel()
