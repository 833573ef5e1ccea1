"""Who and which request the current code runs for, without threading it through every call.

The HTTP layer sets these per request; `anyio.to_thread.run_sync` copies context variables into
its worker thread, so a domain service called through `Database.run` sees the same values. The
event feed, the audit log and job logs read them, so one request id ties all three together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("dockyard_request_id", default=None)
actor: ContextVar[str | None] = ContextVar("dockyard_actor", default=None)


@contextlib.contextmanager
def acting_as(name: str | None, rid: str | None = None) -> Iterator[None]:
    """Run a block (a job, a CLI command) on behalf of `name`, optionally under request id `rid`."""
    tokens = [actor.set(name)]
    if rid is not None:
        tokens.append(request_id.set(rid))
    try:
        yield
    finally:
        for var, token in zip((actor, request_id), tokens):
            var.reset(token)


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Run a block on behalf of no one and of no request: work for many clients (a batch of their
    pulls) that happens to run inside one request must not be attributed to that request's caller."""
    tokens = (actor.set(None), request_id.set(None))
    try:
        yield
    finally:
        request_id.reset(tokens[1])
        actor.reset(tokens[0])
