"""Automatic certificates without an ACME server: the HTTP-01 answers on the plain-HTTP listener, the ordering
lease (two nodes, one orders, both install), the renewal decision, sealing (no plaintext key in the database),
the start-up fallback and the settings' rules. Against a real ACME server (Pebble): tests/e2e/test_acme_pebble.py."""

from __future__ import annotations

import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pydantic import ValidationError
from sqlalchemy import select, update

from dockyard.auth.secret_box import Kek, KeyRing
from dockyard.cli import acme_serve
from dockyard.cli.acme_serve import AcmeManager
from dockyard.cli.tls_serve import start_redirect_listener
from dockyard.domain.acme import AcmeConfig, AcmeFailure, obtain
from dockyard.domain.acme_store import AcmeStore, needs_renewal, placeholder_pair
from dockyard.metadata.acme_tables import acme_accounts, acme_certificates, acme_challenges, acme_leases
from dockyard.settings import Settings
from tests.support.server import free_port
from tests.support.tls import TestCA

DOMAIN = "registry.example.test"


@pytest.fixture
def store(db) -> AcmeStore:
    return AcmeStore(db, KeyRing(Kek.from_secret(b"k" * 32)))


def _issue(tmp_path: Path, name: str = "leaf") -> tuple[bytes, bytes]:
    cert, key = TestCA(tmp_path / f"ca-{name}").issue(name, hosts=(DOMAIN,))
    return cert.read_bytes(), key.read_bytes()


def _manager(store: AcmeStore, tmp_path: Path, node: str, **kwargs) -> AcmeManager:
    manager = AcmeManager(store, AcmeConfig(DOMAIN, "https://acme.invalid/dir"), cert_file=tmp_path / node / "fullchain.pem",
                          key_file=tmp_path / node / "privkey.pem", renew_before_days=30, check_seconds=600, **kwargs)
    manager.holder = node
    return manager


# -- the renewal decision ------------------------------------------------------------------------

def test_renews_only_near_expiry():
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    expires = issued + timedelta(days=90)
    assert not needs_renewal(issued, expires, issued + timedelta(days=59), timedelta(days=30))
    assert needs_renewal(issued, expires, issued + timedelta(days=60), timedelta(days=30))
    assert needs_renewal(issued, expires, expires + timedelta(days=1), timedelta(days=30))  # already expired


def test_a_short_lived_certificate_renews_at_two_thirds_of_its_life():
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    expires = issued + timedelta(days=6)
    assert not needs_renewal(issued, expires, issued + timedelta(days=3), timedelta(days=30))
    assert needs_renewal(issued, expires, issued + timedelta(days=4), timedelta(days=30))


def test_manager_due_reads_the_stored_leaf(store, tmp_path):
    manager = _manager(store, tmp_path, "a")
    assert manager.due(None)
    cert, key = _issue(tmp_path)  # TestCA leaves are valid for one day
    stored = store.save_certificate(DOMAIN, cert, key)
    assert not manager.due(stored)  # a day's certificate with a day left: a third of its life is the window
    manager.renew_before = timedelta(days=2)
    assert not manager.due(stored)


# -- the lease: one node orders, every node installs ----------------------------------------------

def test_lease_has_one_holder_at_a_time(store):
    assert store.take_lease(DOMAIN, "node-a", 60)
    assert not store.take_lease(DOMAIN, "node-b", 60)
    assert store.lease_holder(DOMAIN) == "node-a"
    assert store.take_lease(DOMAIN, "node-a", 60)  # the holder extends it
    store.release_lease(DOMAIN, "node-b")  # not b's to release
    assert store.lease_holder(DOMAIN) == "node-a"
    store.release_lease(DOMAIN, "node-a")
    assert store.take_lease(DOMAIN, "node-b", 60)


