"""The TLS pieces that need no server: the settings' rules, where the redirect listener sends a client, the
HSTS middleware, the CLI's CA choice and `serve`'s next steps over HTTPS (e2e: tests/e2e/test_tls.py)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from dockyard.api.tls import StrictTransportSecurity, https_location
from dockyard.cli.server import next_steps
from dockyard.cli.tls_serve import check_pair, granian_tls_options, key_file_warning
from dockyard.client.tls import ssl_context
from dockyard.settings import Settings
from tests.support.tls import TestCA


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[TestCA, Path, Path]:
    ca = TestCA(tmp_path_factory.mktemp("ca"))
    cert, key = ca.issue("server")
    return ca, cert, key


def test_cert_and_key_go_together(tmp_path, pair):
    _, cert, key = pair
    with pytest.raises(ValidationError, match="go together"):
        Settings(data_dir=tmp_path, tls_cert_file=cert)
    with pytest.raises(ValidationError, match="need tls_cert_file"):
        Settings(data_dir=tmp_path, tls_redirect_http_port=8080)
    with pytest.raises(ValidationError, match="need tls_cert_file"):
        Settings(data_dir=tmp_path, tls_client_ca_file=cert)
    with pytest.raises(ValidationError, match="must differ"):
        Settings(data_dir=tmp_path, port=8443, tls_cert_file=cert, tls_key_file=key, tls_redirect_http_port=8443)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, tls_cert_file=cert, tls_key_file=key, tls_min_version="1.1")
    assert Settings(data_dir=tmp_path, tls_cert_file=cert, tls_key_file=key).tls_enabled
    assert not Settings(data_dir=tmp_path).tls_enabled


def test_granian_options_default_to_tls12_and_mutual_tls_with_a_client_ca(tmp_path, pair):
    ca, cert, key = pair
    assert granian_tls_options(Settings(data_dir=tmp_path)) == {}
    options = granian_tls_options(Settings(data_dir=tmp_path, tls_cert_file=cert, tls_key_file=key))
    assert str(options["ssl_protocol_min"]) == "tls1.2" and options["ssl_client_verify"] is False
    mutual = granian_tls_options(Settings(data_dir=tmp_path, tls_cert_file=cert, tls_key_file=key,
                                          tls_client_ca_file=ca.ca_file, tls_min_version="1.3"))
    assert str(mutual["ssl_protocol_min"]) == "tls1.3"
    assert mutual["ssl_ca"] == ca.ca_file and mutual["ssl_client_verify"] is True


def test_check_pair_names_what_does_not_load(tmp_path, pair):
    ca, cert, key = pair
    assert check_pair(cert, key) is None
    _, other_key = ca.issue("other")
    assert check_pair(cert, other_key) == f"the private key {other_key} does not match the certificate {cert}"
    assert check_pair(tmp_path / "missing.pem", key) == f"{tmp_path / 'missing.pem'}: no such file"


def test_https_location():
    assert https_location(None, 8443, "registry.example.com:8080", "/v2/a?b=c") == "https://registry.example.com:8443/v2/a?b=c"
    assert https_location(None, 443, "registry.example.com", "/v2/") == "https://registry.example.com/v2/"
    assert https_location(None, 443, "[::1]:80", "/") == "https://[::1]/"
    assert https_location("https://r.example.com/prefix/", 8443, "evil.example", "/prefix/v2/") == "https://r.example.com/prefix/v2/"
    assert https_location("http://r.example.com", 8443, "r.example.com", "/") == "https://r.example.com:8443/"
    for bad in (None, "", "a@b", "[bad"):
        assert https_location(None, 443, bad, "/") is None


def _run(middleware, scheme: str) -> list[tuple[bytes, bytes]]:
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"y")]})
        await send({"type": "http.response.body", "body": b""})

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(app)({"type": "http", "scheme": scheme}, None, send))
    return sent[0]["headers"]


def test_hsts_only_over_https():
    def hsts(app):
        return StrictTransportSecurity(app, max_age=600)

    assert (b"strict-transport-security", b"max-age=600") in _run(hsts, "https")
    assert [h for h, _ in _run(hsts, "http")] == [b"x"]


def test_cli_ca_choice(monkeypatch, pair, tmp_path):
    ca, _, _ = pair
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "DOCKYARD_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    subjects = lambda ctx: {dict(x[0] for x in c["subject"]).get("commonName") for c in ctx.get_ca_certs()}  # noqa: E731
    default = subjects(ssl_context())
    assert "Dockyard Test CA" not in default and len(default) > 10  # certifi's public roots
    monkeypatch.setenv("DOCKYARD_CA_FILE", str(ca.ca_file))
    added = subjects(ssl_context())
    assert "Dockyard Test CA" in added and default <= added  # added to the defaults
    monkeypatch.delenv("DOCKYARD_CA_FILE")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    assert subjects(ssl_context()) == {"Dockyard Test CA"}  # replaces them, as for curl and Go
    monkeypatch.setenv("DOCKYARD_CA_FILE", str(tmp_path / "nope.pem"))
    with pytest.raises(ValueError, match="DOCKYARD_CA_FILE"):
        ssl_context()
    assert isinstance(ssl.create_default_context(), ssl.SSLContext)


def test_next_steps_over_https(tmp_path, pair):
    _, cert, key = pair
    text = "\n".join(next_steps(Settings(data_dir=tmp_path, port=8443, tls_cert_file=cert, tls_key_file=key)))
    assert "dockyard login https://127.0.0.1:8443 -u admin" in text
    assert "API docs: https://127.0.0.1:8443/api/v1/docs" in text


def test_a_key_others_can_read_is_warned_about(pair):
    _, _, key = pair
    assert key_file_warning(key) is None  # 0600
    key.chmod(0o644)
    try:
        assert "readable by other users (mode 644)" in key_file_warning(key)
    finally:
        key.chmod(0o600)


def _closed_by_server(sock, within: float) -> bool:
    """True when the server closes `sock` (recv returns EOF or a reset) before `within` seconds pass."""
    import socket

    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_redirect_listener_drops_idle_connections_and_caps_them():
    """Thread per connection: an idle (slowloris) client must not hold a thread forever, and many at once
    must not take every thread of the serving process; a real client still gets its 308 afterwards."""
    import socket

    from dockyard.cli.tls_serve import start_redirect_listener

    httpd = start_redirect_listener("127.0.0.1", 0, 8443, None, idle_timeout=0.5, max_connections=2)
    port = httpd.server_address[1]
    try:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        extra = socket.create_connection(("127.0.0.1", port))
        assert _closed_by_server(extra, within=5)  # over the cap: closed at once, no thread
        assert all(_closed_by_server(s, within=10) for s in idle)  # idle past the timeout: closed
        for s in (*idle, extra):
            s.close()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: r.example\r\n\r\n")
            assert s.recv(1024).startswith(b"HTTP/1.0 308")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_check_pair_refuses_an_encrypted_key_without_prompting(tmp_path, pair, capfd):
    """serve and SIGHUP check the files in the process that supervises the workers: OpenSSL's default for an
    encrypted key is to ask for its pass phrase on the terminal, which would block that process."""
    from cryptography.hazmat.primitives import serialization

    _, cert, key = pair
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.BestAvailableEncryption(b"hunter2")))
    problem = check_pair(cert, encrypted)
    assert problem is not None and "encrypted" in problem
    assert "pass phrase" not in "".join(capfd.readouterr())


def test_sighup_warns_again_when_the_renewed_key_is_readable_by_others(tmp_path, pair, caplog, monkeypatch):
    """serve warns about a key other users can read; a renewal that rewrote the key 0644 deserves the same
    warning when SIGHUP loads it (the reload still goes ahead: only a warning, as at start)."""
    import logging
    import os

    from granian.server import Server

    from dockyard.cli.tls_serve import granian_server

    _, cert, key = pair
    own = tmp_path / "server.key"
    own.write_bytes(key.read_bytes())
    os.chmod(own, 0o600)
    reloads = []
    monkeypatch.setattr(Server, "signal_handler_reload", lambda self, *a, **kw: reloads.append(True))
    server = granian_server(Settings(data_dir=tmp_path, tls_cert_file=cert, tls_key_file=own), target="x:app")
    with caplog.at_level(logging.WARNING, logger="dockyard.serve"):
        server.signal_handler_reload()
        assert reloads == [True] and "readable by other users" not in caplog.text
        os.chmod(own, 0o644)  # the renewal hook wrote it at its umask
        server.signal_handler_reload()
    assert reloads == [True, True] and "readable by other users" in caplog.text


def test_check_pair_refuses_a_fifo_or_huge_file_without_blocking(tmp_path, pair):
    """The SIGHUP check runs in the process that supervises the workers: a key path that is a FIFO (open blocks
    until a writer comes) or a huge file (read in full) must be refused, not waited on."""
    import os
    import threading

    _, cert, key = pair
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.pem"
    with open(huge, "wb") as fh:
        fh.truncate(64 << 20)
    results: dict[str, str | None] = {}
    for name, path in (("fifo", fifo), ("huge", huge)):
        worker = threading.Thread(target=lambda n=name, p=path: results.__setitem__(n, check_pair(cert, p)), daemon=True)
        worker.start()
        worker.join(timeout=10)
        if worker.is_alive():  # unblock the thread (a writer opens the FIFO) before failing
            with open(fifo, "wb"):
                pass
        assert not worker.is_alive(), f"check_pair blocked on the {name}"
    assert "not a regular file" in results["fifo"]
    assert "too large" in results["huge"]


def test_check_pair_tells_which_file_is_bad_in_words(tmp_path, pair):
    """OpenSSL says `[SSL] PEM lib (_ssl.c:3926)` for a bad certificate and a bad key alike: name the file."""
    ca, cert, key = pair
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file\n")
    assert check_pair(junk, key) == f"the certificate file {junk} holds no PEM certificate"
    assert check_pair(cert, junk) == f"the private key file {junk} holds no PEM private key"
    swapped = "(are tls_cert_file and tls_key_file swapped?)"
    assert check_pair(key, cert) == f"the certificate file {key} holds no PEM certificate {swapped}"
    assert check_pair(cert, cert) == f"the private key file {cert} holds no PEM private key {swapped}"
    assert check_pair(cert, key, junk) == f"the client CA file {junk} holds no usable PEM certificate (no certificate or crl found)"
    assert not any("PEM lib" in (check_pair(a, b) or "") for a, b in ((junk, key), (cert, junk), (key, cert)))


def test_sighup_with_a_bad_key_names_the_file_and_keeps_the_workers(tmp_path, pair, caplog, monkeypatch):
    import logging

    from granian.server import Server

    from dockyard.cli.tls_serve import granian_server

    ca, cert, key = pair
    own = tmp_path / "server.key"
    own.write_bytes(key.read_bytes())
    reloads = []
    monkeypatch.setattr(Server, "signal_handler_reload", lambda self, *a, **kw: reloads.append(True))
    server = granian_server(Settings(data_dir=tmp_path, tls_cert_file=cert, tls_key_file=own), target="x:app")
    own.write_bytes(ca.issue("renewed")[1].read_bytes())  # a renewal that wrote a key of another certificate
    with caplog.at_level(logging.ERROR, logger="dockyard.serve"):
        server.signal_handler_reload()
    assert reloads == [] and f"the private key {own} does not match the certificate {cert}" in caplog.text


def test_redirect_listener_server_header_has_no_trailing_space():
    import http.client

    from dockyard.cli.tls_serve import start_redirect_listener

    httpd = start_redirect_listener("127.0.0.1", 0, 8443, None)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1], timeout=10)
        conn.request("GET", "/v2/", headers={"Host": "r.example"})
        response = conn.getresponse()
        assert response.status == 308 and response.getheader("Server") == "dockyard"
        conn.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_serve_logs_its_own_line_on_stop_and_when_a_reload_finishes(tmp_path, pair, caplog, monkeypatch):
    import logging

    from granian.server import Server

    from dockyard.cli.tls_serve import granian_server

    _, cert, key = pair
    calls = []
    monkeypatch.setattr(Server, "_reload", lambda self, *a, **kw: calls.append("reload"))
    monkeypatch.setattr(Server, "signal_handler_interrupt", lambda self, *a, **kw: calls.append("interrupt"))
    server = granian_server(Settings(data_dir=tmp_path, tls_cert_file=cert, tls_key_file=key, shutdown_timeout_seconds=42),
                            target="x:app")
    with caplog.at_level(logging.INFO, logger="dockyard.serve"):
        server._reload(None, None)
        assert calls == ["reload"]
        assert "SIGHUP: reload finished, every worker restarted with the certificate on disk" in caplog.text
        server.signal_handler_interrupt()
    assert calls == ["reload", "interrupt"]
    assert "stopping (SIGTERM/SIGINT): no new connections; requests in flight get up to 42 s to finish" in caplog.text
