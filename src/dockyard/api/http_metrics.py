"""HTTP metrics with Distribution's names (registry_http_*), as a pure ASGI middleware.

Nothing is buffered: request bytes are counted as the app receives them and response bytes as they
are sent, so a streamed blob stays streamed. `handler` is a route name from a fixed set (the path is
matched as the /v2 router would, suffix first), never the path itself. Per request this costs a few
counter writes and no I/O: no database, no lock held across an await.
"""

from __future__ import annotations

import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.observability.metrics import Metrics

# (handler, pattern), tried in the order of the /v2 route table (api/oci/routes.py).
_V2_ROUTES = [
    ("tags", re.compile(r"/v2/.+/tags/list")),
    ("manifest", re.compile(r"/v2/.+/manifests/[^/]+")),
    ("blob_upload", re.compile(r"/v2/.+/blobs/uploads/?")),
    ("blob_upload_chunk", re.compile(r"/v2/.+/blobs/uploads/[^/]+")),
    ("blob", re.compile(r"/v2/.+/blobs/[^/]+")),
    ("referrers", re.compile(r"/v2/.+/referrers/[^/]+")),
]
HANDLERS = ("base", "catalog", "tags", "manifest", "blob_upload", "blob_upload_chunk", "blob", "referrers",
            "token", "api", "metrics", "health", "other")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def handler_name(path: str) -> str:
    """The bounded route name of a request path."""
    if path.startswith("/v2/"):
        if path == "/v2/":
            return "base"
        if path == "/v2/_catalog":
            return "catalog"
        for name, pattern in _V2_ROUTES:
            if pattern.fullmatch(path):
                return name
        return "other"
    if path == "/v2":
        return "base"
    if path.startswith("/api/v1/") or path == "/api/v1":
        return "api"
    if path == "/token":
        return "token"
    if path == "/metrics":
        return "metrics"
    if path in ("/healthz", "/readyz"):
        return "health"
    return "other"


def blob_project(path: str) -> str:
    """The project of a /v2/<project>/…/blobs/<digest> path."""
    return path[4:].split("/", 1)[0]


class HttpMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple, tuple] = {}

    def _series(self, handler: str, method: str):
        key = (handler, method)
        series = self._children.get(key)
        if series is None:
            m = self.metrics
            series = (
                m.http_in_flight.labels(handler),
                m.http_duration.labels(handler, method),
                m.http_request_size.labels(handler, method),
                m.http_response_size.labels(handler, method),
            )
            self._children[key] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        handler = handler_name(path)
        method = scope.get("method", "GET")
        if method not in METHODS:
            method = "other"
        in_flight, duration, request_size, response_size = self._series(handler, method)
        received = 0
        sent = 0
        status = 0
        length = 0
        start = time.perf_counter()

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal sent, status, length
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-length" and value.isdigit():
                        length = int(value)
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.pathsend":  # zero-copy file send (granian)
                sent += length
            await send(message)

        in_flight.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            in_flight.dec()
            code = str(status) if status else "499"  # no response started: the client went away
            self.metrics.http_requests.labels(handler, code, method).inc()
            duration.observe(time.perf_counter() - start)
            request_size.observe(received)
            response_size.observe(sent)
            if handler == "blob" and method == "GET" and status in (200, 206):
                self.metrics.pulled_bytes.labels(blob_project(path)).inc(sent)

