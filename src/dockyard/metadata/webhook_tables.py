"""Tables of webhooks (issue 10 part 2): endpoints, deliveries and the log of each attempt.

Kept apart from models.py so each area owns its schema; metadata/schema.py gathers them all.
A delivery is one event for one endpoint; it is retried in place (its attempts add log rows), so
the event's idempotency key stays the `webhook-id` a receiver sees on every attempt.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger, Boolean, Column, DateTime, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint,
)

from dockyard.metadata.models import metadata

_Id = BigInteger().with_variant(Integer, "sqlite")

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("project", String(64)),  # NULL: a system-wide hook (every project)
    Column("name", String(100), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("format", String(20), nullable=False),  # cloudevents | harbor | slack
    Column("event_types", Text, nullable=False, server_default="[]"),  # JSON list; empty: every type
    Column("repository_pattern", String(255)),  # glob; NULL: any repository
    Column("tag_pattern", String(255)),  # glob; NULL: any tag
    Column("enabled", Boolean, nullable=False, default=True),
    # The Standard Webhooks secret (whsec_…), sealed with the node's key-encryption key (auth/secret_box.py).
    Column("secret_sealed", Text, nullable=False),
    # After a rotation the old secret also signs until `previous_secret_until`, so receivers can switch over.
    Column("previous_secret_sealed", Text),
    Column("previous_secret_until", DateTime(timezone=True)),
    # Set when a system administrator saved a URL that resolves to a loopback/private/link-local address.
    Column("private_target", Boolean, nullable=False, default=False),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("disabled_reason", String(500)),
    Column("created_by", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_webhooks_project", "project"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("webhook_id", _Id, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_key", String(64), nullable=False),  # the webhook-id header: stable across attempts
    Column("event_type", String(64), nullable=False),
    Column("event", Text, nullable=False),  # the event as JSON (Event.to_dict), rendered per format on send
    # Deliveries of one endpoint for one repository go out in id order ("" for events without one).
    Column("repository", String(255), nullable=False, server_default=""),
    Column("state", String(16), nullable=False),  # queued | succeeded | failed (ping) | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True)),
    # Bumped whenever a job is queued for this delivery; a job carrying an older turn is stale and does nothing.
    Column("turn", Integer, nullable=False, default=0),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    UniqueConstraint("webhook_id", "event_key"),
    Index("ix_webhook_deliveries_lane", "webhook_id", "repository", "state", "id"),
    Index("ix_webhook_deliveries_state", "state"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("delivery_id", _Id, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),  # succeeded | failed
    Column("status_code", Integer),
    Column("response_body", Text),  # at most RESPONSE_BODY_LIMIT bytes, made terminal-safe
    Column("error", Text),
    Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
    Index("ix_webhook_attempts_outcome", "outcome"),
)
