"""Backup leases: how a running backup keeps GC away from the blobs its snapshot references.

The argument (metadata/backup_tables.py): every write that drops a blob's last reference touches the
blob's row, so a blob that the snapshot references and that becomes garbage later has `touched_at`
at or after the moment the lease was committed. GC clamps its cutoff to the oldest live lease's
`since` (`gc_floor`), so it never marks such a blob. A GC run that computed its cutoff before the
lease existed is safe too: its cutoff is older than its own start, which is older than the lease.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, insert, select, update

from dockyard.metadata.backup_tables import backup_leases
from dockyard.metadata.db import Database, aware, utcnow

# Servers on other nodes stamp touched_at with their own clocks; tolerate this much skew.
CLOCK_SKEW = timedelta(seconds=60)


def take(db: Database, ttl_seconds: int) -> int:
    """Commit a lease valid for `ttl_seconds`; the caller snapshots the database only after this."""
    now = utcnow()
    with db.write() as conn:
        conn.execute(delete(backup_leases).where(backup_leases.c.expires_at <= now))  # killed backups' leases
        return int(conn.execute(
            insert(backup_leases).values(
                holder=f"{socket.gethostname()}:{os.getpid()}"[:200], since=now - CLOCK_SKEW,
                expires_at=now + timedelta(seconds=ttl_seconds),
            ).returning(backup_leases.c.id)
        ).scalar_one())


def renew(db: Database, lease_id: int, ttl_seconds: int) -> bool:
    """Extend the lease; False if it is gone (expired and cleared), and the copy can no longer trust GC."""
    with db.write() as conn:
        return bool(conn.execute(
            update(backup_leases).where(backup_leases.c.id == lease_id, backup_leases.c.expires_at > utcnow())
            .values(expires_at=utcnow() + timedelta(seconds=ttl_seconds))
        ).rowcount)


def release(db: Database, lease_id: int) -> None:
    with db.write() as conn:
        conn.execute(delete(backup_leases).where(backup_leases.c.id == lease_id))


def gc_floor(conn: Connection, now: datetime) -> datetime | None:
    """The oldest `since` of the leases still live at `now` (GC's cutoff never goes past it)."""
    return aware(conn.execute(select(func.min(backup_leases.c.since)).where(backup_leases.c.expires_at > now)).scalar())
