"""Tables of the change feed (issue 10): the transactional outbox and its consumers' cursors.

Kept apart from models.py so each area owns its own schema module; metadata/schema.py gathers
them all for Alembic and the schema test.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from dockyard.metadata.models import metadata

# SQLite only aliases INTEGER PRIMARY KEY to the rowid (autoincrementing); PostgreSQL gets BIGSERIAL.
_EventId = BigInteger().with_variant(Integer, "sqlite")

# One row per change, written in the same transaction as the change itself (the outbox).
events = Table(
    "events",
    metadata,
    Column("id", _EventId, primary_key=True, autoincrement=True),
    Column("key", String(36), nullable=False, unique=True),  # idempotency key, stable across redeliveries
    # PostgreSQL: the writing transaction's id. Consumers read in (txid, id) order and only below
    # the oldest running transaction, so a late commit with a lower id is never skipped.
    # SQLite serializes writers, so it stays 0 and id order is commit order.
    Column("txid", BigInteger, nullable=False, server_default="0"),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("type", String(64), nullable=False),
    Column("project", String(255)),
    Column("repository", String(255)),
    Column("digest", String(200)),
    Column("tag", String(255)),
    Column("actor", String(255)),
    Column("request_id", String(128)),  # api/request_id.py MAX_LENGTH
    Column("data", Text),  # JSON
    Index("ix_events_order", "txid", "id"),
    Index("ix_events_project", "project", "id"),
    Index("ix_events_type", "type", "id"),
    Index("ix_events_occurred_at", "occurred_at"),
)

# A durable consumer's position in the feed; advanced in the same transaction as its effects.
event_cursors = Table(
    "event_cursors",
    metadata,
    Column("consumer", String(100), primary_key=True),
    Column("txid", BigInteger, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
