"""Automatic certificates against a real ACME server: Pebble (Let's Encrypt's test CA) on loopback.

Pebble validates every HTTP-01 challenge for real (no PEBBLE_VA_ALWAYS_VALID): it resolves `localhost` with the
system resolver and fetches http://localhost:<httpPort>/.well-known/acme-challenge/<token>, where `httpPort` is
Dockyard's plain-HTTP listener (tls_redirect_http_port). PEBBLE_AUTHZREUSE=0 makes every order validate again;
the certificate lifetime is 30 s (profile validityPeriod), so renewal (at two thirds of it) happens in the test.
Clients trust only Pebble's issuing root, fetched from its management endpoint /roots/0.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import stat
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.support.server import ServerProcess, dockyard_env, free_port, start_server, tool
from tests.support.tls import TestCA

pytestmark = pytest.mark.e2e

VALIDITY_SECONDS = 30
SECRET_KEY = "acme-e2e-kek-0123456789abcdefghijklmnop"


class Pebble:
    def __init__(self, root: Path, *, start: bool = True):
        ca = TestCA(root / "pebble-tls")  # Pebble's own HTTPS (the ACME API), not what it issues
        cert, key = ca.issue("pebble")
        self.tls_ca = ca.ca_file
        self.acme_port, self.mgmt_port, self.http01_port = free_port(), free_port(), free_port()
        config = root / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.acme_port}", "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(cert), "privateKey": str(key), "httpPort": self.http01_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False, "keyAlgorithm": "ecdsa",
            "profiles": {"default": {"description": "short-lived, for renewal", "validityPeriod": VALIDITY_SECONDS}},
        }}))
        self.root, self.config = root, config
        self.directory = f"https://127.0.0.1:{self.acme_port}/dir"
        if start:
            self.start()

    def start(self) -> None:
        root = self.root
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0", "PATH": "/usr/bin:/bin"}
        self.proc = start_server([tool("pebble"), "-config", str(self.config)], port=self.acme_port, data_dir=root,
                                 log_name="pebble.log", env=env, name="pebble", wait=False)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.alive(), self.proc.log_tail()
            try:
                httpx.get(self.directory, verify=ssl.create_default_context(cafile=str(self.tls_ca)), timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, self.proc.log_tail()
                time.sleep(0.1)
        root_pem = httpx.get(f"https://127.0.0.1:{self.mgmt_port}/roots/0", verify=ssl.create_default_context(cafile=str(self.tls_ca)), timeout=5).text
        self.issuing_root = root / "pebble-root.pem"
        self.issuing_root.write_text(root_pem)

    def log(self) -> str:
        return self.proc.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def pebble(tmp_path_factory):
    p = Pebble(tmp_path_factory.mktemp("pebble"))
    yield p
    p.proc.stop()


def _serve(pebble: Pebble, data_dir: Path, *, http_port: int, database_url: str | None = None,
           check_seconds: int = 1, args: tuple[str, ...] = ()) -> ServerProcess:
    port = free_port()
    env = {
        "DOCKYARD_AUTH_MODE": "none", "DOCKYARD_SECRET_KEY": SECRET_KEY,
        "DOCKYARD_ACME_DOMAIN": "localhost", "DOCKYARD_ACME_DIRECTORY_URL": pebble.directory,
        "DOCKYARD_ACME_EMAIL": "ops@example.test", "DOCKYARD_ACME_CA_FILE": str(pebble.tls_ca),
        "DOCKYARD_ACME_CHECK_INTERVAL_SECONDS": str(check_seconds), "DOCKYARD_TLS_REDIRECT_HTTP_PORT": str(http_port),
        **({"DOCKYARD_DATABASE_URL": database_url} if database_url else {}),
    }
    cmd = [sys.executable, "-m", "dockyard", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--workers", "1", *args]
    return start_server(cmd, port=port, data_dir=data_dir, log_name="dockyard.log", name="dockyard",
                        env=dockyard_env(env), wait=False)


def _served(server: ServerProcess, pebble: Pebble) -> tuple[x509.Certificate, str]:
    """The certificate the server presents to a client that trusts only Pebble's root and checks the name
    `localhost` (the handshake fails otherwise), and the status line of GET /v2/ over that connection."""
    ctx = ssl.create_default_context(cafile=str(pebble.issuing_root))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            status = tls.recv(4096).split(b"\r\n", 1)[0].decode()
    return x509.load_der_x509_certificate(der), status


def _wait_served(server: ServerProcess, pebble: Pebble, *, other_than: int | None = None, timeout: float = 60):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        assert server.alive(), f"dockyard exited:\n{server.log_tail()}"
        try:
            cert, status = _served(server, pebble)
            if cert.serial_number != other_than:
                return cert, status
            last = f"still serial {cert.serial_number:x}"
        except (OSError, ssl.SSLError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"no (new) Pebble certificate served: {last}\n{server.log_tail()}")


def _obtained(server: ServerProcess) -> list[str]:
    return re.findall(r"obtained a certificate for localhost, valid until (\S+ \S+)", server.log_tail(100000))


@pytest.fixture(scope="module")
def node_a(pebble, tmp_path_factory):
    data = tmp_path_factory.mktemp("node-a")
    server = _serve(pebble, data, http_port=pebble.http01_port)
    yield server
    server.stop()


def test_obtains_and_serves_a_certificate_validated_over_http01(pebble, node_a):
    cert, status = _wait_served(node_a, pebble)
    assert status == "HTTP/1.1 200 OK"
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert "Pebble Intermediate CA" in cert.issuer.rfc4514_string()
    # Pebble really fetched the challenge from Dockyard's plain-HTTP listener
    log = pebble.log()
    assert f"Attempting to validate w/ HTTP: http://localhost:{pebble.http01_port}/.well-known/acme-challenge/" in log
    assert "set VALID by completed challenge" in log
    # the files are this node's, owner-only; the database holds the keys only sealed
    acme_dir = node_a.data_dir / "acme"
    for name in ("fullchain.pem", "privkey.pem"):
        assert stat.S_IMODE((acme_dir / name).stat().st_mode) == 0o600
    key_body = b"".join((acme_dir / "privkey.pem").read_bytes().strip().splitlines()[1:-1])
    db_bytes = b"".join(p.read_bytes() for p in node_a.data_dir.glob("dockyard.db*"))
    assert key_body[:40] not in db_bytes and b"PRIVATE KEY" not in db_bytes
    # plain HTTP still redirects everything else to HTTPS
    r = httpx.get(f"http://127.0.0.1:{pebble.http01_port}/v2/", headers={"Host": "localhost"})
    assert r.status_code == 308 and r.headers["location"].startswith("https://localhost:")


def test_renews_before_expiry_and_reloads_the_workers(pebble, node_a):
    first, _ = _wait_served(node_a, pebble)
    renewed, status = _wait_served(node_a, pebble, other_than=first.serial_number, timeout=VALIDITY_SECONDS * 2)
    assert status == "HTTP/1.1 200 OK"
    assert renewed.not_valid_after_utc > first.not_valid_after_utc
    # renewed while the old one was still valid (at two thirds of its life), not after it expired
    assert renewed.not_valid_before_utc < first.not_valid_after_utc
    assert "ACME: reloading the workers for the new certificate" in node_a.log_tail(100000)
    assert "SIGHUP: restarting the workers one at a time" in node_a.log_tail(100000)


def test_a_second_node_installs_the_stored_certificate_and_nodes_renew_once(pebble, node_a, tmp_path_factory):
    """Node B shares node A's database (and KEK) but has its own data directory and plain-HTTP port (Pebble
    validates only node A's). Node B serves a Pebble certificate from the database at once; over two renewals
    both nodes converge on each new certificate, and each round is ordered by one node only (the lease): an
    order placed by B is validated through A's listener, which finds the answer in the shared database."""
    data_b = tmp_path_factory.mktemp("node-b")
    node_b = _serve(pebble, data_b, http_port=free_port(), database_url=f"sqlite:///{node_a.data_dir / 'dockyard.db'}")
    try:
        start_serial = _wait_served(node_b, pebble)[0].serial_number  # trusted, so not the placeholder
        converged: list[int] = []
        deadline = time.monotonic() + VALIDITY_SECONDS * 3
        while len(converged) < 2 and time.monotonic() < deadline:
            try:
                a, b = _served(node_a, pebble)[0].serial_number, _served(node_b, pebble)[0].serial_number
            except (OSError, ssl.SSLError):
                a = b = None  # a worker being replaced
            if a == b and a is not None and a != start_serial and a not in converged:
                converged.append(a)
            time.sleep(0.2)
        assert len(converged) == 2, f"nodes did not converge on two renewals: {converged}\n{node_b.log_tail()}"
        orders = sorted(datetime.fromisoformat(t).timestamp() for t in _obtained(node_a) + _obtained(node_b))
        gaps = [later - earlier for earlier, later in zip(orders, orders[1:])]
        assert gaps and all(gap >= VALIDITY_SECONDS / 3 for gap in gaps), f"two orders in one round: {orders}"
        assert "Traceback" not in node_b.log_tail(100000)
    finally:
        node_b.stop()


