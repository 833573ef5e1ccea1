"""Token signing keys: created on first start, kept in the database sealed under the KEK, rotated
and revoked without a restart.

The `kid` is the RFC 7638 JWK thumbprint, as distribution v3 indexes trusted keys. Private keys
are stored only sealed (auth/secret_box.py); verification needs just the public key, so a node
decrypts only the active key, when it first signs. A retired key verifies for `verify_window`
seconds after its retirement (the longest token lifetime: no token it signed can still be valid
later); a revoked key never verifies again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import func, select, text, update

from dockyard.auth.secret_box import KeyEncryptionError, KeyRing
from dockyard.errors import Unavailable
from dockyard.metadata.db import Database, aware, insert_ignore, utcnow
from dockyard.metadata.models import signing_keys

log = logging.getLogger("dockyard.keys")
LEEWAY_SECONDS = 10  # clock skew allowed on exp/nbf/iat, here and in auth/tokens.py


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    public_key: object
    active: bool
    created_at: datetime | None = None
    retired_at: datetime | None = None
    revoked_at: datetime | None = None
    verifies_until: datetime | None = None  # None: the active key, verifies until it is retired

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.active:
            return "active"
        return "retired" if self.verifies(utcnow()) else "expired"

    def verifies(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.active or self.verifies_until is None or now < self.verifies_until


@dataclass(frozen=True)
class PrivateKey:
    kid: str
    algorithm: str
    private_key: object


def jwk_thumbprint(public_key) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    else:
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
        members = {k: jwk[k] for k in ("e", "kty", "n")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def _generate(algorithm: str):
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pkcs8(private) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class KeyStore:
    """Public keys of every key, read from the database at start, after a local rotation or
    revocation, every REFRESH_SECONDS (`refresh_if_stale`), and when a token names an unknown kid."""

    RELOAD_INTERVAL = 5.0  # unknown kids cannot make us hit the database more often than this
    REFRESH_SECONDS = 10.0  # another node's revocation reaches this one within this time

    def __init__(self, db: Database, algorithm: str, ring: KeyRing, *, verify_window: int = 0):
        self.db = db
        self.algorithm = algorithm
        self.ring = ring
        self.verify_window = verify_window
        self._keys: dict[str, SigningKey] = {}
        self._signer: PrivateKey | None = None
        self._loaded_at = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    def ensure_key(self) -> None:
        """At start: seal legacy plaintext keys, make sure one key is active, and check that this
        node's KEK opens it (a node with the wrong KEK must not start and fail every login)."""
        self.seal_plaintext()
        with self.db.read() as conn:
            has_active = conn.execute(select(signing_keys.c.kid).where(signing_keys.c.active.is_(True))).first()
        if has_active is None:
            self._insert_new_key(active=True)
        self.reload()
        self.signer()

    def seal_plaintext(self) -> int:
        """Encrypt keys an older version stored as plaintext PEM, and scrub the plaintext from the
        database file (SQLite: secure_delete and a WAL checkpoint; PostgreSQL: VACUUM FULL)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(signing_keys.c.kid, signing_keys.c.private_pem).where(signing_keys.c.private_pem.is_not(None))
            ).all()
        if not rows:
            return 0
        with self.db.write() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA secure_delete=ON")
            for row in rows:
                sealed = self.ring.seal(row.private_pem.encode(), row.kid)
                conn.execute(
                    update(signing_keys).where(signing_keys.c.kid == row.kid).values(private_sealed=sealed, private_pem=None)
                )
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA secure_delete=OFF")  # pooled connection: back to the default
        self._scrub()
        log.warning("sealed %d plaintext token-signing key(s) under the key-encryption key", len(rows))
        return len(rows)

    def _scrub(self) -> None:
        with self.db.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                raw = conn.connection.dbapi_connection
                # The rows were rewritten under secure_delete (freed cells zeroed); copying the WAL
                # into the database file and truncating it leaves no old page behind.
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.execute(text("VACUUM FULL signing_keys"))

    def _insert_new_key(self, active: bool) -> str:
        private = _generate(self.algorithm)
        kid = jwk_thumbprint(private.public_key())
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        with self.db.write() as conn:
            self._check_kek_current(conn)
            insert_ignore(
                conn,
                signing_keys,
                {
                    "kid": kid,
                    "algorithm": self.algorithm,
                    "private_pem": None,
                    "private_sealed": self.ring.seal(_pkcs8(private), kid),
                    "public_pem": public_pem,
                    "active": active,
                    "created_at": utcnow(),
                },
                ["kid"],
            )
        return kid

    def _check_kek_current(self, conn) -> None:
        """Refuse to seal a new key under a KEK the active key no longer uses: `rotate-kek` ran while this process
        was running, and a key sealed now under the old KEK would stop the server at its next start."""
        sealed = conn.execute(
            select(signing_keys.c.private_sealed).where(signing_keys.c.active.is_(True), signing_keys.c.private_sealed.is_not(None))
        ).scalar()
        unknown = self.ring.sealed_kek_id(sealed) if sealed else None
        if unknown is not None:
            raise Unavailable(
                f"cannot create a signing key: the stored keys are sealed under key-encryption key {unknown}, but this "
                f"server still holds {self.ring.primary.id} (was `dockyard admin rotate-kek` run while it was running?); "
                "restart every server so it reads the new key-encryption key, then retry",
                detail={"stored_kek": unknown, "server_kek": self.ring.primary.id},
            )

    def rotate(self) -> str:
        """New active key; the old ones verify until tokens they signed have expired."""
        kid = self._insert_new_key(active=False)
        with self.db.write() as conn:
            conn.execute(
                update(signing_keys).where(signing_keys.c.active.is_(True)).values(active=False, retired_at=utcnow())
            )
            conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(active=True, retired_at=None))
        self.reload()
        return kid

    def revoke(self, kid: str) -> SigningKey | None:
        """Stop `kid` verifying at once (on other nodes within REFRESH_SECONDS). Revoking the active
        key first rotates, so the registry keeps signing. None if there is no such key."""
        with self.db.read() as conn:
            row = conn.execute(select(signing_keys.c.active).where(signing_keys.c.kid == kid)).first()
        if row is None:
            return None
        if row.active:
            self.rotate()
        now = utcnow()
        with self.db.write() as conn:
            conn.execute(
                update(signing_keys)
                .where(signing_keys.c.kid == kid, signing_keys.c.revoked_at.is_(None))
                .values(revoked_at=now, active=False, retired_at=func.coalesce(signing_keys.c.retired_at, now))
            )
        self.reload()
        return self._keys.get(kid)

    def reencrypt(self, new_ring: KeyRing) -> int:
        """Re-seal every private key under `new_ring`'s KEK (`dockyard admin rotate-kek`), in one transaction."""
        self.seal_plaintext()
        with self.db.write() as conn:
            rows = conn.execute(select(signing_keys.c.kid, signing_keys.c.private_sealed)).all()
            for row in rows:
                plaintext = self.ring.open(row.private_sealed, row.kid)
                conn.execute(
                    update(signing_keys)
                    .where(signing_keys.c.kid == row.kid)
                    .values(private_sealed=new_ring.seal(plaintext, row.kid))
                )
        self.ring = new_ring
        self._signer = None
        return len(rows)

    # -- reads ------------------------------------------------------------------------------

    def reload(self) -> None:
        with self.db.read() as conn:
            rows = conn.execute(
                select(
                    signing_keys.c.kid, signing_keys.c.algorithm, signing_keys.c.public_pem, signing_keys.c.active,
                    signing_keys.c.created_at, signing_keys.c.retired_at, signing_keys.c.revoked_at,
                )
            ).all()
        keys = {}
        for row in rows:
            known = self._keys.get(row.kid)
            public = known.public_key if known else serialization.load_pem_public_key(row.public_pem.encode())
            retired = aware(row.retired_at)
            keys[row.kid] = SigningKey(
                row.kid, row.algorithm, public, bool(row.active), aware(row.created_at), retired, aware(row.revoked_at),
                None if row.active or retired is None else retired + timedelta(seconds=self.verify_window),
            )
        self._keys = keys
        self._loaded_at = time.monotonic()
        if self._signer is not None and not keys.get(self._signer.kid, _INACTIVE).active:
            self._signer = None

    def signer(self) -> PrivateKey:
        """The active key's private half, decrypted once per key and process."""
        signer = self._signer
        if signer is not None:
            return signer
        active = next((k for k in self._keys.values() if k.active), None)
        if active is None:
            self.ensure_key()
            active = next(k for k in self._keys.values() if k.active)
        with self.db.read() as conn:
            row = conn.execute(
                select(signing_keys.c.private_sealed, signing_keys.c.private_pem).where(signing_keys.c.kid == active.kid)
            ).first()
        if row is None or row.private_sealed is None:
            if row is not None and row.private_pem is not None:
                self.seal_plaintext()
                return self.signer()
            raise KeyEncryptionError(f"signing key {active.kid} has no private key")
        pem = self.ring.open(row.private_sealed, active.kid)
        self._signer = PrivateKey(active.kid, active.algorithm, serialization.load_pem_private_key(pem, password=None))
        return self._signer

    def active(self) -> SigningKey:
        for key in self._keys.values():
            if key.active:
                return key
        self.ensure_key()
        return next(k for k in self._keys.values() if k.active)

    def usable(self, kid: str) -> SigningKey | None:
        """The key if it may verify a token now (from memory: no database read)."""
        key = self._keys.get(kid)
        return key if key is not None and key.verifies(utcnow()) else None

    def confirmed(self, kid: str) -> SigningKey | None:
        """Like usable(), but the key's revocation is read from the database: a login password lives
        for hours, so another process's `keys revoke` must end it at once, not at the next refresh."""
        with self.db.read() as conn:
            revoked = conn.execute(select(signing_keys.c.revoked_at).where(signing_keys.c.kid == kid)).first()
        if revoked is None or revoked.revoked_at is not None:
            if kid in self._keys and self._keys[kid].revoked_at is None:
                self.reload()  # learn the revocation now, for every other token of this key too
            return None
        return self.usable(kid)

    def get(self, kid: str) -> SigningKey | None:
        """The key named by a token, if it may verify now; an unknown kid reloads (rate-limited)."""
        if kid not in self._keys and time.monotonic() - self._loaded_at > self.RELOAD_INTERVAL:
            self.reload()
        return self.usable(kid)

    def all(self) -> list[SigningKey]:
        return sorted(self._keys.values(), key=lambda k: (k.created_at or utcnow()), reverse=True)


_INACTIVE = SigningKey("", "", None, False)


def open_keystore(db: Database, settings, *, create_kek: bool = True) -> KeyStore:
    """The KeyStore a process with these settings uses: its KEK, and a retired key's verification
    window of the longest token lifetime (access tokens and login passwords) plus leeway and the
    time other nodes take to notice the rotation."""
    from dockyard.auth.secret_box import load_keyring

    secret = settings.secret_key.get_secret_value() if settings.secret_key is not None else None
    ring = load_keyring(secret, settings.resolved_secret_key_file, create=create_kek)
    # A node may go on signing with a key for up to REFRESH_SECONDS after another node retired it.
    window = max(settings.token_ttl_seconds, settings.login_password_ttl_seconds) + LEEWAY_SECONDS + KeyStore.REFRESH_SECONDS
    return KeyStore(db, settings.token_algorithm, ring, verify_window=window)
