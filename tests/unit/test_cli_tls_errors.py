"""A CLI command against an HTTPS registry whose CA it does not trust says so, and how to trust it, in one
line, whichever command it is (login, get-login-password, any remote command)."""

from __future__ import annotations

import http.server
import ssl
import threading

import pytest
from typer.testing import CliRunner

from dockyard.cli import app as cli
from tests.support.tls import TestCA


class _Ok(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def https_url(tmp_path, monkeypatch):
    """An HTTPS server with a certificate from a private CA the client does not trust."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "DOCKYARD_CA_FILE", "DOCKYARD_URL", "DOCKYARD_USERNAME", "DOCKYARD_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    cert, key = TestCA(tmp_path / "ca").issue("server")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.mark.parametrize("command", [
    ["login", "{url}", "-u", "alice", "-p", "secret"],
    ["get-login-password", "--url", "{url}", "-u", "alice", "-p", "secret"],
    ["admin", "projects", "list", "--url", "{url}", "-u", "alice", "-p", "secret"],
])
def test_an_untrusted_certificate_is_named_with_the_way_to_trust_it(https_url, command):
    result = CliRunner().invoke(cli, [part.format(url=https_url) for part in command])
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # the console may wrap a long line
    assert f"error: cannot reach {https_url}: certificate verify failed (unable to get local issuer certificate)" in output
    assert "trust the registry's CA with DOCKYARD_CA_FILE=/path/ca.pem (see docs/tls.md)" in output
    assert "[SSL: CERTIFICATE_VERIFY_FAILED]" not in output
