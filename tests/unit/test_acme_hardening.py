"""Automatic certificates against hostile input: what a misbehaving ACME server sends, what remote clients ask
the challenge listener, races with other nodes and with `rotate-kek`. The happy paths: tests/unit/test_acme.py."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dockyard.auth.secret_box import Kek, KeyRing
from dockyard.domain import acme as acme_mod
from dockyard.domain.acme import AcmeConfig, AcmeFailure, obtain
from dockyard.domain.acme_store import AcmeStore

DOMAIN = "registry.example.test"
NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture
def store(db) -> AcmeStore:
    return AcmeStore(db, KeyRing(Kek.from_secret(b"k" * 32)))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class HostileCA:
    """Signs what new_order's CSR asks for, as told: another name, another key, another lifetime, a broken chain."""

    def __init__(self, *, names=(DOMAIN,), other_key=False, not_before=NOW - dt.timedelta(hours=1),
                 not_after=NOW + dt.timedelta(days=90), broken_chain=False, garbage: bytes | None = None):
        self.names, self.other_key, self.not_before, self.not_after = names, other_key, not_before, not_after
        self.broken_chain, self.garbage = broken_chain, garbage
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = (x509.CertificateBuilder().subject_name(_name("hostile CA")).issuer_name(_name("hostile CA"))
                   .public_key(self.ca_key.public_key()).serial_number(1)
                   .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(self.ca_key, hashes.SHA256()))

    def new_order(self, csr_pem: bytes):
        self.csr = x509.load_pem_x509_csr(csr_pem)
        return SimpleNamespace(authorizations=[])

    def poll_and_finalize(self, order, deadline):
        if self.garbage is not None:
            return SimpleNamespace(fullchain_pem=self.garbage.decode())
        public = ec.generate_private_key(ec.SECP256R1()).public_key() if self.other_key else self.csr.public_key()
        signer = ec.generate_private_key(ec.SECP256R1()) if self.broken_chain else self.ca_key
        leaf = (x509.CertificateBuilder().subject_name(_name(self.names[0])).issuer_name(self.ca.subject)
                .public_key(public).serial_number(2).not_valid_before(self.not_before).not_valid_after(self.not_after)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in self.names]), critical=False)
                .sign(signer, hashes.SHA256()))
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, self.ca))
        return SimpleNamespace(fullchain_pem=pem.decode())


def _obtain_from(store, monkeypatch, ca: HostileCA):
    monkeypatch.setattr(acme_mod, "_client", lambda st, config: (ca, None))
    return obtain(store, AcmeConfig(DOMAIN, "https://acme.invalid/dir"))


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_well_formed_certificate_is_stored(store, monkeypatch):
    stored = _obtain_from(store, monkeypatch, HostileCA())
    assert store.current(DOMAIN).fingerprint == stored.fingerprint


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_certificate_valid_from_minutes_ahead_is_taken(store, monkeypatch):
    """Our clock running a few minutes (even hours) slow is no reason to refuse: clients judge by their own
    clocks, and refusing would fail every renewal until the old certificate expired."""
    stored = _obtain_from(store, monkeypatch, HostileCA(not_before=NOW + dt.timedelta(minutes=30)))
    assert store.current(DOMAIN).fingerprint == stored.fingerprint


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("ca", "reason"), [
    (lambda: HostileCA(names=("evil.example.test",)), "not registry.example.test"),
    (lambda: HostileCA(other_key=True), "not for the key we asked with"),
    (lambda: HostileCA(not_after=NOW - dt.timedelta(minutes=1)), "not now"),
    (lambda: HostileCA(not_before=NOW + dt.timedelta(days=2)), "not now"),
    (lambda: HostileCA(broken_chain=True), "chain .* is broken"),
    (lambda: HostileCA(garbage=b"<html>hello</html>"), "no PEM certificate chain"),
    (lambda: HostileCA(garbage=b"-----BEGIN CERTIFICATE-----\n" + b"A" * (300 << 10)), "byte chain"),
], ids=["other-domain", "other-key", "expired", "not-yet-valid", "broken-chain", "not-pem", "oversized"])
def test_a_bad_certificate_from_the_ca_is_refused_and_not_stored(store, monkeypatch, ca, reason):
    with pytest.raises(AcmeFailure, match=reason):
        _obtain_from(store, monkeypatch, ca())
    assert store.current(DOMAIN) is None  # no node installs it


