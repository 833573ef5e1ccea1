"""Check credentials: user passwords, robot secrets and login passwords, throttled and cached.

Verified credentials are cached for a short time so argon2 does not run on every Basic-auth
request (Distribution with htpasswd loses two thirds of its throughput to that). The cache
key includes the password-change stamp, and the account row is re-read on every call, so a
disabled account or a changed password takes effect at once.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC

from dockyard.auth.passwords import generate_secret, hash_secret, verify_secret
from dockyard.auth.principals import ROBOT_PREFIX, Principal
from dockyard.auth.throttle import LoginThrottle
from dockyard.auth.tokens import TokenService
from dockyard.metadata.db import Database, utcnow

_USER_SQL = "SELECT id, password_hash, is_admin, disabled, password_changed_at FROM users WHERE username = ?"
_ROBOT_SQL = "SELECT id, secret_hash, disabled, expires_at, created_at FROM robots WHERE name = ?"


class LoginFailed(Exception):
    """Wrong credentials; `delay` is how long to hold the answer back (throttling)."""

    def __init__(self, message: str, delay: float = 0.0):
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True)
class _Account:
    principal: Principal
    secret_hash: str
    stamp: str  # changes when the password/secret changes


class Authenticator:
    def __init__(self, db: Database, tokens: TokenService, throttle: LoginThrottle, *, cache_seconds: int):
        self.db = db
        self.tokens = tokens
        self.throttle = throttle
        self.cache_seconds = cache_seconds
        self._verified: dict[str, float] = {}
        # Unknown accounts still pay for one hash, so timing does not reveal which names exist.
        self._dummy_hash = hash_secret(generate_secret())

    def account(self, name: str) -> Principal | None:
        """The enabled, unexpired account called `name`, or None."""
        found = self._load(name)
        return found.principal if found else None

    def _load(self, name: str) -> _Account | None:
        if name.startswith(ROBOT_PREFIX):
            row = self.db.fetchone(_ROBOT_SQL, (name,))
            if row is None or row[2]:
                return None
            expires = row[3]
            if expires is not None:
                expires = expires if getattr(expires, "tzinfo", None) else _parse_dt(expires)
                if expires <= utcnow():
                    return None
            return _Account(Principal("robot", name, int(row[0])), row[1], row[1])
        row = self.db.fetchone(_USER_SQL, (name,))
        if row is None or row[3]:
            return None
        return _Account(Principal("user", name, int(row[0]), bool(row[2])), row[1], f"{row[1]}|{row[4]}")

    def verify(self, username: str, password: str, source_ip: str | None) -> Principal:
        """Return the principal or raise LoginFailed / TooManyRequests."""
        return self.check(username, password, source_ip)[0]

    def cached(self, username: str, password: str) -> Principal | None:
        """The principal if these credentials were verified recently (no hashing), else None."""
        if not self.cache_seconds:
            return None
        account = self._load(username)
        if account is None:
            return None
        expiry = self._verified.get(self._cache_key(username, password, account))
        return account.principal if expiry is not None and expiry > time.monotonic() else None

    @staticmethod
    def _cache_key(username: str, password: str, account: _Account) -> str:
        return hashlib.sha256(f"{username}\0{password}\0{account.stamp}".encode()).hexdigest()

    def check(self, username: str, password: str, source_ip: str | None) -> tuple[Principal, bool]:
        """(principal, fresh): fresh is False when a cached verification was reused."""
        account = self._load(username)
        cache_key = None
        if account is not None and self.cache_seconds:
            cache_key = self._cache_key(username, password, account)
            expiry = self._verified.get(cache_key)
            if expiry is not None and expiry > time.monotonic():
                return account.principal, False
        # Reserved before argon2 runs: concurrent guesses cannot all be checked before the lock engages.
        attempt = self.throttle.reserve(source_ip, username)
        if account is None:
            verify_secret(self._dummy_hash, password)
        ok = account is not None and (
            verify_secret(account.secret_hash, password) or self.tokens.login_password_subject(password) == username
        )
        if not ok:
            delay = self.throttle.failed(attempt)
            raise LoginFailed("invalid username or password", delay)
        self.throttle.succeeded(attempt)
        if cache_key is not None:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[cache_key] = time.monotonic() + self.cache_seconds
        return account.principal, True


def _parse_dt(value):
    from datetime import datetime

    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
