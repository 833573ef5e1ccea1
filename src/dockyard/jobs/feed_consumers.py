"""The reactions that follow a change, wired onto the change feed instead of into HTTP handlers.

- scan on push (durable): each artifact.pushed, whatever wrote it (a push, a promotion, a retag,
  a later replication or cache fill), gets the project's scan-on-push decision; the scan job is
  queued in the consumer's transaction, so it commits exactly when the cursor moves past the event.
- pull-gate caches (in-process, immediate): manifest, tag, signature and scan events drop this
  process's cached verdicts for the repository. The writer's own process does so before its write
  returns; other processes within `event_poll_seconds`. Signature verdicts are also keyed on the
  project's security generation (metadata/generations.py), which every process reads.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from dockyard.domain.events import Event
from dockyard.jobs.feed import Feed
from dockyard.metadata.models import manifests, repositories

SCAN_ON_PUSH = "scan-on-push"
PULL_GATE = "pull-gate"
GATE_EVENTS = frozenset({
    "artifact.pushed", "artifact.deleted", "tag.updated", "tag.deleted", "signature.attached", "repository.deleted",
    "scan.completed", "scan.failed", "scan.verdict_changed",
})


def register(feed: Feed, *, scans, pull_gate, wake_worker) -> None:
    """Register the built-in consumers (build_services calls this once per process)."""

    def scan_on_push(conn: Connection, events: list[Event]) -> None:
        for event in events:
            if event.repository is None or event.digest is None:
                continue
            stored = _manifest(conn, event.repository, event.digest)
            if stored is None:
                continue  # deleted since: nothing to scan
            scans.on_pushed(conn, event.repository, event.digest, stored[0], stored[1])

    def invalidate_gate(events: list[Event]) -> None:
        for repository in dict.fromkeys(e.repository for e in events if e.repository):
            pull_gate.on_push(repository)

    feed.consume(SCAN_ON_PUSH, scan_on_push, types={"artifact.pushed"}, after_commit=wake_worker)
    feed.subscribe(PULL_GATE, invalidate_gate, types=GATE_EVENTS, immediate=True)


def _manifest(conn: Connection, repository: str, digest: str) -> tuple[str, bytes] | None:
    row = conn.execute(
        select(manifests.c.media_type, manifests.c.payload)
        .join(repositories, repositories.c.id == manifests.c.repository_id)
        .where(repositories.c.name == repository, manifests.c.digest == digest)
    ).first()
    return None if row is None else (row.media_type, bytes(row.payload))
