"""Turn infrastructure failures (full disks, lost database connections) into catalogue errors.

Domain code does not catch these: a transaction that fails rolls back as a whole, and the one
renderer (api/http.py) answers with an error the client can act on instead of a bare 500:
507 STORAGE_FULL for ENOSPC/EDQUOT/SQLITE_FULL, 503 UNAVAILABLE with Retry-After for a
database that is restarting or unreachable. The pool (pool_pre_ping) reconnects by itself.
"""

from __future__ import annotations

import errno
import sqlite3

from sqlalchemy import exc as sa_exc

from dockyard.errors import DatabaseUnavailable, DockyardError, StorageFull

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
# SQLite messages for a full disk or a lock held past busy_timeout.
_SQLITE_FULL = ("database or disk is full", "disk i/o error")
_SQLITE_BUSY = ("database is locked",)


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def infrastructure_error(exc: BaseException) -> DockyardError | None:
    """The catalogue error for an infrastructure failure, or None for anything else (a bug)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # look through wrapped causes
        seen.add(id(current))
        found = _classify(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _classify(exc: BaseException) -> DockyardError | None:
    if isinstance(exc, StorageFull | DatabaseUnavailable):
        return exc
    if is_no_space(exc):
        return StorageFull(headers={"Retry-After": "60"})
    if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted while connections are re-established
        return DatabaseUnavailable()
    invalidated = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    text = str(orig).lower()
    if isinstance(orig, sqlite3.Error):
        if any(s in text for s in _SQLITE_FULL):
            return StorageFull("the metadata database's disk is full; retry later", headers={"Retry-After": "60"})
        if any(s in text for s in _SQLITE_BUSY):
            return DatabaseUnavailable("the metadata database is busy; retry shortly")
        return None  # anything else from SQLite is a bug (bad SQL, schema drift), not an outage
    if invalidated or isinstance(orig, _psycopg_outages()):
        return DatabaseUnavailable()
    return None


def _psycopg_outages() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # SQLite-only installs
        return ()
    # OperationalError covers a restarting server (AdminShutdown, connection refused or reset).
    return (psycopg.OperationalError, psycopg.InterfaceError)
