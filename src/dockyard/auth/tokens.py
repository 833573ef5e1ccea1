"""Bearer tokens (JWT), refresh tokens and short-lived login passwords.

A verified access token is cached (LRU, bounded) until it expires, so the signature check
(~100 µs) runs once per token, not once per request; a cache hit still checks that its key has
not been revoked. Every token names the account it was issued to (`uid`) and the account's
credential epoch (`cep`), which changes on a password change, rotation or disable; the caller
checks those against the account (auth/authenticator.py). A token whose lifetime (exp - iat)
exceeds the configured lifetime of its kind is refused, whoever signed it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import select, update

from dockyard.auth.token_keys import LEEWAY_SECONDS, KeyStore
from dockyard.auth.principals import ROBOT_PREFIX, Principal
from dockyard.auth.scopes import Scope
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import refresh_tokens

ALLOWED_ALGORITHMS = ("ES256", "RS256")
LOGIN_USE = "login"
ACCOUNT_ID_CLAIM, EPOCH_CLAIM = "uid", "cep"


def is_account_name(subject: str) -> bool:
    """Users and robots; service subjects such as the scanner's (`scanner$dockyard`) are not accounts."""
    return bool(subject) and ("$" not in subject or subject.startswith(ROBOT_PREFIX))


class InvalidToken(Exception):
    """The token is malformed, forged, expired, not yet valid or for another audience."""


@dataclass(frozen=True)
class VerifiedToken:
    subject: str
    access: dict[tuple[str, str], frozenset[str]]
    expires_at: float
    kid: str = ""
    account_id: int | None = None
    epoch: int | None = None
    issued_at: float = 0.0  # `iat`: its scopes name projects as they were then (policy/access.py, namesakes)

    def allows(self, type_: str, name: str, action: str) -> bool:
        actions = self.access.get((type_, name))
        return actions is not None and (action in actions or "*" in actions)


@dataclass(frozen=True)
class LoginPasswordClaims:
    subject: str
    account_id: int | None
    epoch: int | None
    kid: str = ""
    expires_at: float = 0.0

    def still_valid(self, keys: KeyStore) -> bool:
        """For a cached verification: not expired, and its key neither revoked nor past its window."""
        return self.expires_at + LEEWAY_SECONDS >= time.time() and keys.confirmed(self.kid) is not None


@dataclass(frozen=True)
class RefreshGrant:
    subject: str
    account_id: int | None
    epoch: int | None


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str


