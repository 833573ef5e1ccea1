"""Check credentials: user passwords, robot secrets and login passwords, throttled and cached.

Verified credentials are cached for a short time so argon2 does not run on every Basic-auth
request (Distribution with htpasswd loses two thirds of its throughput to that). The cache
key includes the password-change stamp and the credential epoch, and the account row is re-read
on every call, so a disabled account or a changed password takes effect at once.

Login passwords and bearer tokens carry the account id and credential epoch they were issued
for; they are accepted only while both still match (a deleted and re-created account, a password
change, a robot rotation or a disable all end them). Bearer tokens are checked against a per-
process view of the account that is at most `check_seconds` old, so the hot path stays a lookup.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace

from dockyard.auth.passwords import generate_secret, hash_secret, verify_secret
from dockyard.auth.principals import ROBOT_PREFIX, Principal
from dockyard.auth.throttle import LoginThrottle
from dockyard.auth.tokens import LoginPasswordClaims, TokenService, VerifiedToken, is_account_name
from dockyard.metadata.db import Database, parse_db_datetime, utcnow

_USER_SQL = (
    "SELECT id, password_hash, is_admin, disabled, password_changed_at, credential_epoch FROM users WHERE username = ?"
)
_ROBOT_SQL = "SELECT id, secret_hash, disabled, expires_at, created_at, credential_epoch FROM robots WHERE name = ?"
_STATE_LIMIT = 10_000
LOGIN_PASSWORD = "login-password"


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
    def __init__(
        self, db: Database, tokens: TokenService, throttle: LoginThrottle, *, cache_seconds: int, check_seconds: float = 5.0
    ):
        self.db = db
        self.tokens = tokens
        self.throttle = throttle
        self.cache_seconds = cache_seconds
        self.check_seconds = check_seconds
        # cache key -> (until, credential kind, the login password's claims if it was one)
        self._verified: dict[str, tuple[float, str, LoginPasswordClaims | None]] = {}
        self._states: dict[str, tuple[float, int | None, int | None]] = {}  # name -> (until, id, epoch)
        tokens.on_account_change.append(self.forget)
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
            if row[3] is not None and parse_db_datetime(row[3]) <= utcnow():
                return None
            return _Account(Principal("robot", name, int(row[0]), epoch=int(row[5])), row[1], f"{row[1]}|{row[5]}")
        row = self.db.fetchone(_USER_SQL, (name,))
        if row is None or row[3]:
            return None
        principal = Principal("user", name, int(row[0]), bool(row[2]), epoch=int(row[5]))
        return _Account(principal, row[1], f"{row[1]}|{row[4]}|{row[5]}")

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
        hit = self._live(self._cache_key(username, password, account))
        return replace(account.principal, credential=hit[1]) if hit else None

    def _live(self, cache_key: str):
        hit = self._verified.get(cache_key)
        if hit is None or hit[0] <= time.monotonic():
            return None
        if hit[2] is not None and not hit[2].still_valid(self.tokens.keys):
            self._verified.pop(cache_key, None)  # its signing key was revoked, or it expired
            return None
        return hit

    @staticmethod
    def _cache_key(username: str, password: str, account: _Account) -> str:
        return hashlib.sha256(f"{username}\0{password}\0{account.stamp}".encode()).hexdigest()

    def check(self, username: str, password: str, source_ip: str | None) -> tuple[Principal, bool]:
        """(principal, fresh): fresh is False when a cached verification was reused."""
        account = self._load(username)
        cache_key = None
        if account is not None and self.cache_seconds:
            cache_key = self._cache_key(username, password, account)
            hit = self._live(cache_key)
            if hit is not None:
                return replace(account.principal, credential=hit[1]), False
        # Reserved before argon2 runs: concurrent guesses cannot all be checked before the lock engages.
        attempt = self.throttle.reserve(source_ip, username)
        if account is None:
            verify_secret(self._dummy_hash, password)
        credential, claims = None, None
        if account is not None:
            if verify_secret(account.secret_hash, password):
                credential = "secret"
            else:
                claims = self._login_password_claims(password, account.principal)
                credential = LOGIN_PASSWORD if claims else None
        if credential is None:
            delay = self.throttle.failed(attempt)
            raise LoginFailed("invalid username or password", delay)
        self.throttle.succeeded(attempt)
        if cache_key is not None:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[cache_key] = (time.monotonic() + self.cache_seconds, credential, claims)
        return replace(account.principal, credential=credential), True

    def _login_password_claims(self, password: str, principal: Principal) -> LoginPasswordClaims | None:
        """A login password counts only for the very account (id) and credential epoch it was issued to."""
        claims = self.tokens.login_password_claims(password)
        ok = (
            claims is not None
            and claims.subject == principal.name
            and claims.account_id == principal.id
            and claims.epoch == principal.epoch
            and self.tokens.keys.confirmed(claims.kid) is not None  # revoked by any process: refused at once
        )
        return claims if ok else None

    # -- bearer tokens: is the account still the one the token was issued to? -----------------

    def token_account_cached(self, token: VerifiedToken) -> bool | None:
        """From this process's recent view of the account: True/False, or None when that view is
        stale (then call token_account_ok, which reads the database)."""
        if not is_account_name(token.subject):
            return True  # anonymous, or a service subject such as the scanner's
        state = self._states.get(token.subject)
        if state is None or state[0] <= time.monotonic():
            return None
        return _matches(token, state)

    def token_account_ok(self, token: VerifiedToken) -> bool:
        cached = self.token_account_cached(token)
        if cached is not None:
            return cached
        account = self._load(token.subject)
        state = (
            time.monotonic() + self.check_seconds,
            account.principal.id if account else None,
            account.principal.epoch if account else None,
        )
        if len(self._states) >= _STATE_LIMIT:
            self._states.clear()
        self._states[token.subject] = state
        return _matches(token, state)

    def forget(self, name: str) -> None:
        """This process changed the account: its next token check reads the database."""
        self._states.pop(name, None)


def _matches(token: VerifiedToken, state: tuple[float, int | None, int | None]) -> bool:
    return state[1] is not None and token.account_id == state[1] and token.epoch == state[2]

