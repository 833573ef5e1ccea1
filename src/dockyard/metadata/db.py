"""Engine, transactions and migrations. One Database per app; nothing is created at import."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import anyio.to_thread
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import make_url


log = logging.getLogger("dockyard.db")

# An exception raised out of a write transaction may carry a callable under this attribute: it runs
# once the transaction has rolled back (outside any write transaction of this thread), e.g. to
# record a quota.exceeded event that must survive the refused write's rollback.
AFTER_ROLLBACK = "dockyard_after_rollback"


def utcnow() -> datetime:
    return datetime.now(UTC)


# Idle SQLite connections kept open per process (pooled ones, and raw hot-path readers).
SQLITE_IDLE_CONNECTIONS = 10
SQLITE_IDLE_READERS = 4


class Database:
    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            db_path = make_url(url).database
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Up to 40 connections under load, but only SQLITE_IDLE_CONNECTIONS kept idle: a pool that keeps
            # its high-water mark grows its open files for as long as load keeps setting new peaks.
            self.engine = create_engine(
                url, pool_size=SQLITE_IDLE_CONNECTIONS, max_overflow=40 - SQLITE_IDLE_CONNECTIONS,
                pool_use_lifo=True, connect_args={"timeout": 60},
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)
        self._param = "?" if self.is_sqlite else "%s"
        # Hot reads on SQLite use raw autocommit connections from a small LIFO stack: no SQLAlchemy pool
        # checkout per request, and (unlike one connection per thread) no open file per idle worker thread.
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._sqlite_path = None
        if self.is_sqlite:
            db_path = make_url(url).database
            if db_path and db_path != ":memory:":
                self._sqlite_path = db_path
        # Called with the connection after each write transaction commits (the event feed wakes here).
        self.after_commit: list[Callable[[Connection], None]] = []
        self._writing = threading.local()
        self._write_mutex = threading.Lock() if self.is_sqlite else None

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction. On SQLite it takes the write lock up front (BEGIN IMMEDIATE),
        so two writers queue instead of failing on a read-to-write lock upgrade."""
        depth = getattr(self._writing, "depth", 0)
        self._writing.depth = depth + 1
        try:
            with self._queue(depth), self.engine.connect() as conn:
                conn = conn.execution_options(dockyard_immediate=True)
                with conn.begin():
                    yield conn
                for hook in self.after_commit:
                    try:
                        hook(conn)
                    except Exception:  # the change is committed; a hook must not turn it into an error
                        log.exception("after-commit hook failed")
        except BaseException as exc:
            hook = getattr(exc, AFTER_ROLLBACK, None)
            if hook is not None and depth == 0:
                setattr(exc, AFTER_ROLLBACK, None)
                self._writing.depth = 0
                try:
                    hook()
                except Exception:
                    log.exception("after-rollback hook failed")
            raise
        finally:
            self._writing.depth = depth

    def _queue(self, depth: int):
        """SQLite: this process's writers queue on a mutex. Waiting in SQLite's busy handler instead
        sleeps in steps of up to 100 ms, so a short consumer transaction could stall a push far longer
        than it ran. Other processes still meet on the database's own lock."""
        if self._write_mutex is None or depth:
            return contextlib.nullcontext()
        return self._write_mutex

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def fetchone(self, sql: str, params: tuple) -> tuple | None:
        """Hot-path read on a raw DBAPI cursor: no ORM, no SQL compilation. SQL uses `?` params."""
        if self._sqlite_path is not None:
            with self._readers_lock:
                conn = self._readers.pop() if self._readers else None
            if conn is None:
                conn = _open_sqlite_reader(self._sqlite_path)
            try:
                return conn.execute(sql, params).fetchone()
            finally:
                with self._readers_lock:
                    if len(self._readers) < SQLITE_IDLE_READERS:
                        self._readers.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(sql if self.is_sqlite else sql.replace("?", self._param), params)
            row = cur.fetchone()
            cur.close()
            return row
        finally:
            raw.close()

    async def run(self, fn, *args):
        """Run blocking database work off the event loop."""
        return await anyio.to_thread.run_sync(fn, *args)

    async def run_fast(self, fn, *args):
        """Hot reads: SQLite answers in microseconds, so a thread hop would cost more than the query."""
        if self.is_sqlite:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    def migrate(self) -> None:
        with self.engine.begin() as conn:
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self.engine.dispose()


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("dockyard.metadata") / "migrations"))
    return cfg


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def _open_sqlite_reader(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("dockyard_immediate")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def insert_ignore(conn: Connection, table, values: dict, conflict_columns: list[str]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING on both dialects; True if this statement inserted the row.

    Decided by RETURNING, not rowcount: psycopg 3 reports rowcount -1 for this statement."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    first = table.c[conflict_columns[0]]
    stmt = dialect_insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict_columns).returning(first)
    return conn.execute(stmt).first() is not None


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything Dockyard stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def parse_db_datetime(value) -> datetime:
    """A timestamp as a raw DBAPI read returns it (SQLite: ISO text; PostgreSQL: a datetime), as aware UTC."""
    return aware(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


def upsert(conn: Connection, table, values: dict, conflict_columns: list[str], update: dict) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = dialect_insert(table).values(**values).on_conflict_do_update(index_elements=conflict_columns, set_=update)
    conn.execute(stmt)
