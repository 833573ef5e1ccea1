"""Token signing keys: created on first start, kept in the database, rotated without breaking tokens.

The `kid` is the RFC 7638 JWK thumbprint, as distribution v3 indexes trusted keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import select, update

from dockyard.metadata.db import Database, insert_ignore, utcnow
from dockyard.metadata.models import signing_keys


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private_key: object
    public_key: object
    active: bool


def jwk_thumbprint(public_key) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    else:
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
        members = {k: jwk[k] for k in ("e", "kty", "n")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def public_jwk(key: SigningKey) -> dict:
    algo = ECAlgorithm if key.algorithm == "ES256" else RSAAlgorithm
    jwk = algo.to_jwk(key.public_key, as_dict=True)
    return {**jwk, "kid": key.kid, "alg": key.algorithm, "use": "sig"}


def _generate(algorithm: str):
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class KeyStore:
    """Reads keys from the database once and again after a rotation on this node.

    Another node's rotation is picked up when a token names a kid we have not loaded."""

    RELOAD_INTERVAL = 5.0  # unknown kids cannot make us hit the database more often than this

    def __init__(self, db: Database, algorithm: str):
        self.db = db
        self.algorithm = algorithm
        self._keys: dict[str, SigningKey] = {}
        self._loaded_at = 0.0

    def ensure_key(self) -> None:
        with self.db.read() as conn:
            has_active = conn.execute(select(signing_keys.c.kid).where(signing_keys.c.active.is_(True))).first()
        if has_active is None:
            self._insert_new_key(active=True)
        self.reload()

    def _insert_new_key(self, active: bool) -> str:
        private = _generate(self.algorithm)
        kid = jwk_thumbprint(private.public_key())
        private_pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        with self.db.write() as conn:
            insert_ignore(
                conn,
                signing_keys,
                {
                    "kid": kid,
                    "algorithm": self.algorithm,
                    "private_pem": private_pem,
                    "public_pem": public_pem,
                    "active": active,
                    "created_at": utcnow(),
                },
                ["kid"],
            )
        return kid

    def rotate(self) -> str:
        """New active key; the old ones stay valid for verification until retired tokens expire."""
        kid = self._insert_new_key(active=False)
        with self.db.write() as conn:
            conn.execute(
                update(signing_keys).where(signing_keys.c.active.is_(True)).values(active=False, retired_at=utcnow())
            )
            conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(active=True, retired_at=None))
        self.reload()
        return kid

    def reload(self) -> None:
        with self.db.read() as conn:
            rows = conn.execute(select(signing_keys)).all()
        keys = {}
        for row in rows:
            private = serialization.load_pem_private_key(row.private_pem.encode(), password=None)
            keys[row.kid] = SigningKey(row.kid, row.algorithm, private, private.public_key(), bool(row.active))
        self._keys = keys
        self._loaded_at = time.monotonic()

    def active(self) -> SigningKey:
        for key in self._keys.values():
            if key.active:
                return key
        self.ensure_key()
        return next(k for k in self._keys.values() if k.active)

    def get(self, kid: str) -> SigningKey | None:
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._loaded_at > self.RELOAD_INTERVAL:
            self.reload()
            key = self._keys.get(kid)
        return key

    def all(self) -> list[SigningKey]:
        return list(self._keys.values())
