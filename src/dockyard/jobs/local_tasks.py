"""Process-local periodic work: what must run in EVERY server process, so it cannot be a job row.

A job in the `jobs` table runs on whichever worker claims it. That is wrong for state that lives
in one process's memory: last-pull times are buffered per process (domain/pulls.py, to keep a
database write off every manifest GET), and a job run by another process cannot flush this
process's buffer. Signing keys cached per process (auth/keys.py) are the same. So these stay per
process, but as named, registered tasks driven by one runner here, started and stopped by the app
lifespan whether or not this process runs a job worker, instead of ad-hoc loops in app.py.

`stop()` cancels the loops and then runs each task's `on_stop` (the final pull flush), so a clean
shutdown loses no pull time. A task's failure is logged and retried on its next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("dockyard.jobs")


@dataclass(frozen=True)
class LocalTask:
    name: str
    seconds: float
    run: Callable[[], Awaitable[object]]
    on_stop: Callable[[], Awaitable[object]] | None = None


class LocalTasks:
    def __init__(self) -> None:
        self.tasks: list[LocalTask] = []
        self._running: list[asyncio.Task] = []

    def every(self, name: str, seconds: float, run: Callable[[], Awaitable[object]], *,
              on_stop: Callable[[], Awaitable[object]] | None = None) -> None:
        self.tasks.append(LocalTask(name, seconds, run, on_stop))

    def start(self) -> None:
        self._running = [asyncio.create_task(self._loop(task), name=f"dockyard-{task.name}") for task in self.tasks]

    async def _loop(self, task: LocalTask) -> None:
        while True:
            await asyncio.sleep(task.seconds)
            try:
                await task.run()
            except Exception:  # keep what we have; the next tick retries
                log.exception("%s failed", task.name)

    async def stop(self) -> None:
        for running in self._running:
            running.cancel()
        for running in self._running:
            with contextlib.suppress(asyncio.CancelledError):
                await running
        self._running = []
        for task in self.tasks:
            if task.on_stop is not None:
                try:
                    await task.on_stop()
                except Exception:
                    log.exception("%s at shutdown failed", task.name)
