"""Login throttling per (client address, account) and per client address: slow down, then refuse with 429.

Keys (issue 9, finding 7):
- `pair`: one client address guessing one account. Slowed down after `slowdown_after` failures, locked
  after `lockout_after`. A correct password from another address is never blocked by it, so nobody
  can lock `admin` out for everyone.
- `addr`: one client address guessing across accounts (password spraying), locked after
  `address_lockout_after` failures. Only that address is refused.
The client address is the one api/auth.client_address derives (X-Forwarded-For only from
`trusted_proxies`).

Every attempt is RESERVED before the password hash is checked: one write transaction counts it
against both keys, and refuses it when the budget is spent. So 25 concurrent wrong passwords get at
most `lockout_after` hash checks; the others wait for those to finish (ThrottleBusy), then see the
lock. A success gives the reservation back. State lives in the database, so every worker and node
shares it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update

from dockyard.errors import TooManyRequests
from dockyard.metadata.db import Database, aware, insert_ignore, utcnow
from dockyard.metadata.models import login_failures

MAX_DELAY_SECONDS = 4.0
_ROW_ATTEMPTS = 5


class ThrottleBusy(TooManyRequests):
    """The budget of this key is taken by attempts still being checked; retry in a moment."""


@dataclass(frozen=True)
class Attempt:
    pair_key: str
    address_key: str


def client_key(address: str | None) -> str:
    """The throttled unit of a client address: an IPv4 address, or an IPv6 /64. One host is usually
    given a whole /64, so counting single IPv6 addresses would let it rotate through 2^64 fresh keys
    (unlimited guesses per account, no spraying limit). IPv4-mapped IPv6 counts as its IPv4 address."""
    if not address:
        return "-"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _keys(address: str | None, account: str) -> Attempt:
    address = client_key(address)
    pair = hashlib.sha256(f"{address}\0{account.lower()}".encode()).hexdigest()[:48]
    return Attempt(f"pair:{pair}", f"addr:{address[:64]}")


class LoginThrottle:
    def __init__(
        self,
        db: Database,
        *,
        slowdown_after: int,
        lockout_after: int,
        lockout_seconds: int,
        window_seconds: int,
        address_lockout_after: int = 50,
    ):
        self.db = db
        self.slowdown_after = slowdown_after
        self.lockout_after = lockout_after
        self.address_lockout_after = address_lockout_after
        self.lockout_seconds = lockout_seconds
        self.window_seconds = window_seconds

    def _limits(self, attempt: Attempt) -> list[tuple[str, int]]:
        return [(attempt.pair_key, self.lockout_after), (attempt.address_key, self.address_lockout_after)]

    def reserve(self, address: str | None, account: str) -> Attempt:
        """Count this attempt before the hash is checked; TooManyRequests if locked, ThrottleBusy if the
        budget is taken by attempts in flight."""
        attempt = _keys(address, account)
        now = utcnow()
        stale = now - timedelta(seconds=self.window_seconds)
        with self.db.write() as conn:
            for key, limit in self._limits(attempt):
                row = self._locked_row(conn, key, now)
                locked = aware(row.locked_until)
                if locked is not None and locked > now:
                    retry = max(1, int((locked - now).total_seconds()) + 1)
                    raise TooManyRequests(
                        "too many failed logins; try again later", headers={"Retry-After": str(retry)}, detail={"retry_after": retry}
                    )
                failures = row.failures
                if aware(row.first_failure_at) < stale or locked is not None:  # old failures, or a lock that ran out
                    failures = 0
                    conn.execute(
                        update(login_failures).where(login_failures.c.key == key).values(failures=0, first_failure_at=now, locked_until=None)
                    )
                if failures >= limit:
                    raise ThrottleBusy("too many logins in progress; try again", headers={"Retry-After": "1"})
            for key, _limit in self._limits(attempt):
                conn.execute(update(login_failures).where(login_failures.c.key == key).values(failures=login_failures.c.failures + 1))
        return attempt

    @staticmethod
    def _locked_row(conn, key: str, now):
        """The key's row, created if missing, locked for this transaction. On PostgreSQL a concurrent
        success may delete the row between our INSERT (which then did nothing) and the SELECT: go again."""
        for _ in range(_ROW_ATTEMPTS):
            insert_ignore(conn, login_failures, {"key": key, "failures": 0, "first_failure_at": now, "locked_until": None}, ["key"])
            row = conn.execute(
                select(login_failures.c.failures, login_failures.c.first_failure_at, login_failures.c.locked_until)
                .where(login_failures.c.key == key)
                .with_for_update()
            ).first()
            if row is not None:
                return row
        raise ThrottleBusy("too many logins in progress; try again", headers={"Retry-After": "1"})

    def failed(self, attempt: Attempt) -> float:
        """The reserved attempt was wrong: it stays counted; lock keys that reached their limit.
        Returns how long to delay the answer."""
        now = utcnow()
        pair_failures = 0
        with self.db.write() as conn:
            for key, limit in self._limits(attempt):
                row = self._locked_row(conn, key, now)
                count = row.failures
                if count == 0:  # a success in between had cleared the key: count this failure again
                    count = 1
                    conn.execute(update(login_failures).where(login_failures.c.key == key).values(failures=1))
                if count >= limit:
                    conn.execute(
                        update(login_failures)
                        .where(login_failures.c.key == key, login_failures.c.locked_until.is_(None))
                        .values(locked_until=now + timedelta(seconds=self.lockout_seconds))
                    )
                if key == attempt.pair_key:
                    pair_failures = count
        if pair_failures < self.slowdown_after:
            return 0.0
        return min(0.25 * 2 ** (pair_failures - self.slowdown_after), MAX_DELAY_SECONDS)

    def succeeded(self, attempt: Attempt) -> None:
        """Right credentials: this address may try this account afresh; the address gets its reservation back."""
        with self.db.write() as conn:
            conn.execute(delete(login_failures).where(login_failures.c.key == attempt.pair_key))
            conn.execute(
                update(login_failures)
                .where(login_failures.c.key == attempt.address_key, login_failures.c.failures > 0)
                .values(failures=login_failures.c.failures - 1)
            )

    def purge(self) -> int:
        """Forget keys whose failures are older than the window and that hold no live lock."""
        now = utcnow()
        with self.db.write() as conn:
            return conn.execute(
                delete(login_failures).where(
                    login_failures.c.first_failure_at < now - timedelta(seconds=self.window_seconds),
                    (login_failures.c.locked_until.is_(None)) | (login_failures.c.locked_until < now),
                )
            ).rowcount
