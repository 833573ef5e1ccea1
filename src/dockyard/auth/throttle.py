"""Login throttling per account and per source IP: slow down, then refuse with 429.

State lives in the database so every worker and node sees the same counts; only failures
write, so successful logins cost one read.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update

from dockyard.errors import TooManyRequests
from dockyard.metadata.db import Database, aware, insert_ignore, utcnow
from dockyard.metadata.models import login_failures

MAX_DELAY_SECONDS = 4.0


class LoginThrottle:
    def __init__(self, db: Database, *, slowdown_after: int, lockout_after: int, lockout_seconds: int, window_seconds: int):
        self.db = db
        self.slowdown_after = slowdown_after
        self.lockout_after = lockout_after
        self.lockout_seconds = lockout_seconds
        self.window_seconds = window_seconds

    def check(self, keys: list[str]) -> None:
        now = utcnow()
        with self.db.read() as conn:
            rows = conn.execute(
                select(login_failures.c.key, login_failures.c.locked_until).where(login_failures.c.key.in_(keys))
            ).all()
        for row in rows:
            locked = aware(row.locked_until)
            if locked is not None and locked > now:
                retry = max(1, int((locked - now).total_seconds()) + 1)
                raise TooManyRequests(
                    "too many failed logins; try again later", headers={"Retry-After": str(retry)}, detail={"retry_after": retry}
                )

    def failure(self, keys: list[str]) -> float:
        """Count a failure against every key; returns how long to delay the answer."""
        now = utcnow()
        worst = 0
        with self.db.write() as conn:
            for key in keys:
                inserted = insert_ignore(
                    conn, login_failures, {"key": key, "failures": 1, "first_failure_at": now, "locked_until": None}, ["key"]
                )
                if inserted:
                    count = 1
                else:
                    row = conn.execute(
                        select(login_failures.c.failures, login_failures.c.first_failure_at).where(login_failures.c.key == key)
                    ).one()
                    fresh = aware(row.first_failure_at) < now - timedelta(seconds=self.window_seconds)
                    count = 1 if fresh else row.failures + 1
                    values = {"failures": count}
                    if fresh:
                        values.update(first_failure_at=now, locked_until=None)
                    if count >= self.lockout_after:
                        values["locked_until"] = now + timedelta(seconds=self.lockout_seconds)
                    conn.execute(update(login_failures).where(login_failures.c.key == key).values(**values))
                worst = max(worst, count)
        if worst < self.slowdown_after:
            return 0.0
        return min(0.25 * 2 ** (worst - self.slowdown_after), MAX_DELAY_SECONDS)

    def success(self, account_key: str) -> None:
        with self.db.write() as conn:
            conn.execute(delete(login_failures).where(login_failures.c.key == account_key))
