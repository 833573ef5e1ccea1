"""The HTTP surface every request crosses before routing: Host check, CSRF check, security headers.

- Host: without `public_url`, the token realm and URLs are built from the Host header, so it must be
  a host name or address with an optional port (`Host: evil",error="x` is refused, not reflected).
  With `public_url` set, the Host header is never used to build anything.
- CSRF: a browser can send a cross-site POST with a form body or no body at all, but not with
  `Content-Type: application/json` or a custom header (both need a CORS preflight, which Dockyard
  never grants). So every state-changing /api/v1 request must have one of the two.
- Headers: no response may be framed or sniffed; the API answers JSON and allows no active content.
  The Swagger UI page sets its own Content-Security-Policy (api/mgmt/docs.py).
- Body size: outside /v2 (whose uploads and manifests have their own caps and stream), a body is read
  here up to MAX_BODY_BYTES before the app sees it. The management API and /token parse their bodies
  (JSON, forms, multipart) before they authenticate, so without this an anonymous client could make a
  worker buffer gigabytes, or spool a multipart "file" to the temp dir. The few uploads the API takes
  (STREAMED_PATHS) are streamed by their handler after it has authorized the caller (api/mgmt/uploads.py).
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.api.http import error_response
from dockyard.api.mgmt.uploads import STREAMED_PATHS
from dockyard.errors import CsrfHeaderMissing, HostInvalid, RequestTooLarge
from dockyard.settings import Settings

CLIENT_HEADER = "X-Dockyard-Client"
MANAGEMENT_PREFIX = "/api/v1"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OCI_PREFIX = "/v2/"
MAX_BODY_BYTES = 1024 * 1024  # the largest management request (a PEM key, a policy) is a few KiB
API_CSP = "default-src 'none'; frame-ancestors 'none'"

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_RE = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]{{2,45}}\])(?::[0-9]{{1,5}})?")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def valid_host(host: str) -> bool:
    return len(host) <= 300 and _HOST_RE.fullmatch(host) is not None


def _json_body(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class HttpSurface:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.check_host = settings.public_url is None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("headers", [])
        headers = {k.lower(): v for k, v in raw}
        hosts = [v.decode("latin-1") for k, v in raw if k.lower() == b"host"]
        refusal = self._refusal(scope, headers, hosts)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = list(message.get("headers", []))
                present = {name.lower() for name, _ in out}
                out += [h for h in _SECURITY_HEADERS if h[0] not in present]
                if b"content-security-policy" not in present:
                    out.append((b"content-security-policy", API_CSP.encode()))
                message["headers"] = out
            await send(message)

        path = scope.get("path", "")
        if refusal is None and not path.startswith(OCI_PREFIX) and path not in STREAMED_PATHS:
            refusal, receive = await _bounded_body(headers, receive)
        if refusal is not None:
            await error_response(refusal, scope["method"])(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes], hosts: list[str]):
        # Every Host header counts: frameworks disagree on which of several they use.
        bad = [host for host in hosts if not valid_host(host)]
        if self.check_host and (bad or len(hosts) > 1):
            return HostInvalid(
                "the request must carry one Host header: a host name or IP address with an optional port",
                detail={"host": (bad or hosts)[0][:100].encode("unicode_escape").decode()},
            )
        path = scope.get("path", "")
        if scope["method"] in STATE_CHANGING and (path == MANAGEMENT_PREFIX or path.startswith(MANAGEMENT_PREFIX + "/")):
            if not headers.get(CLIENT_HEADER.lower().encode(), b"").strip() and not _json_body(
                headers.get(b"content-type", b"").decode("latin-1")
            ):
                return CsrfHeaderMissing(
                    f"{scope['method']} on the management API needs a JSON body (Content-Type: application/json) "
                    f"or an {CLIENT_HEADER} header (any value); this protects against cross-site requests",
                    detail={"header": CLIENT_HEADER},
                )
        return None


def _too_large() -> RequestTooLarge:
    return RequestTooLarge(
        f"request body is larger than {MAX_BODY_BYTES} bytes; no request outside /v2 needs that much",
        detail={"limit": MAX_BODY_BYTES},
    )


async def _bounded_body(headers: dict[bytes, bytes], receive: Receive):
    """(refusal or None, receive for the app): the whole body read, up to MAX_BODY_BYTES, then replayed."""
    declared = headers.get(b"content-length", b"").strip()
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _too_large(), receive
    chunks: list[bytes] = []
    size = 0
    pending: list[Message] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            pending.append(message)  # a disconnect: the app sees it after the body it got so far
            break
        body = message.get("body", b"")
        size += len(body)
        if size > MAX_BODY_BYTES:
            return _too_large(), receive
        chunks.append(body)
        if not message.get("more_body", False):
            break
    pending.insert(0, {"type": "http.request", "body": b"".join(chunks), "more_body": False})

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return None, replay
