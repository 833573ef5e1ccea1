"""Consumers of the change feed (domain/events.py): durable ones with a cursor in the database,
and in-process subscribers with a cursor in memory.

Durable consumers (scan on push, webhook fan-out, …) run in whichever worker process gets their
cursor row first. A batch is read, handed to the handler and the cursor advanced in ONE write
transaction, so whatever the handler writes (jobs, delivery rows) commits exactly when the cursor
moves: at-least-once for the handler's external effects, exactly-once for its database effects.
Handlers must therefore be short database work; slow work (HTTP deliveries, scans) goes to jobs.

In-process subscribers (per-process caches such as the pull gate's verdicts) keep their position
in memory, starting at the feed's head when the process starts: every process sees every event.
An `immediate` subscriber also gets this process's own events synchronously right after their
transaction commits (before the writer returns), so a cache is never stale after a write made
through the same process; it later sees them again through the feed, so it must be idempotent.

The dispatcher wakes when this process commits an event (Database.after_commit) and otherwise
polls every `event_poll_seconds`, which bounds the delay for events written by other processes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sqlalchemy import Connection, event as sa_event, func, insert, select, update

from dockyard.domain.events import PENDING_FLAG, RECORDED, Event, after_clause, head, read_after
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.event_tables import event_cursors, events

log = logging.getLogger("dockyard.feed")

DurableHandler = Callable[[Connection, list[Event]], None]
LocalHandler = Callable[[list[Event]], None]


@dataclass
class _Durable:
    name: str
    handler: DurableHandler
    types: frozenset[str] | None
    after_commit: Callable[[], None] | None = None


@dataclass
class _Local:
    name: str
    handler: LocalHandler
    types: frozenset[str] | None
    position: tuple[int, int] | None = None
    immediate: bool = False


def _dialect_insert(conn: Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert


def _wanted(types: frozenset[str] | None, events: list[Event]) -> list[Event]:
    return events if types is None else [e for e in events if e.type in types]


class Feed:
    COALESCE_SECONDS = 0.05  # at most one dispatch per this interval; bounds the added delivery delay
    def __init__(self, db: Database, *, batch: int = 200, poll_seconds: float = 1.0):
        self.db = db
        self.batch = batch
        self.poll_seconds = poll_seconds
        self._durable: dict[str, _Durable] = {}
        self._local: dict[str, _Local] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._listening = False
        self.failures: dict[str, int] = {}  # consumer -> consecutive failed batches (metrics)
        # Where each durable consumer's cursor was when this process last moved or read it; another
        # process may have moved it further, which only costs one needless (empty) batch.
        self._known: dict[str, tuple[int, int]] = {}

    # -- registration ------------------------------------------------------------------------

    def consume(
        self, name: str, handler: DurableHandler, types: Collection[str] | None = None, *,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        """Register a durable consumer. Its cursor starts at the feed's head when first created.
        `after_commit` runs once a batch the handler saw has committed (e.g. wake the job worker)."""
        self._durable[name] = _Durable(name, handler, frozenset(types) if types is not None else None, after_commit)

    def subscribe(
        self, name: str, handler: LocalHandler, types: Collection[str] | None = None, *, immediate: bool = False
    ) -> None:
        """Register an in-process subscriber (every process runs its own); see `immediate` above."""
        self._local[name] = _Local(name, handler, frozenset(types) if types is not None else None, immediate=immediate)

    def start(self) -> None:
        """Create missing cursors at the head and hook commits; call once the schema exists."""
        with self.db.write() as conn:
            position = head(conn)
            for name in self._durable:
                values = {"consumer": name, "txid": position[0], "event_id": position[1], "updated_at": utcnow()}
                conn.execute(_dialect_insert(conn)(event_cursors).values(**values).on_conflict_do_nothing())
        with self.db.read() as conn:
            position = head(conn)
        for sub in self._local.values():
            sub.position = position
        if not self._listening:
            self.db.after_commit.append(self._on_commit)
            sa_event.listen(self.db.engine, "rollback", self._on_rollback)
            self._listening = True

    def stop(self) -> None:
        if self._listening:
            self.db.after_commit.remove(self._on_commit)
            sa_event.remove(self.db.engine, "rollback", self._on_rollback)
            self._listening = False

    # -- running -----------------------------------------------------------------------------

    def run_consumer(self, name: str) -> int:
        """Process one batch for a durable consumer; the number of events it read (0: caught up or
        another process holds the cursor)."""
        consumer = self._durable[name]
        with self.db.write() as conn:
            query = select(event_cursors.c.txid, event_cursors.c.event_id).where(event_cursors.c.consumer == name)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = conn.execute(query).first()
            if row is None:
                if conn.dialect.name == "postgresql" and self._cursor_exists(conn, name):
                    return 0  # another process is on it
                conn.execute(insert(event_cursors).values(consumer=name, txid=0, event_id=0, updated_at=utcnow()))
                row = (0, 0)
            batch = read_after(conn, (row[0], row[1]), self.batch)
            if not batch:
                self._known[name] = (row[0], row[1])
                return 0
            wanted = _wanted(consumer.types, batch)
            if wanted:
                consumer.handler(conn, wanted)
            last = batch[-1].position
            conn.execute(
                update(event_cursors).where(event_cursors.c.consumer == name)
                .values(txid=last[0], event_id=last[1], updated_at=utcnow())
            )
        self._known[name] = last
        if wanted and consumer.after_commit is not None:
            consumer.after_commit()
        return len(batch)

    @staticmethod
    def _cursor_exists(conn: Connection, name: str) -> bool:
        return conn.execute(select(event_cursors.c.consumer).where(event_cursors.c.consumer == name)).first() is not None

    def run_local(self, name: str) -> int:
        sub = self._local[name]
        with self.db.read() as conn:
            if sub.position is None:
                sub.position = head(conn)
                return 0
            batch = read_after(conn, sub.position, self.batch)
        if not batch:
            return 0
        wanted = _wanted(sub.types, batch)
        if wanted:
            sub.handler(wanted)
        sub.position = batch[-1].position
        return len(batch)

    def drain(self, limit: int = 10_000, *, durable: bool = True) -> int:
        """Run every consumer until all are caught up (tests, the CLI, and the dispatcher's tick).
        `durable=False` runs only the in-process subscribers (a server process without a worker).

        One read of the feed's head first: a consumer already there is skipped, so an idle wake
        costs one query instead of a write transaction (SQLite's write lock) per consumer."""
        with self.db.read() as conn:
            newest = head(conn)
        total = 0
        for name, sub in self._local.items():
            if sub.position is None or sub.position < newest:
                total += self._drain_one(self.run_local, name, limit)
        if durable:
            for name in self._durable:
                known = self._known.get(name)
                if known is None or known < newest:
                    total += self._drain_one(self.run_consumer, name, limit)
        return total

    def _drain_one(self, run: Callable[[str], int], name: str, limit: int) -> int:
        done = 0
        try:
            while done < limit:
                n = run(name)
                done += n
                if n < self.batch:  # a short batch: caught up with what was committed when it was read
                    break
            self.failures[name] = 0
        except Exception:  # the cursor did not move; the next tick retries the same batch
            self.failures[name] = self.failures.get(name, 0) + 1
            log.exception("event consumer %s failed", name)
        return done

    def lag(self) -> dict[str, int]:
        """Events each durable consumer has yet to read (for metrics). Counted after the cursor's
        (txid, id) position: on PostgreSQL ids are not commit-ordered, so max(id) - id would lie."""
        with self.db.read() as conn:
            rows = conn.execute(select(event_cursors.c.consumer, event_cursors.c.txid, event_cursors.c.event_id)).all()
            return {
                r.consumer: conn.execute(
                    select(func.count()).select_from(events).where(after_clause((r.txid, r.event_id)))
                ).scalar_one()
                for r in rows if r.consumer in self._durable
            }

    # -- the dispatcher loop ---------------------------------------------------------------

    def wake(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _on_commit(self, conn: Connection) -> None:
        recorded = conn.info.pop(RECORDED, None)
        if conn.info.pop(PENDING_FLAG, False):
            self.wake()
        for sub in self._local.values():
            wanted = _wanted(sub.types, recorded) if sub.immediate and recorded else []
            if wanted:
                try:
                    sub.handler(wanted)
                except Exception:  # the feed delivers them again; a cache handler must not fail the writer
                    log.exception("immediate subscriber %s failed", sub.name)

    @staticmethod
    def _on_rollback(conn: Connection) -> None:
        conn.info.pop(PENDING_FLAG, None)
        conn.info.pop(RECORDED, None)

    async def run_forever(self, *, durable: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            started = self._loop.time()
            await self.db.run(lambda: self.drain(durable=durable))
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except TimeoutError:
                pass
            # Coalesce a burst of commits: each consumer then reads them in one transaction instead of
            # one transaction per commit, which on SQLite would queue every push behind the consumers.
            rest = self.COALESCE_SECONDS - (self._loop.time() - started)
            if rest > 0:
                await asyncio.sleep(rest)