def test_ca_unreachable_at_start_serves_a_placeholder_then_recovers(tmp_path):
    """No ACME server yet: serve starts anyway with a self-signed placeholder, logs each failure and retries with
    backoff (5 s, then 10 s: the check interval caps it); once the ACME server is up, it gets a certificate."""
    pebble = Pebble(tmp_path / "pebble", start=False)
    server = _serve(pebble, tmp_path / "node", http_port=pebble.http01_port, check_seconds=10)
    try:
        deadline = time.monotonic() + 60
        while "retrying in 10 s" not in server.log_tail(100000):
            assert server.alive(), server.log_tail()
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        log = server.log_tail(100000)
        assert "cannot reach the ACME directory" in log and "serving a self-signed placeholder" in log
        assert log.index("retrying in 5 s") < log.index("retrying in 10 s")
        unverified = ssl.create_default_context()
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            with unverified.wrap_socket(raw, server_hostname="localhost") as tls:
                placeholder = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        assert "placeholder" in placeholder.subject.rfc4514_string()
        pebble.start()
        try:
            cert, status = _wait_served(server, pebble, timeout=40)
            assert status == "HTTP/1.1 200 OK" and "Pebble Intermediate CA" in cert.issuer.rfc4514_string()
        finally:
            pebble.proc.stop()
    finally:
        server.stop()