def test_a_lapsed_lease_goes_to_the_next_node(store):
    assert store.take_lease(DOMAIN, "node-a", 60)
    with store.db.write() as conn:  # node-a died mid-order: its lease ran out
        conn.execute(update(acme_leases).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert store.lease_holder(DOMAIN) is None
    assert store.take_lease(DOMAIN, "node-b", 60)


def test_two_nodes_one_orders_both_install(store, tmp_path, monkeypatch):
    a, b = _manager(store, tmp_path, "a"), _manager(store, tmp_path, "b")
    orders: list[str] = []
    b_while_a_orders: list[bool] = []

    def fake_obtain(st, config):
        orders.append(st is store and config.domain)
        b_while_a_orders.append(b.order_if_due())  # node b's loop runs while a holds the lease
        cert, key = _issue(tmp_path)
        return st.save_certificate(config.domain, cert, key)

    monkeypatch.setattr(acme_serve, "obtain", fake_obtain)
    a.renew_before = b.renew_before = timedelta(hours=1)
    assert a.order_if_due()
    assert orders == [DOMAIN] and b_while_a_orders == [False]
    assert not b.order_if_due()  # the stored certificate is fresh now: nothing to order
    assert orders == [DOMAIN]
    assert store.lease_holder(DOMAIN) is None  # released after the order
    assert a.install() and b.install()
    fingerprint = store.current(DOMAIN).fingerprint
    for node in ("a", "b"):
        cert_file, key_file = tmp_path / node / "fullchain.pem", tmp_path / node / "privkey.pem"
        assert x509.load_pem_x509_certificate(cert_file.read_bytes()).fingerprint(hashes.SHA256()).hex() == fingerprint
        assert stat.S_IMODE(cert_file.stat().st_mode) == 0o600 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not a.install()  # already current: no rewrite, no reload


def test_concurrent_contenders_order_once(store, tmp_path, monkeypatch):
    """Eight threads (as eight nodes' loops) find no certificate at once: exactly one orders."""
    orders: list[int] = []
    gate = threading.Barrier(8)

    def fake_obtain(st, config):
        orders.append(1)
        cert, key = _issue(tmp_path, f"n{len(orders)}")
        return st.save_certificate(config.domain, cert, key)

    monkeypatch.setattr(acme_serve, "obtain", fake_obtain)
    managers = [_manager(store, tmp_path, f"n{i}") for i in range(8)]
    for m in managers:
        m.renew_before = timedelta(hours=1)
    results: list[bool] = []

    def run(m):
        gate.wait()
        results.append(m.order_if_due())

    threads = [threading.Thread(target=run, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert len(orders) == 1


# -- sealing ---------------------------------------------------------------------------------------

def _key_body(pem: bytes) -> bytes:
    return b"".join(pem.strip().splitlines()[1:-1])


def test_no_private_key_in_the_database_in_plaintext(db, store, tmp_path):
    account_key, _ = store.account("https://acme.invalid/dir", "ops@example.test")
    cert, key = _issue(tmp_path)
    store.save_certificate(DOMAIN, cert, key)
    with db.read() as conn:
        rows = [*conn.execute(select(acme_accounts)).all(), *conn.execute(select(acme_certificates)).all()]
    text = " ".join(str(v) for row in rows for v in row)
    assert "PRIVATE KEY" not in text
    assert _key_body(key).decode()[:40] not in text and _key_body(account_key).decode()[:40] not in text
    assert all(row.key_sealed.startswith("dky1:") for row in rows)
    if db.is_sqlite:
        raw = Path(db.engine.url.database).read_bytes() + (Path(db.engine.url.database + "-wal").read_bytes()
                                                          if Path(db.engine.url.database + "-wal").exists() else b"")
        assert _key_body(key)[:40] not in raw and _key_body(account_key)[:40] not in raw
    # and they open again with the KEK, the account key stably
    assert store.current(DOMAIN, open_key=True).key_pem == key
    assert store.account("https://acme.invalid/dir", None)[0] == account_key


def test_another_kek_cannot_open_them(db, store, tmp_path):
    cert, key = _issue(tmp_path)
    store.save_certificate(DOMAIN, cert, key)
    other = AcmeStore(db, KeyRing(Kek.from_secret(b"z" * 32)))
    with pytest.raises(Exception, match="key-encryption key"):
        other.current(DOMAIN, open_key=True)


# -- the HTTP-01 answer on the plain-HTTP listener ---------------------------------------------------

@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_challenge_handler_answers_from_the_database(store):
    port = free_port()
    httpd = start_redirect_listener("127.0.0.1", port, 8443, None, challenge=store.challenge_response)
    try:
        store.put_challenge("tok-123_abc", "tok-123_abc.thumbprint")
        base = f"http://127.0.0.1:{port}"
        r = httpx.get(f"{base}/.well-known/acme-challenge/tok-123_abc", headers={"Host": "localhost:80"})
        assert (r.status_code, r.text, r.headers["content-type"]) == (200, "tok-123_abc.thumbprint", "text/plain")
        assert httpx.get(f"{base}/.well-known/acme-challenge/unknown").status_code == 404
        assert httpx.get(f"{base}/.well-known/acme-challenge/x/tok-123_abc").status_code == 404  # one path segment only
        redirected = httpx.get(f"{base}/v2/", headers={"Host": "localhost"})
        assert (redirected.status_code, redirected.headers["location"]) == (308, "https://localhost:8443/v2/")
        store.drop_challenge("tok-123_abc")
        assert httpx.get(f"{base}/.well-known/acme-challenge/tok-123_abc").status_code == 404
        store.put_challenge("old", "old.tp")
        with store.db.write() as conn:
            conn.execute(update(acme_challenges).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        assert httpx.get(f"{base}/.well-known/acme-challenge/old").status_code == 404
    finally:
        httpd.shutdown()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_without_acme_the_listener_redirects_challenges_too(store):
    port = free_port()
    httpd = start_redirect_listener("127.0.0.1", port, 8443, None)
    try:
        store.put_challenge("tok", "tok.tp")
        r = httpx.get(f"http://127.0.0.1:{port}/.well-known/acme-challenge/tok", headers={"Host": "localhost"})
        assert r.status_code == 308
    finally:
        httpd.shutdown()


# -- failures: start anyway, retry with backoff -----------------------------------------------------

@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_unreachable_directory_is_a_clear_failure(store):
    config = AcmeConfig(DOMAIN, f"https://127.0.0.1:{free_port()}/dir", timeout_seconds=5)
    with pytest.raises(AcmeFailure, match="cannot reach the ACME directory"):
        obtain(store, config)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_start_up_without_a_ca_serves_a_placeholder(store, tmp_path):
    manager = AcmeManager(store, AcmeConfig(DOMAIN, f"https://127.0.0.1:{free_port()}/dir"),
                          cert_file=tmp_path / "n" / "fullchain.pem", key_file=tmp_path / "n" / "privkey.pem",
                          renew_before_days=30, check_seconds=600)
    manager.prepare()  # does not raise
    leaf = x509.load_pem_x509_certificate(manager.cert_file.read_bytes())
    assert "placeholder" in leaf.subject.rfc4514_string()
    assert store.lease_holder(DOMAIN) is None  # the failed order released its lease
    assert [manager.retry_delay(n) for n in (1, 2, 3, 4, 10, 20)] == [5, 10, 20, 40, 600, 600]


def test_placeholder_names_the_domain():
    cert, _key = placeholder_pair(DOMAIN)
    leaf = x509.load_pem_x509_certificate(cert)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [DOMAIN]


# -- settings ----------------------------------------------------------------------------------------

def test_acme_settings_rules(tmp_path):
    ca = TestCA(tmp_path / "ca")
    cert, key = ca.issue("server")
    with pytest.raises(ValidationError, match="exclude each other"):
        Settings(data_dir=tmp_path, acme_domain=DOMAIN, tls_redirect_http_port=8080, tls_cert_file=cert, tls_key_file=key)
    with pytest.raises(ValidationError, match="needs tls_redirect_http_port"):
        Settings(data_dir=tmp_path, acme_domain=DOMAIN)
    with pytest.raises(ValidationError, match="must be a DNS name"):
        Settings(data_dir=tmp_path, acme_domain="https://registry.example.com", tls_redirect_http_port=8080)
    s = Settings(data_dir=tmp_path, acme_domain=DOMAIN, tls_redirect_http_port=8080)
    assert s.tls_enabled and s.acme_cert_file == (tmp_path / "acme" / "fullchain.pem").resolve()
    # what serve hands its workers (the files ACME wrote) passes the same rules
    assert Settings(data_dir=tmp_path, acme_domain=DOMAIN, tls_redirect_http_port=8080,
                    tls_cert_file=s.acme_cert_file, tls_key_file=s.acme_key_file).tls_enabled


def test_serve_refuses_bad_acme_configuration_clearly(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dockyard.cli import app

    ca = TestCA(tmp_path / "ca")
    cert, key = ca.issue("server")
    monkeypatch.setenv("DOCKYARD_ACME_DOMAIN", DOMAIN)
    base = ["serve", "--host", "127.0.0.1", "--port", str(free_port()), "--data-dir", str(tmp_path / "d")]
    both = CliRunner().invoke(app, [*base, "--tls-cert", str(cert), "--tls-key", str(key)])
    assert both.exit_code == 2 and "acme_domain and tls_cert_file exclude each other" in " ".join(both.output.split())
    no_port = CliRunner().invoke(app, base)
    assert no_port.exit_code == 2 and "acme_domain needs tls_redirect_http_port" in " ".join(no_port.output.split())
    assert not (tmp_path / "d" / "dockyard.db").exists()  # refused before touching anything


def test_kek_rotation_reseals_the_acme_keys(db, store, tmp_path):
    from dockyard.domain.acme_store import reseal

    account_key, _ = store.account("https://acme.invalid/dir", None)
    cert, key = _issue(tmp_path)
    store.save_certificate(DOMAIN, cert, key)
    new_ring = KeyRing(Kek.from_secret(b"n" * 32))
    assert reseal(db, store.ring, new_ring) == 2
    rotated = AcmeStore(db, new_ring)
    assert rotated.current(DOMAIN, open_key=True).key_pem == key
    assert rotated.account("https://acme.invalid/dir", None)[0] == account_key
    with pytest.raises(Exception, match="key-encryption key"):
        store.current(DOMAIN, open_key=True)  # the old KEK no longer opens them


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_admin_acme_status(store, tmp_path):
    import json as _json

    from typer.testing import CliRunner

    from dockyard.cli import app

    data_dir = Path(store.db.engine.url.database).parent
    cert, key = _issue(tmp_path)
    stored = store.save_certificate(DOMAIN, cert, key)
    store.take_lease(DOMAIN, "node-a:42", 60)
    (data_dir / "acme").mkdir()
    (data_dir / "acme" / "fullchain.pem").write_bytes(cert)
    result = CliRunner().invoke(app, ["admin", "acme", "status", "--data-dir", str(data_dir),
                                      "--database-url", str(store.db.engine.url), "--json"])
    assert result.exit_code == 0, result.output
    rows = _json.loads(result.output[result.output.index("["):])
    assert [(r["domain"], r["fingerprint"], r["ordering"], r["installed_here"]) for r in rows] == [
        (DOMAIN, stored.fingerprint, "node-a:42", True)]
    assert "PRIVATE" not in result.output
    text = CliRunner().invoke(app, ["admin", "acme", "status", "--data-dir", str(data_dir), "--database-url", str(store.db.engine.url)])
    assert text.exit_code == 0 and f"{DOMAIN}: valid until" in text.output and "ordering now: node-a:42" in text.output


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_start_while_another_node_orders_uses_a_placeholder_and_looks_again_soon(store, tmp_path, monkeypatch):
    monkeypatch.setattr(acme_serve, "obtain", lambda *a: pytest.fail("must not order while another node holds the lease"))
    store.take_lease(DOMAIN, "node-a", 60)
    b = _manager(store, tmp_path, "b")
    b.prepare()
    assert "placeholder" in x509.load_pem_x509_certificate(b.cert_file.read_bytes()).subject.rfc4514_string()
    assert b._start_failures == 1  # its loop looks again after retry_delay(1) = 5 s, not check_seconds
    cert, key = _issue(tmp_path)
    store.save_certificate(DOMAIN, cert, key)  # node a finished
    assert b.check() and b.cert_file.read_bytes() == cert
