"""HTTPS at the HTTP edge: the Strict-Transport-Security header on HTTPS responses, and where the plain-HTTP
redirect listener sends a client (docs/tls.md). The TLS handshake itself is granian's (cli/tls_serve.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StrictTransportSecurity:
    """Adds `Strict-Transport-Security: max-age=N` to every response sent over HTTPS. Only over HTTPS: a
    browser ignores the header on plain HTTP (RFC 6797 §7.2), and an operator reaching the server over
    plain HTTP on purpose (a TLS proxy in front) decides HSTS at that proxy."""

    def __init__(self, app: ASGIApp, max_age: int):
        self.app = app
        self.header = (b"strict-transport-security", f"max-age={max_age}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_hsts)


def https_location(public_url: str | None, https_port: int, host_header: str | None, target: str) -> str | None:
    """The https:// URL a plain-HTTP request for `target` (path and query) is redirected to: on public_url's
    host when it is an https URL, else the host the client asked for on the HTTPS port. None when neither names a
    host (no Host header): the listener answers 400 then."""
    if public_url and public_url.startswith("https://"):
        return "https://" + urlsplit(public_url).netloc + target  # the path already carries any prefix
    if not host_header or any(ch in host_header for ch in "/\\@?# \t"):
        return None  # a Host header is host[:port], nothing else
    try:
        hostname = urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None
    if not hostname:
        return None
    host = f"[{hostname}]" if ":" in hostname else hostname
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{host}{port}{target}"
