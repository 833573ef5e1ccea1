"""The worker: claims jobs from the queue and runs their handlers in a thread.

It runs in-process (started in the app lifespan when `worker_enabled`) or as separate
`dockyard worker` processes; every copy is safe to run at once, because claims are
exclusive (see queue.py) and handlers are idempotent. While a handler runs, the loop renews
its lease, so only a dead worker's job is ever claimed again.

Jobs run in lanes: a kind named in `lanes` may run that many jobs at once (`scan_concurrency`
for scans); every other kind shares one lane of one job. A handler that returns `Children`
hands its work to child jobs and its job waits for them (see queue.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import anyio.to_thread

from dockyard import request_context
from dockyard.jobs.queue import Children, ClaimedJob, JobQueue

log = logging.getLogger("dockyard.jobs")

class JobReleased(Exception):
    """Raised by a handler that stopped early because the worker is stopping: the job goes back to
    the queue as it was (not a failed attempt), to be resumed by the next worker."""


Progress = Callable[[dict], None]
Handler = Callable[[dict, Progress], "dict | Children | None"]
DEFAULT_LANE = ""


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        *,
        scheduler=None,
        poll_seconds: float = 1.0,
        worker_id: str | None = None,
        lanes: dict[str, int] | None = None,
        on_finished: Callable[[str, str, float, object], None] | None = None,
    ):
        self.queue = queue
        self.lanes = {kind: max(1, n) for kind, n in (lanes or {}).items()}  # kind -> jobs at once
        self.scheduler = scheduler
        self.poll_seconds = poll_seconds
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.handlers: dict[str, Handler] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping = threading.Event()  # set by stop(); long handlers check it (see JobReleased)
        # (kind, outcome, seconds, result) after each run: metrics (observability/metrics.py)
        self.on_finished = on_finished or (lambda kind, outcome, seconds, result: None)

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
        # Under the enqueuing request's id: its log lines, and the jobs and events it makes, carry it.
        with request_context.acting_as(request_context.actor.get(), job.request_id):
            if job.request_id:
                log.info("job %s (%s) started for request %s", job.id, job.kind, job.request_id)
            started = time.perf_counter()
            outcome, result = self._run_handler(job, heartbeat)
            try:
                self.on_finished(job.kind, outcome, time.perf_counter() - started, result)
            except Exception:  # metrics never fail a job
                log.exception("recording job %s (%s) metrics failed", job.id, job.kind)

    def _run_handler(self, job: ClaimedJob, heartbeat: threading.Event | None) -> tuple[str, object]:
        """Run the handler and settle the job; (outcome, result) for metrics."""
        handler = self.handlers[job.kind]

        def progress(data: dict) -> None:
            self.queue.heartbeat(job, self.worker_id, data)

        try:
            # Events a job records name who asked for it (payload "actor") or the job kind itself.
            with request_context.acting_as(str(job.payload.get("actor") or f"job:{job.kind}")):
                result = handler(job.payload, progress)
        except JobReleased as exc:
            self.queue.release(job, self.worker_id)
            log.info("job %s (%s) released: %s", job.id, job.kind, exc)
            return "released", None
        except Exception as exc:  # a job's failure is recorded on the job, never kills the worker
            state = self.queue.fail(job, self.worker_id, f"{type(exc).__name__}: {exc}")
            log.warning("job %s (%s) failed, now %s", job.id, job.kind, state, exc_info=True)
            return ("failed" if state == "failed" else "retried"), None
        finally:
            if heartbeat is not None:
                heartbeat.set()
        if isinstance(result, Children):
            ids = self.queue.wait_for_children(job, self.worker_id, result)
            log.info("job %s (%s) waits for %d child jobs", job.id, job.kind, len(ids))
            self.wake()
            return "waiting", None
        if not self.queue.succeed(job, self.worker_id, result):
            log.warning("job %s (%s) finished after its lease was lost; its result was dropped", job.id, job.kind)
            return "lost", None
        return "succeeded", result

    # -- the loop ------------------------------------------------------------------------

    def _lane(self, kind: str) -> str:
        return kind if kind in self.lanes else DEFAULT_LANE

    def _claimable_kinds(self, running: dict) -> list[str]:
        """Kinds whose lane has a free slot (a scan lane full of scans leaves GC its own slot)."""
        busy: dict[str, int] = {}
        for lane in running.values():
            busy[lane] = busy.get(lane, 0) + 1
        return [k for k in self.handlers if busy.get(self._lane(k), 0) < self.lanes.get(self._lane(k), 1)]

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        running: dict[asyncio.Task, str] = {}  # task -> lane
        ticks = 0

        def finished(task: asyncio.Task) -> None:
            running.pop(task, None)
            self._wake.set()  # a slot is free: look for the next job now

        try:
            while True:
                self._wake.clear()
                try:
                    if self.scheduler is not None:
                        await anyio.to_thread.run_sync(self.scheduler.tick)
                    if ticks % 60 == 0:
                        await anyio.to_thread.run_sync(self.queue.fail_exhausted)
                    ticks += 1
                    kinds = [] if self.stopping.is_set() else self._claimable_kinds(running)
                    job = await anyio.to_thread.run_sync(self.queue.claim, self.worker_id, kinds) if kinds else None
                    if job is not None:
                        task = asyncio.create_task(self._run_with_lease(job))
                        running[task] = self._lane(job.kind)
                        task.add_done_callback(finished)
                        continue  # there may be more, and a free slot for it
                except asyncio.CancelledError:
                    raise
                except Exception:  # database hiccup: log, wait, try again
                    log.exception("job worker loop failed; retrying")
                # Not asyncio.wait_for: on 3.11 it can swallow a cancel that lands as the event is set
                # (a finished job sets it), and a cancelled loop would then poll on forever.
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({waiter}, timeout=self.poll_seconds)
                finally:
                    waiter.cancel()
        finally:
            # A cancelled loop waits for its handlers (they release their jobs when stopping)
            # rather than orphan threads that still hold a job.
            if running:
                await asyncio.gather(*list(running), return_exceptions=True)

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