class TokenService:
    def __init__(
        self, db: Database, keys: KeyStore, *, issuer: str, service: str, ttl: int, refresh_ttl: int, login_ttl: int,
        max_bytes: int = 8192, cache_entries: int = 10_000, max_scopes: int = 32,
    ):
        self.db = db
        self.keys = keys
        self.issuer = issuer
        self.service = service
        self.ttl = ttl
        self.refresh_ttl = refresh_ttl
        self.login_ttl = login_ttl
        self.max_bytes = max_bytes
        self.max_scopes = max_scopes
        self.cache_entries = cache_entries
        self._cache: OrderedDict[str, VerifiedToken] = OrderedDict()
        # Called with a subject whose credentials changed (revoke_refresh): the authenticator drops
        # its cached view of the account, so this node refuses the old tokens at once.
        self.on_account_change: list = []

    @property
    def longest_lifetime(self) -> int:
        """How long any token this service signs can stay valid: a retired key verifies this long."""
        return max(self.ttl, self.login_ttl) + LEEWAY_SECONDS

    @staticmethod
    def _account_claims(principal: Principal) -> dict:
        if principal.id is None or principal.epoch is None:
            return {}
        return {ACCOUNT_ID_CLAIM: principal.id, EPOCH_CLAIM: principal.epoch}

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
            **self._account_claims(principal),
            "access": [{"type": s.type, "name": s.name, "actions": list(s.actions)} for s in granted],
        }
        issued_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return IssuedToken(self._sign(claims), self.ttl, issued_at)

    def _sign(self, claims: dict) -> str:
        key = self.keys.signer()
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"})

    def verify(self, token: str) -> VerifiedToken:
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + LEEWAY_SECONDS >= time.time() and self.keys.usable(cached.kid) is not None:
                self._cache.move_to_end(token)
                return cached
            self._cache.pop(token, None)
        claims = self._decode(token)
        if claims.get("use") == LOGIN_USE:
            raise InvalidToken("a login password is not a bearer token")
        access: dict[tuple[str, str], frozenset[str]] = {}
        entries = claims.get("access", [])
        if not isinstance(entries, list) or len(entries) > self.max_scopes:
            raise InvalidToken("malformed access claim")
        for entry in entries:
            if not isinstance(entry, dict):
                raise InvalidToken("malformed access claim")
            key = (str(entry.get("type")), str(entry.get("name")))
            access[key] = access.get(key, frozenset()) | frozenset(str(a) for a in entry.get("actions") or [])
        account_id, epoch = _account(claims)
        verified = VerifiedToken(
            str(claims.get("sub", "")), access, float(claims["exp"]), claims["_kid"], account_id, epoch, float(claims["iat"])
        )
        if self.cache_entries:
            self._cache[token] = verified
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
        return verified

    def _decode(self, token: str) -> dict:
        if len(token) > self.max_bytes:
            raise InvalidToken(f"token is longer than {self.max_bytes} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise InvalidToken(f"token algorithm {algorithm!r} is not accepted")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("token signed by an unknown, retired or revoked key")
        if key.algorithm != algorithm:
            raise InvalidToken("token algorithm does not match its key")
        try:
            claims = jwt.decode(
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
        self._check_lifetime(claims)
        claims["_kid"] = key.kid
        return claims

    def _check_lifetime(self, claims: dict) -> None:
        """A token may live no longer than its kind is issued for; a stolen key or a forged
        long-lived token gains nothing past that."""
        use = claims.get("use")
        if use not in (None, LOGIN_USE):
            raise InvalidToken(f"unknown token use {use!r}")
        limit = self.login_ttl if use == LOGIN_USE else self.ttl
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)):
            raise InvalidToken("exp and iat must be numbers")
        if iat > time.time() + LEEWAY_SECONDS:
            raise InvalidToken("token issued in the future")
        if exp - iat > limit:
            kind = "login password" if use == LOGIN_USE else "access token"
            raise InvalidToken(f"token lifetime {int(exp - iat)} s exceeds the {limit} s allowed for a {kind}")

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
            **self._account_claims(principal),
        }
        return self._sign(claims)

    def login_password_claims(self, password: str) -> LoginPasswordClaims | None:
        """Who a login password was issued to (name, account id, credential epoch), or None if it
        is not a valid one. The caller compares id and epoch with the account as it is now."""
        if password.count(".") != 2 or not password.startswith("eyJ"):
            return None
        try:
            claims = self._decode(password)
        except InvalidToken:
            return None
        if claims.get("use") != LOGIN_USE:
            return None
        account_id, epoch = _account(claims)
        return LoginPasswordClaims(str(claims["sub"]), account_id, epoch, claims["_kid"], float(claims["exp"]))

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
                    account_id=principal.id,
                    credential_epoch=principal.epoch,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.refresh_ttl),
                )
            )
        return token

    def refresh_grant(self, token: str) -> RefreshGrant | None:
        """The account a live refresh token was issued to; the caller checks its id and epoch."""
        if not token or len(token) > self.max_bytes:
            return None
        with self.db.read() as conn:
            row = conn.execute(
                select(
                    refresh_tokens.c.subject, refresh_tokens.c.expires_at, refresh_tokens.c.revoked_at,
                    refresh_tokens.c.account_id, refresh_tokens.c.credential_epoch,
                ).where(refresh_tokens.c.token_hash == _digest(token))
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        if expires <= utcnow():
            return None
        return RefreshGrant(row.subject, row.account_id, row.credential_epoch)

    def revoke_refresh(self, subject: str) -> int:
        for callback in self.on_account_change:
            callback(subject)
        with self.db.write() as conn:
            return conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.subject == subject, refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            ).rowcount


def _account(claims: dict) -> tuple[int | None, int | None]:
    account_id, epoch = claims.get(ACCOUNT_ID_CLAIM), claims.get(EPOCH_CLAIM)
    if not isinstance(account_id, int) or not isinstance(epoch, int):
        return None, None
    return account_id, epoch


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
