"""Small HTTP helpers shared by the routers: OCI error rendering and the API-version header."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.domain.numbers import MAX_DIGITS, parse_count
from dockyard.errors import DockyardError, NotFound, SizeInvalid, Unsupported, render
from dockyard.metadata.faults import infrastructure_error

log = logging.getLogger("dockyard.http")

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")


def quote_param(value: str) -> str:
    """`value` as an RFC 9110 quoted-string for WWW-Authenticate: control characters dropped, `\\` and `"` escaped."""
    cleaned = "".join(ch for ch in value if ch >= " " and ch != "\x7f")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None, media_type: str = "application/json") -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode(), status, headers=headers, media_type=media_type)


def error_response(error: DockyardError, method: str = "GET") -> Response:
    status, body, headers = render(error)
    # Set here too: Starlette sends 500s from outside every middleware, including ApiVersionHeader.
    headers = {**headers, "Docker-Distribution-API-Version": "registry/2.0"}
    if method == "HEAD":
        return Response(b"", status, headers={**headers, "Content-Type": "application/json"})
    return Response(body, status, headers=headers, media_type="application/json")


def content_length(request: Request) -> int | None:
    """The declared body length, or None if absent; SIZE_INVALID (400) if it is not a sane number."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    value = parse_count(raw.strip())
    if value is None:
        raise SizeInvalid(f"Content-Length must be a number of at most {MAX_DIGITS} digits", detail={"content-length": raw[:40]})
    return value


async def on_dockyard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DockyardError)
    return error_response(exc, request.method)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(Unsupported(f"method {request.method} is not allowed here"), request.method)
    if exc.status_code == 404:
        return error_response(NotFound(f"no endpoint at {request.url.path}"), request.method)
    error = DockyardError(exc.detail)
    error.status = exc.status_code  # type: ignore[misc]
    return error_response(error, request.method)


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    # The client went away mid-body (e.g. a cancelled push); nobody is left to read a reply.
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    fault = infrastructure_error(exc)
    if fault is not None:
        # An outage, not a bug: one line, no traceback, and an error the client can act on.
        log.warning("%s on %s %s: %s", fault.code, request.method, request.url.path, exc)
        return error_response(fault, request.method)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(DockyardError("internal server error"), request.method)


class ApiVersionHeader:
    """Adds Docker-Distribution-API-Version to every response (docker's ping looks for it)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name == API_VERSION_HEADER[0] for name, _ in headers):
                    headers.append(API_VERSION_HEADER)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_header)


class UnexpectedErrors:
    """Answers an unhandled exception inside the middleware stack (innermost), with `on_unexpected`.

    Starlette sends the response of an `Exception` handler from ServerErrorMiddleware, outside every user
    middleware: the request id would be reset before the error is logged and missing from the 500, and the
    HTTP metrics would count the 500 as a client that went away (499). Answering here keeps all three."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception as exc:
            if started:
                raise  # too late for an error response: the server drops the connection
            response = await on_unexpected(Request(scope, receive), exc)
            await response(scope, receive, send)
