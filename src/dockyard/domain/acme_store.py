"""What automatic certificates keep in the database (metadata/acme_tables.py): the ACME account key, the
issued certificate and its key (both keys sealed under the KEK, like the token-signing keys), the HTTP-01
answers any node may be asked for, and the lease that lets one node at a time order.

The ACME conversation itself is domain/acme.py; the loop that decides when to run it and installs the
result on each node is cli/acme_serve.py.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import delete, func, select, update

from dockyard.auth.secret_box import KeyEncryptionError, KeyRing
from dockyard.metadata.acme_tables import acme_accounts, acme_certificates, acme_challenges, acme_leases
from dockyard.metadata.db import Database, aware, insert_ignore, utcnow

CHALLENGE_TTL = timedelta(hours=1)  # an answer is needed only while its order is being validated
# RFC 8555 8.3: a token is base64url without padding. Anything else is a 404 without a query (a NUL makes
# PostgreSQL raise; odd bytes and path tricks need no database round trip from an unauthenticated client).
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")
# The plain-HTTP listener runs up to 256 connection threads in the serve process, whose pool is not in the
# workers' connection budget: an unauthenticated flood must not hold more than a few database connections.
# (No negative cache instead: a node that cached "no challenge" could 404 the CA right after another node's put.)
CHALLENGE_LOOKUPS = 4  # a CA asks from a few vantage points at once; each lookup takes milliseconds
CHALLENGE_LOOKUP_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class StoredCertificate:
    domain: str
    fullchain_pem: bytes
    key_pem: bytes = b""  # empty unless opened (`current(open_key=True)`)
    fingerprint: str = ""
    not_after: datetime | None = None
    issued_at: datetime | None = None


def new_private_key_pem() -> bytes:
    """A fresh P-256 key as unencrypted PKCS#8 PEM (accounts and certificates alike)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def leaf_facts(fullchain_pem: bytes) -> tuple[str, datetime, datetime]:
    """(sha256 fingerprint of the leaf, not_before, not_after) of a PEM chain."""
    leaf = x509.load_pem_x509_certificates(fullchain_pem)[0]
    return leaf.fingerprint(hashes.SHA256()).hex(), leaf.not_valid_before_utc, leaf.not_valid_after_utc


def renewal_time(not_before: datetime, not_after: datetime, renew_before: timedelta) -> datetime:
    """When to renew: once the certificate has `renew_before` left, or a third of its lifetime when that is
    less (as Let's Encrypt advises: a 90-day certificate renews 30 days ahead, a 6-day one 2 days ahead)."""
    return not_after - min(renew_before, (not_after - not_before) / 3)


def needs_renewal(not_before: datetime, not_after: datetime, now: datetime, renew_before: timedelta) -> bool:
    return now >= renewal_time(not_before, not_after, renew_before)


def placeholder_pair(domain: str) -> tuple[bytes, bytes]:
    """A self-signed (certificate, key) for `domain`, valid one day: what the server presents until the
    first certificate arrives, so it can start (and answer the HTTP-01 challenge) while the CA is down."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{domain} (dockyard placeholder, no ACME certificate yet)"[:64])])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _now(conn, *, in_sql: bool = False):
    """Now by the database's clock on PostgreSQL, whose nodes may run on hosts whose clocks disagree (a node
    minutes ahead took a live lease and ordered too, and 404ed a live challenge); on SQLite every node is on
    one host. `in_sql`: an expression for a WHERE clause (no extra round trip) rather than a value."""
    if conn.dialect.name != "postgresql":
        return utcnow()
    return func.now() if in_sql else conn.execute(select(func.now())).scalar()


def holder_name() -> str:
    """host:pid for humans, plus a random part: containers are often all PID 1 and may share a hostname, and
    two nodes with one name would each "extend" the other's lease and both order."""
    return f"{socket.gethostname()[:180]}:{os.getpid()}:{secrets.token_hex(3)}"