# -- the challenge listener: only a live answer, for a token that could be one --------------------------

@pytest.mark.parametrize("token", ["a\x00b", "tok\u00e9", "x" * 201, "", "../../etc/passwd", "t' OR '1'='1", "t%2F..", "t.k"])
def test_a_token_that_cannot_be_one_is_not_looked_up(store, token):
    """Tokens are base64url (RFC 8555 8.3). Anything else is answered 404 without a query: a NUL made PostgreSQL
    raise, and the listener logged a traceback for every such request."""
    store.put_challenge("tok-123_abc", "tok-123_abc.thumbprint")
    calls = []
    store.db.read = lambda: calls.append(1)  # any query now fails the test
    assert store.challenge_response(token) is None
    assert calls == []


def test_a_nul_in_the_token_is_a_plain_404(store):
    store.put_challenge("tok-123_abc", "tok-123_abc.thumbprint")
    assert store.challenge_response("tok-123_abc\x00") is None  # PostgreSQL refused the query (an error per request)
    assert store.challenge_response("tok-123_abc") == "tok-123_abc.thumbprint"


# -- rotate-kek while a server renews --------------------------------------------------------------------

def _pair(domain: str = DOMAIN) -> tuple[bytes, bytes]:
    ca = HostileCA()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(domain)).sign(key, hashes.SHA256())
    ca.new_order(csr.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.poll_and_finalize(None, None).fullchain_pem.encode(), key_pem


def _leaf_matches_key(stored) -> bool:
    leaf = x509.load_pem_x509_certificates(stored.fullchain_pem)[0]
    key = serialization.load_pem_private_key(stored.key_pem, password=None)
    der = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return leaf.public_key().public_bytes(*der) == key.public_key().public_bytes(*der)


def test_a_renewal_finishing_after_rotate_kek_is_refused_not_sealed_under_the_old_kek(db, store):
    """The server (old KEK in memory) ordered; `rotate-kek` committed meanwhile. Storing the new key under the old
    KEK would leave a certificate no node with the new KEK can install (and a fresh node could not start)."""
    from dockyard.auth.secret_box import KeyEncryptionError
    from dockyard.domain.acme_store import reseal

    store.account("https://acme.invalid/dir", None)
    store.save_certificate(DOMAIN, *_pair())
    new_ring = KeyRing(Kek.from_secret(b"n" * 32))
    reseal(db, store.ring, new_ring)
    with pytest.raises(KeyEncryptionError, match="rotate-kek"):
        store.save_certificate(DOMAIN, *_pair())
    assert _leaf_matches_key(AcmeStore(db, new_ring).current(DOMAIN, open_key=True))


def _lock_waiters(db) -> int:
    from sqlalchemy import text

    with db.read() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND datname = current_database()")).scalar()


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_renewal_racing_rotate_kek_never_leaves_a_mismatched_key(db, store):
    """PostgreSQL: a save landing between rotate-kek's read and its write used to be overwritten with the old
    certificate's key, under the new chain (a pair that does not load). Now one of them waits for the other."""
    import threading
    import time

    from dockyard.auth.secret_box import KeyEncryptionError
    from dockyard.domain.acme_store import reseal

    store.account("https://acme.invalid/dir", None)
    store.save_certificate(DOMAIN, *_pair())
    new_ring = KeyRing(Kek.from_secret(b"n" * 32))
    outcome: list[object] = []

    def renew():
        try:
            outcome.append(store.save_certificate(DOMAIN, *_pair()))
        except KeyEncryptionError as exc:
            outcome.append(exc)

    class RacingRing(KeyRing):
        racer: threading.Thread | None = None

        def seal(self, plaintext, context):
            if context.startswith("acme-cert:") and self.racer is None:  # rotate-kek has read the rows
                self.racer = threading.Thread(target=renew)
                self.racer.start()
                deadline = time.monotonic() + 10  # unfixed, the renewal commits now; fixed, it waits for our commit
                while self.racer.is_alive() and not _lock_waiters(db) and time.monotonic() < deadline:
                    time.sleep(0.01)
            return super().seal(plaintext, context)

    racing = RacingRing(new_ring.primary)
    reseal(db, store.ring, racing)
    racing.racer.join()
    assert isinstance(outcome[0], KeyEncryptionError)  # it saw the rotation and refused to seal under the old KEK
    assert _leaf_matches_key(AcmeStore(db, new_ring).current(DOMAIN, open_key=True))


# -- clock skew between nodes (PostgreSQL: nodes on different hosts) ---------------------------------------

@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_node_whose_clock_runs_ahead_does_not_steal_a_live_lease(store, monkeypatch):
    from dockyard.domain import acme_store

    assert store.take_lease(DOMAIN, "node-a", 150)
    ahead = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)
    monkeypatch.setattr(acme_store, "utcnow", lambda: ahead)  # node b's clock is ten minutes fast
    assert store.lease_holder(DOMAIN) == "node-a"
    assert not store.take_lease(DOMAIN, "node-b", 150)  # it took a's lease and ordered too


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_node_whose_clock_runs_ahead_still_answers_the_challenge(store, monkeypatch):
    from dockyard.domain import acme_store

    store.put_challenge("tok-123_abc", "tok-123_abc.thumbprint")  # written by the ordering node
    ahead = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    monkeypatch.setattr(acme_store, "utcnow", lambda: ahead)  # the CA reaches a node whose clock is two hours fast
    assert store.challenge_response("tok-123_abc") == "tok-123_abc.thumbprint"