def test_uvicorn_serves_the_acme_certificate_and_says_a_renewal_needs_a_restart(tmp_path):
    """--server uvicorn has no rolling reload (and SIGHUP would end it): it serves the first certificate, and at
    renewal installs the new files, logs that a restart is needed, and keeps serving."""
    pebble = Pebble(tmp_path / "pebble")
    server = _serve(pebble, tmp_path / "uv", http_port=pebble.http01_port, args=("--server", "uvicorn"))
    try:
        first, status = _wait_served(server, pebble)
        assert status.startswith("HTTP/1.1 200")
        deadline = time.monotonic() + VALIDITY_SECONDS * 2
        while "restart the server to serve it" not in server.log_tail(100000):
            assert server.alive(), server.log_tail()
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        assert server.alive() and _served(server, pebble)[0].serial_number == first.serial_number
    finally:
        server.stop()
        pebble.proc.stop()


def test_a_ca_that_forgot_the_account_gets_it_registered_again(tmp_path):
    """Pebble keeps accounts in memory: restarted, it no longer knows the account URL Dockyard stored (as a CA
    that deactivated an account). The next renewal registers the stored key again and gets its certificate."""
    pebble = Pebble(tmp_path / "pebble")
    server = _serve(pebble, tmp_path / "node", http_port=pebble.http01_port)
    try:
        first, _ = _wait_served(server, pebble)
        pebble.proc.stop()
        pebble.start()  # same ports and configuration, a new CA (new issuing root, no accounts)
        renewed, status = _wait_served(server, pebble, other_than=first.serial_number, timeout=VALIDITY_SECONDS * 2)
        assert status == "HTTP/1.1 200 OK"
        assert "registering again" in server.log_tail(100000)
    finally:
        server.stop()
        pebble.proc.stop()