class AcmeStore:
    def __init__(self, db: Database, ring: KeyRing | None = None):  # None: public data only (status)
        self.db = db
        self.ring = ring
        self._lookups = threading.BoundedSemaphore(CHALLENGE_LOOKUPS)

    # -- the account -------------------------------------------------------------------------

    def account(self, directory_url: str, email: str | None) -> tuple[bytes, str | None]:
        """(account key PEM, account URL or None) for this ACME server; the key is made and stored
        sealed on first use. Two nodes racing here agree on the first row written."""
        context = f"acme-account:{directory_url}"
        with self.db.write() as conn:
            insert_ignore(conn, acme_accounts, {
                "directory_url": directory_url, "key_sealed": self.ring.seal(new_private_key_pem(), context),
                "uri": None, "email": email, "created_at": utcnow(),
            }, ["directory_url"])
            row = conn.execute(select(acme_accounts).where(acme_accounts.c.directory_url == directory_url)).one()
        return self.ring.open(row.key_sealed, context), row.uri

    def set_account_uri(self, directory_url: str, uri: str | None) -> None:
        with self.db.write() as conn:
            conn.execute(update(acme_accounts).where(acme_accounts.c.directory_url == directory_url).values(uri=uri))

    # -- the certificate ---------------------------------------------------------------------

    def save_certificate(self, domain: str, fullchain_pem: bytes, key_pem: bytes) -> StoredCertificate:
        fingerprint, _not_before, not_after = leaf_facts(fullchain_pem)
        values = {"fullchain_pem": fullchain_pem.decode(), "key_sealed": self.ring.seal(key_pem, f"acme-cert:{domain}"),
                  "fingerprint": fingerprint, "not_after": not_after, "issued_at": utcnow()}
        with self.db.write() as conn:
            self._check_kek_current(conn)
            if not insert_ignore(conn, acme_certificates, {"domain": domain, **values}, ["domain"]):
                conn.execute(update(acme_certificates).where(acme_certificates.c.domain == domain).values(**values))
        return StoredCertificate(domain, fullchain_pem, key_pem, fingerprint, not_after, values["issued_at"])

    def _check_kek_current(self, conn) -> None:
        """Refuse to store a key sealed under a KEK the account key no longer uses: `rotate-kek` committed while
        this server ordered, and no node with the new KEK could install the certificate. The rows stay locked
        (PostgreSQL) until we commit, so a rotation cannot slip in between; on SQLite BEGIN IMMEDIATE does that."""
        for sealed in conn.execute(select(acme_accounts.c.key_sealed).order_by(acme_accounts.c.directory_url)
                                   .with_for_update()).scalars():
            if (unknown := self.ring.sealed_kek_id(sealed)) is not None:
                raise KeyEncryptionError(
                    f"not storing the new ACME certificate: the ACME keys are sealed under key-encryption key {unknown}, "
                    f"but this server still holds {self.ring.primary.id} (was `dockyard admin rotate-kek` run while it "
                    "was running?); restart every server so it reads the new key-encryption key")

    def current(self, domain: str, *, open_key: bool = False) -> StoredCertificate | None:
        """The stored certificate for `domain`; its private key only when asked (to write the key file)."""
        with self.db.read() as conn:
            row = conn.execute(select(acme_certificates).where(acme_certificates.c.domain == domain)).first()
        if row is None:
            return None
        key = self.ring.open(row.key_sealed, f"acme-cert:{domain}") if open_key else b""
        return StoredCertificate(domain, row.fullchain_pem.encode(), key, row.fingerprint, aware(row.not_after),
                                 aware(row.issued_at))

    def status(self, renew_before: timedelta) -> list[dict]:
        """What `dockyard admin acme status` shows: each stored certificate (never a key) and its lease."""
        with self.db.read() as conn:
            rows = conn.execute(select(acme_certificates.c.domain, acme_certificates.c.fullchain_pem,
                                       acme_certificates.c.issued_at).order_by(acme_certificates.c.domain)).all()
        out = []
        for row in rows:
            fingerprint, not_before, not_after = leaf_facts(row.fullchain_pem.encode())
            out.append({"domain": row.domain, "not_after": not_after, "renew_at": renewal_time(not_before, not_after, renew_before),
                        "issued_at": aware(row.issued_at), "fingerprint": fingerprint,
                        "ordering": self.lease_holder(row.domain)})
        with self.db.read() as conn:  # a first order running: a lease and no certificate yet
            leases = conn.execute(select(acme_leases.c.domain, acme_leases.c.holder).where(
                acme_leases.c.expires_at > _now(conn, in_sql=True)).order_by(acme_leases.c.domain)).all()
        stored = {row["domain"] for row in out}
        out += [{"domain": lease.domain, "not_after": None, "renew_at": None, "issued_at": None, "fingerprint": None,
                 "ordering": lease.holder} for lease in leases if lease.domain not in stored]
        return out

    # -- HTTP-01 answers ---------------------------------------------------------------------

    def put_challenge(self, token: str, key_authorization: str) -> None:
        with self.db.write() as conn:
            now = _now(conn)
            conn.execute(delete(acme_challenges).where(acme_challenges.c.expires_at <= now))
            conn.execute(delete(acme_challenges).where(acme_challenges.c.token == token))
            conn.execute(acme_challenges.insert().values(token=token, key_authorization=key_authorization,
                                                         expires_at=now + CHALLENGE_TTL))

    def drop_challenge(self, token: str) -> None:
        with self.db.write() as conn:
            conn.execute(delete(acme_challenges).where(acme_challenges.c.token == token))

    def challenge_response(self, token: str) -> str | None:
        """The key authorization to answer GET /.well-known/acme-challenge/<token> with, or None (404)."""
        if not _TOKEN_RE.fullmatch(token):
            return None
        if not self._lookups.acquire(timeout=CHALLENGE_LOOKUP_WAIT_SECONDS):
            return None  # flooded: a CA retrying later, or failing this order (we order again), beats a dry pool
        try:
            with self.db.read() as conn:
                return conn.execute(select(acme_challenges.c.key_authorization).where(
                    acme_challenges.c.token == token, acme_challenges.c.expires_at > _now(conn, in_sql=True))).scalar()
        finally:
            self._lookups.release()

    # -- the ordering lease ------------------------------------------------------------------

    def take_lease(self, domain: str, holder: str, ttl_seconds: int) -> bool:
        """True when `holder` now holds the lease for `domain` (newly, or extended); False while another
        holder's lease is live. A lease that lapsed (its node died mid-order) goes to the next taker."""
        with self.db.write() as conn:
            now = _now(conn)
            expires = now + timedelta(seconds=ttl_seconds)
            conn.execute(delete(acme_leases).where(acme_leases.c.domain == domain, acme_leases.c.expires_at <= now))
            if insert_ignore(conn, acme_leases, {"domain": domain, "holder": holder, "expires_at": expires}, ["domain"]):
                return True
            return bool(conn.execute(update(acme_leases).where(
                acme_leases.c.domain == domain, acme_leases.c.holder == holder).values(expires_at=expires)).rowcount)

    def release_lease(self, domain: str, holder: str) -> None:
        with self.db.write() as conn:
            conn.execute(delete(acme_leases).where(acme_leases.c.domain == domain, acme_leases.c.holder == holder))

    def lease_holder(self, domain: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(select(acme_leases.c.holder).where(
                acme_leases.c.domain == domain, acme_leases.c.expires_at > _now(conn, in_sql=True))).scalar()


def fingerprint_of_file(path) -> str | None:
    """The leaf fingerprint of the certificate file on disk, or None when missing or unreadable."""
    try:
        return leaf_facts(path.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None


def reseal(db: Database, old_ring: KeyRing, new_ring: KeyRing) -> int:
    """Re-seal the ACME account and certificate keys under `new_ring` (`dockyard admin rotate-kek`), in one
    transaction; returns how many keys."""
    with db.write() as conn:  # rows locked (PostgreSQL) in save_certificate's order: a concurrent save waits, then sees the new KEK
        accounts = conn.execute(select(acme_accounts.c.directory_url, acme_accounts.c.key_sealed)
                                .order_by(acme_accounts.c.directory_url).with_for_update()).all()
        for row in accounts:
            context = f"acme-account:{row.directory_url}"
            conn.execute(update(acme_accounts).where(acme_accounts.c.directory_url == row.directory_url).values(
                key_sealed=new_ring.seal(old_ring.open(row.key_sealed, context), context)))
        certificates = conn.execute(select(acme_certificates.c.domain, acme_certificates.c.key_sealed).with_for_update()).all()
        for row in certificates:
            context = f"acme-cert:{row.domain}"
            conn.execute(update(acme_certificates).where(acme_certificates.c.domain == row.domain).values(
                key_sealed=new_ring.seal(old_ring.open(row.key_sealed, context), context)))
    return len(accounts) + len(certificates)