# -- acme_domain -------------------------------------------------------------------------------------------

def _settings(tmp_path, domain):
    from dockyard.settings import Settings

    return Settings(data_dir=tmp_path, acme_domain=domain, tls_redirect_http_port=8080)


@pytest.mark.parametrize("given", ["Registry.Example.TEST", "registry.example.test.", " registry.example.test "])
def test_acme_domain_is_normalised(tmp_path, given):
    """DNS names are case-insensitive and may be written fully qualified: one name, one stored certificate."""
    assert _settings(tmp_path, given).acme_domain == DOMAIN


@pytest.mark.parametrize(("given", "reason"), [
    ("10.0.0.5", "IP address"), ("[::1]", "IP address"), ("::1", "IP address"), ("1.2.3.999", "IP address"),
    ("*.example.com", "wildcard"), ("registry..example.com", "must be a DNS name"), ("registry.example.com/", "must be a DNS name"),
])
def test_acme_domain_refuses_what_http01_cannot_prove(tmp_path, given, reason):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=reason):
        _settings(tmp_path, given)


# -- the lease holder ---------------------------------------------------------------------------------------

def test_two_nodes_with_the_same_hostname_and_pid_are_two_holders(store):
    """Containers are often all PID 1, and share a hostname (compose `hostname:`, host networking): a lease held
    by "registry:1" was "extended" by the other node, and both ordered."""
    from dockyard.domain.acme_store import holder_name

    a, b = holder_name(), holder_name()  # as the two nodes would name themselves
    assert a != b
    assert store.take_lease(DOMAIN, a, 60)
    assert not store.take_lease(DOMAIN, b, 60)


# -- the files on each node ---------------------------------------------------------------------------------

