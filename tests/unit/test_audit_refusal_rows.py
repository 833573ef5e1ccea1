"""domain/audit.py `record_refusal`: what one aggregated row stands for (issue 15 review)."""

from __future__ import annotations

import json

from sqlalchemy import select

from dockyard.auth.principals import Principal
from dockyard.domain.audit import AuditService
from dockyard.metadata.models import audit_events

ALICE = Principal("user", "alice")


def _refuse(audit: AuditService, ip: str, object: str = "team/app:latest", **kw) -> None:
    audit.record_refusal(actor=ALICE, action="manifest.push", object=object, reason="tag latest is not allowed",
                         code="DENIED", window_seconds=60, project="team", source_ip=ip, **kw)


def _rows(db) -> list[tuple]:
    with db.read() as conn:
        rows = conn.execute(select(audit_events.c.object, audit_events.c.source_ip, audit_events.c.detail)
                            .order_by(audit_events.c.id)).all()
    return [(r.object, r.source_ip, json.loads(r.detail)["count"]) for r in rows]


def test_a_refusal_from_another_address_is_not_counted_under_the_first_one(db):
    """Attack: with a stolen password, the attacker's refused pushes were added to the count of the owner's row
    and showed the owner's address; the attacker's address never reached the log within the window."""
    audit = AuditService(db)
    _refuse(audit, "10.0.0.1")
    _refuse(audit, "10.0.0.1")
    _refuse(audit, "203.0.113.9")
    assert _rows(db) == [("team/app:latest", "10.0.0.1", 2), ("team/app:latest", "203.0.113.9", 1)]


def test_past_the_bound_every_further_key_of_the_actor_shares_one_row(db):
    audit = AuditService(db)
    for n in range(5):
        _refuse(audit, f"10.0.0.{n}", object=f"team/r{n}:latest", keys_per_actor=3)
    assert _rows(db) == [("team/r0:latest", "10.0.0.0", 1), ("team/r1:latest", "10.0.0.1", 1),
                         ("team/r2:latest", "10.0.0.2", 1), ("*", "10.0.0.3", 2)]
