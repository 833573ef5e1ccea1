"""Bearer tokens (JWT), refresh tokens and short-lived login passwords.

A verified access token is cached until it expires, so the signature check (~100 µs) runs
once per token, not once per request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import select, update

from dockyard.auth.keys import KeyStore
from dockyard.auth.principals import Principal
from dockyard.auth.scopes import Scope
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import refresh_tokens

ALLOWED_ALGORITHMS = ("ES256", "RS256")
LEEWAY_SECONDS = 10
LOGIN_USE = "login"
_CACHE_LIMIT = 10_000


class InvalidToken(Exception):
    """The token is malformed, forged, expired, not yet valid or for another audience."""


@dataclass(frozen=True)
class VerifiedToken:
    subject: str
    access: dict[tuple[str, str], frozenset[str]]
    expires_at: float

    def allows(self, type_: str, name: str, action: str) -> bool:
        actions = self.access.get((type_, name))
        return actions is not None and (action in actions or "*" in actions)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str


class TokenService:
    def __init__(self, db: Database, keys: KeyStore, *, issuer: str, service: str, ttl: int, refresh_ttl: int, login_ttl: int):
        self.db = db
        self.keys = keys
        self.issuer = issuer
        self.service = service
        self.ttl = ttl
        self.refresh_ttl = refresh_ttl
        self.login_ttl = login_ttl
        self._cache: dict[str, VerifiedToken] = {}

    # -- access tokens ------------------------------------------------------------------

    def issue(self, principal: Principal, granted: list[Scope]) -> IssuedToken:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": principal.name,
            "aud": self.service,
            "exp": now + self.ttl,
            "nbf": now,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [{"type": s.type, "name": s.name, "actions": list(s.actions)} for s in granted],
        }
        issued_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return IssuedToken(self._sign(claims), self.ttl, issued_at)

    def _sign(self, claims: dict) -> str:
        key = self.keys.active()
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"})

    def verify(self, token: str) -> VerifiedToken:
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + LEEWAY_SECONDS >= time.time():
                return cached
            del self._cache[token]
        claims = self._decode(token)
        if claims.get("use") == LOGIN_USE:
            raise InvalidToken("a login password is not a bearer token")
        access: dict[tuple[str, str], frozenset[str]] = {}
        entries = claims.get("access", [])
        if not isinstance(entries, list):
            raise InvalidToken("malformed access claim")
        for entry in entries:
            if not isinstance(entry, dict):
                raise InvalidToken("malformed access claim")
            key = (str(entry.get("type")), str(entry.get("name")))
            access[key] = access.get(key, frozenset()) | frozenset(str(a) for a in entry.get("actions") or [])
        verified = VerifiedToken(str(claims.get("sub", "")), access, float(claims["exp"]))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[token] = verified
        return verified

    def _decode(self, token: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise InvalidToken(f"token algorithm {algorithm!r} is not accepted")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("token signed by an unknown key")
        if key.algorithm != algorithm:
            raise InvalidToken("token algorithm does not match its key")
        try:
            return jwt.decode(
                token,
                key.public_key,
                algorithms=[key.algorithm],
                audience=self.service,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc

    # -- login passwords (`dockyard get-login-password`) --------------------------------

    def issue_login_password(self, principal: Principal) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": principal.name,
            "aud": self.service,
            "exp": now + self.login_ttl,
            "nbf": now,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "use": LOGIN_USE,
        }
        return self._sign(claims)

    def login_password_subject(self, password: str) -> str | None:
        """The username a login password was issued to, or None if it is not a valid one."""
        if password.count(".") != 2 or not password.startswith("eyJ"):
            return None
        try:
            claims = self._decode(password)
        except InvalidToken:
            return None
        return claims["sub"] if claims.get("use") == LOGIN_USE else None

    # -- refresh tokens (docker's identity token) ---------------------------------------

    def issue_refresh(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with self.db.write() as conn:
            conn.execute(
                refresh_tokens.insert().values(
                    id=uuid.uuid4().hex,
                    token_hash=_digest(token),
                    subject=principal.name,
                    service=self.service,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.refresh_ttl),
                )
            )
        return token

    def refresh_subject(self, token: str) -> str | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(refresh_tokens.c.subject, refresh_tokens.c.expires_at, refresh_tokens.c.revoked_at).where(
                    refresh_tokens.c.token_hash == _digest(token)
                )
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        return row.subject if expires > utcnow() else None

    def revoke_refresh(self, subject: str) -> int:
        with self.db.write() as conn:
            return conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.subject == subject, refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            ).rowcount


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
