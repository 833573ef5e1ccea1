"""Request ids: one id per request, from a trusted-looking `X-Request-Id` or made here, set in
request_context (so logs, audit entries, events and jobs enqueued by the request carry it) and
echoed in the response's `X-Request-Id`. A pure ASGI middleware: nothing is buffered.

An incoming id is kept only if it is short and plain (letters, digits, `-_.:`), so a client
cannot put a newline or a megabyte into every log line and audit row; otherwise a new one is made.
"""

from __future__ import annotations

import itertools
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard import request_context

HEADER = b"x-request-id"
MAX_LENGTH = 128
_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_LENGTH)


class IdMaker:
    """New ids: a random prefix per app (so per worker process) and a counter, 32 hex digits, unique
    across processes and restarts without a random draw per request."""

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:16]
        self.counter = itertools.count(1)

    def accepted(self, value: bytes | None) -> str:
        """The incoming id if it is valid, else a new one."""
        if value is not None and _VALID.fullmatch(value):
            return value.decode("ascii")
        return f"{self.prefix}{next(self.counter):016x}"


class RequestId:
    def __init__(self, app: ASGIApp):
        self.app = app
        self.ids = IdMaker()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:  # ASGI servers give header names in lower case
            if name == HEADER:
                incoming = value
                break
        rid = self.ids.accepted(incoming)
        echoed = (HEADER, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":  # the app never sets this header itself
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        token = request_context.request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_context.request_id.reset(token)