def test_key_file_is_private_even_in_a_loose_directory_with_a_stale_temp_file(tmp_path):
    """data_dir/acme made 0755 by hand (or a umask), and a temp file left by a crashed process with the same PID
    (PID 1 in a container): the key must not land in what that name points to, and the directory ends up 0700."""
    import os
    import stat

    from dockyard.cli.acme_serve import write_private

    acme_dir = tmp_path / "acme"
    acme_dir.mkdir(mode=0o755)
    acme_dir.chmod(0o755)
    elsewhere = tmp_path / "elsewhere.pem"
    elsewhere.write_bytes(b"")
    elsewhere.chmod(0o644)
    (acme_dir / f".privkey.pem.tmp-{os.getpid()}").symlink_to(elsewhere)
    write_private(acme_dir / "privkey.pem", b"SECRET KEY")
    assert elsewhere.read_bytes() == b""  # not written through the link
    assert (acme_dir / "privkey.pem").read_bytes() == b"SECRET KEY"
    assert not (acme_dir / "privkey.pem").is_symlink()
    assert stat.S_IMODE((acme_dir / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(acme_dir.stat().st_mode) == 0o700


# -- an ACME server that answers without end ------------------------------------------------------------------

@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("declared", [False, True], ids=["until-close", "content-length"])
def test_an_endless_response_from_the_acme_server_is_cut_off(store, declared):
    """The conversation runs in the process that supervises the workers: reading a hostile server's endless body
    into memory would take the whole node down. It is cut off past a bound and the order fails."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    total = 64 << 20
    sent: list[int] = []

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if declared:
                self.send_header("Content-Length", str(total))
            self.end_headers()  # else no Content-Length: the body runs until the connection closes
            chunk, count = b" " * (64 << 10), 0
            try:
                while count < total:
                    self.wfile.write(chunk)
                    count += len(chunk)
            except OSError:
                pass
            sent.append(count)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        config = AcmeConfig(DOMAIN, f"http://127.0.0.1:{httpd.server_address[1]}/dir", timeout_seconds=5)
        with pytest.raises(AcmeFailure, match="larger than"):
            obtain(store, config)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert sent and sent[0] < total  # it stopped reading


# -- a flood on the challenge path --------------------------------------------------------------------------

@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_flood_of_challenge_requests_holds_few_database_connections(store, monkeypatch):
    """The listener runs up to 256 connection threads in the serve process; each lookup took a connection from
    that process's pool (40 on PostgreSQL, beyond what the workers budget), so an unauthenticated flood on port
    80 could use up the server's connection limit. Lookups are bounded; the rest wait briefly, then 404."""
    import contextlib
    import threading
    import time

    from dockyard.domain import acme_store

    monkeypatch.setattr(acme_store, "CHALLENGE_LOOKUP_WAIT_SECONDS", 0.01, raising=False)
    store = AcmeStore(store.db, store.ring)  # made after the patch
    release = threading.Event()
    inside, peak, lock = [0], [0], threading.Lock()

    @contextlib.contextmanager
    def slow_read():
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            release.wait(10)
            with store.db.__class__.read(store.db) as conn:
                yield conn
        finally:
            with lock:
                inside[0] -= 1

    store.db.read = slow_read
    answers: list[object] = []
    threads = [threading.Thread(target=lambda: answers.append(store.challenge_response("tok"))) for _ in range(12)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(answers) < 12 - acme_store.CHALLENGE_LOOKUPS and peak[0] <= acme_store.CHALLENGE_LOOKUPS \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert peak[0] <= acme_store.CHALLENGE_LOOKUPS
        assert answers == [None] * (12 - acme_store.CHALLENGE_LOOKUPS)  # the others were turned away
    finally:
        release.set()
        for t in threads:
            t.join()


# -- an order that outlasts its lease ------------------------------------------------------------------------

@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_the_lease_is_kept_alive_while_the_order_runs(store, tmp_path, monkeypatch):
    """The lease ran out `timeout_seconds + 60` after it was taken, however long the order took (each of its
    HTTP requests may take 30 s, only the polling is bounded): another node then ordered too."""
    import time

    from sqlalchemy import select

    from dockyard.cli import acme_serve
    from dockyard.cli.acme_serve import AcmeManager
    from dockyard.metadata.acme_tables import acme_leases

    def lease_expiry():
        with store.db.read() as conn:
            return conn.execute(select(acme_leases.c.expires_at)).scalar()

    extended: list[bool] = []

    def slow_obtain(st, config):
        first = lease_expiry()
        deadline = time.monotonic() + 10
        while lease_expiry() == first and time.monotonic() < deadline:
            time.sleep(0.01)  # the CA is slow
        extended.append(lease_expiry() != first)
        assert not st.take_lease(config.domain, "node-b", 60)
        return st.save_certificate(config.domain, *_pair())

    monkeypatch.setattr(acme_serve, "obtain", slow_obtain)
    manager = AcmeManager(store, AcmeConfig(DOMAIN, "https://acme.invalid/dir"), cert_file=tmp_path / "f.pem",
                          key_file=tmp_path / "k.pem", renew_before_days=30, check_seconds=600, lease_seconds=60)
    manager.lease_refresh_seconds = 0.05
    assert manager.order_if_due()
    assert extended == [True]
    assert store.lease_holder(DOMAIN) is None  # released after the order, and not taken again by the refresher


@pytest.mark.parametrize("url", ["http://acme.example.test/directory", "ftp://acme.example.test/dir", "acme.example.test/dir"])
def test_acme_directory_must_be_https(tmp_path, url):
    """RFC 8555 6.1: ACME is HTTPS only. Over plain HTTP anyone on the path could hand us a chain of their own
    CA for our key and name (it passes every check but trust), and every node would serve it."""
    from pydantic import ValidationError

    from dockyard.settings import Settings

    with pytest.raises(ValidationError, match="https://"):
        Settings(data_dir=tmp_path, acme_domain=DOMAIN, tls_redirect_http_port=8080, acme_directory_url=url)
    assert Settings(data_dir=tmp_path, acme_domain=DOMAIN, tls_redirect_http_port=8080,
                    acme_directory_url="https://127.0.0.1:14000/dir").acme_directory_url == "https://127.0.0.1:14000/dir"


# -- an order that never ends --------------------------------------------------------------------------------

@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_hung_order_does_not_stop_the_renewal_loop(store, tmp_path, monkeypatch):
    """A server that trickles a byte before each 30 s read timeout keeps an HTTP request alive for ever: the loop
    (ordering, then installing) stopped for good on that node. The order is given up after a bound, the lease
    released, and the loop goes on; the hung attempt is not started twice."""
    import threading

    from dockyard.cli import acme_serve
    from dockyard.cli.acme_serve import AcmeManager

    unblock, calls = threading.Event(), []

    def hanging_obtain(st, config):
        calls.append(1)
        if len(calls) == 1:
            unblock.wait(30)
        return st.save_certificate(config.domain, *_pair())

    monkeypatch.setattr(acme_serve, "obtain", hanging_obtain)
    manager = AcmeManager(store, AcmeConfig(DOMAIN, "https://acme.invalid/dir"), cert_file=tmp_path / "f.pem",
                          key_file=tmp_path / "k.pem", renew_before_days=30, check_seconds=600)
    manager.order_max_seconds = 0.2
    try:
        with pytest.raises(AcmeFailure, match="not finished"):
            manager.check()
        assert store.lease_holder(DOMAIN) is None  # another node may order meanwhile
        assert not manager.order_if_due() and calls == [1]  # still hung: no second attempt piled on it
    finally:
        unblock.set()
    manager._hung_order.join(10)  # it finished after all, with a good certificate
    assert manager.check()  # installed; not ordered again
    assert calls == [1]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_missing_key_file_is_written_again(store, tmp_path):
    """install() looked only at the certificate file: with privkey.pem gone (deleted, a volume restored without
    it) the node kept a pair that does not load, and at the next start served the placeholder for a whole
    check interval."""
    from dockyard.cli.acme_serve import AcmeManager

    manager = AcmeManager(store, AcmeConfig(DOMAIN, "https://acme.invalid/dir"), cert_file=tmp_path / "n" / "f.pem",
                          key_file=tmp_path / "n" / "k.pem", renew_before_days=30, check_seconds=600)
    chain, key = _pair()
    store.save_certificate(DOMAIN, chain, key)
    assert manager.install()
    manager.key_file.unlink()
    assert manager.install()
    assert manager.key_file.read_bytes() == key
    assert not manager.install()
