"""HTTP metrics with Distribution's names (registry_http_*), as a pure ASGI middleware.

Nothing is buffered: request bytes are counted as the app receives them and response bytes as they
are sent, so a streamed blob stays streamed. `handler` is a route name from a fixed set (the path is
matched as the /v2 router would, suffix first), never the path itself. Per request this costs a few
counter writes and no I/O: no database, no lock held across an await.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.observability.metrics import Metrics

HANDLERS = ("base", "catalog", "tags", "manifest", "blob_upload", "blob_upload_chunk", "blob", "referrers",
            "token", "api", "metrics", "health", "other")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BY_SEGMENT = {"manifests": "manifest", "blobs": "blob", "referrers": "referrers"}  # /v2/<name>/<segment>/<x>
_OTHERS = {"/v2": "base", "/token": "token", "/metrics": "metrics", "/healthz": "health", "/readyz": "health"}


def _v2_handler(path: str) -> str:
    """Match as api/oci/routes.py does, upload routes before blob routes, on the last two segments
    (string operations, not regexes: this runs for every request)."""
    head, _, last = path.rpartition("/")
    parent, _, segment = head.rpartition("/")
    if len(parent) < 4:  # "/v2/<name>/…" needs a name
        return "other"
    if segment == "uploads" and parent.endswith("/blobs") and len(parent) > 9:
        return "blob_upload" if last == "" else "blob_upload_chunk"
    if segment == "blobs" and last == "uploads":
        return "blob_upload"
    if segment == "tags":
        return "tags" if last == "list" else "other"
    name = _BY_SEGMENT.get(segment)
    return name if name is not None and last else "other"


def handler_name(path: str) -> str:
    """The bounded route name of a request path."""
    if path.startswith("/v2/"):
        if path == "/v2/":
            return "base"
        if path == "/v2/_catalog":
            return "catalog"
        return _v2_handler(path)
    if path.startswith("/api/v1/") or path == "/api/v1":
        return "api"
    return _OTHERS.get(path, "other")


def blob_project(path: str) -> str:
    """The project of a /v2/<project>/…/blobs/<digest> path."""
    return path[4:].split("/", 1)[0]


class HttpMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.stats = metrics.http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        handler = handler_name(path)
        method = scope.get("method", "GET")
        if method not in METHODS:
            method = "other"
        received = 0
        sent = 0
        status = 0
        headers = ()
        start = time.perf_counter()

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            body = message.get("body")
            if body:
                received += len(body)
            return message

        async def counting_send(message: Message) -> None:
            nonlocal sent, status, headers
            kind = message["type"]
            if kind == "http.response.body":
                body = message.get("body")
                if body:
                    sent += len(body)
            elif kind == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
            elif kind == "http.response.pathsend":  # zero-copy file send (granian): the length it declared
                sent += next((int(v) for k, v in headers if k.lower() == b"content-length" and v.isdigit()), 0)
            await send(message)

        stats = self.stats
        stats.started(handler)
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            # 499: no response started (the client went away), as nginx logs it
            stats.finished(handler, method, str(status) if status else "499", time.perf_counter() - start, received, sent)
            if handler == "blob" and method == "GET" and status in (200, 206):
                stats.pulled(blob_project(path), sent)
