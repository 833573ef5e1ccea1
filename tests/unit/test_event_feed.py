"""The change feed's core: events commit and roll back with their change, durable consumers
advance a cursor in the same transaction as their effects, and PostgreSQL's late commits are
never skipped."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from dockyard import request_context
from dockyard.domain.events import EventLog, record
from dockyard.jobs.feed import Feed
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.event_tables import event_cursors


def _types(events):
    return [e.type for e in events]


def test_an_event_commits_with_its_change_and_vanishes_with_a_rollback(db):
    log = EventLog(db)
    with db.write() as conn:
        record(conn, "tag.updated", repository="p/app", tag="v1", digest="sha256:" + "a" * 64)
    with pytest.raises(RuntimeError):
        with db.write() as conn:
            record(conn, "tag.deleted", repository="p/app", tag="v1")
            raise RuntimeError("the change fails after its event was written")
    events = log.query()
    assert _types(events) == ["tag.updated"]
    assert events[0].project == "p" and events[0].tag == "v1"


def test_unknown_event_types_are_refused(db):
    with db.write() as conn, pytest.raises(ValueError, match="unknown event type"):
        record(conn, "artifact.exploded", repository="p/app")


def test_actor_and_request_id_come_from_the_request_context(db):
    with request_context.acting_as("alice", "req-123"):
        with db.write() as conn:
            record(conn, "project.created", project="p")
    (event,) = EventLog(db).query()
    assert (event.actor, event.request_id) == ("alice", "req-123")


def test_a_durable_consumer_reads_once_and_its_effects_commit_with_its_cursor(db):
    seen: list[str] = []
    feed = Feed(db, batch=2)
    feed.consume("collector", lambda conn, events: seen.extend(e.tag for e in events), types={"tag.updated"})
    feed.start()
    with db.write() as conn:
        for tag in ("a", "b", "c"):
            record(conn, "tag.updated", repository="p/app", tag=tag)
        record(conn, "tag.deleted", repository="p/app", tag="a")
    assert feed.drain() == 4
    assert seen == ["a", "b", "c"]
    assert feed.drain() == 0  # caught up: nothing is read twice
    assert feed.lag() == {"collector": 0}


def test_a_failing_consumer_keeps_its_position_and_retries_the_batch(db):
    calls: list[list[str]] = []

    def flaky(conn, events):
        calls.append([e.tag for e in events])
        if len(calls) == 1:
            raise RuntimeError("receiver down")

    feed = Feed(db)
    feed.consume("flaky", flaky)
    feed.start()
    with db.write() as conn:
        record(conn, "tag.updated", repository="p/app", tag="x")
    assert feed.drain() == 0 and feed.failures["flaky"] == 1
    assert feed.drain() == 1
    assert calls == [["x"], ["x"]]  # at least once: the same event again, nothing lost


def test_a_new_consumer_starts_at_the_head(db):
    with db.write() as conn:
        record(conn, "tag.updated", repository="p/app", tag="old")
    seen: list[str] = []
    feed = Feed(db)
    feed.consume("late", lambda conn, events: seen.extend(e.tag for e in events))
    feed.subscribe("cache", lambda events: seen.extend("local:" + e.tag for e in events))
    feed.start()
    with db.write() as conn:
        record(conn, "tag.updated", repository="p/app", tag="new")
    feed.drain()
    assert sorted(seen) == ["local:new", "new"]


def test_prune_keeps_what_a_consumer_has_not_read(db):
    feed = Feed(db)
    feed.consume("slow", lambda conn, events: None)
    feed.start()
    with db.write() as conn:
        record(conn, "tag.updated", repository="p/app", tag="a")
    log = EventLog(db)
    later = utcnow() + timedelta(days=31)
    assert log.prune(30, now=later) == 0  # old enough, but "slow" has not read it
    feed.drain()
    assert log.prune(30, now=later) == 1
    assert log.prune(30) == 0


@pytest.fixture
def pg(postgres_db_url):
    database = Database(postgres_db_url)
    database.migrate()
    yield database
    database.dispose()


def test_a_late_commit_with_a_lower_id_is_not_skipped(pg):
    """PostgreSQL hands out ids before commit: a transaction that took id N and commits after
    id N+1 must still be read. (SQLite serializes writers, so the race cannot arise there.)"""
    db = pg
    seen: list[str] = []
    feed = Feed(db)
    feed.consume("c", lambda conn, events: seen.extend(e.tag for e in events))
    feed.start()
    written = threading.Event()
    release = threading.Event()

    def slow_writer():
        with db.write() as conn:
            record(conn, "tag.updated", repository="p/app", tag="slow")  # takes the lower id
            written.set()
            release.wait(10)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert written.wait(10)
    with db.write() as conn:
        record(conn, "tag.updated", repository="p/app", tag="fast")
    feed.drain()
    assert seen == []  # "fast" waits behind the open transaction instead of passing it
    release.set()
    thread.join()
    feed.drain()
    assert sorted(seen) == ["fast", "slow"]
    with db.read() as conn:
        assert conn.execute(select(event_cursors.c.event_id)).scalar() == max(
            r for (r,) in conn.execute(text("select id from events")).all()
        )


def test_an_event_holds_a_sha512_digest_and_the_longest_tag(db):
    """Columns as wide as what they carry: a sha512 digest is 135 characters (PostgreSQL enforces it)."""
    digest = "sha512:" + "b" * 128
    with db.write() as conn:
        record(conn, "artifact.pushed", repository="p/" + "r" * 200, digest=digest, tag="t" * 128)
    (event,) = EventLog(db).query()
    assert (event.digest, event.tag) == (digest, "t" * 128)
