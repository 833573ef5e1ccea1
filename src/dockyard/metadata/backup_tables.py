"""Backup leases (issue 16): while `dockyard admin backup` copies the blobs its database snapshot
references, GC must not delete them. Every write that drops a blob's last reference also touches the
blob's row (domain/blob_refs.py), so a blob referenced by a snapshot and unreferenced after it has
`touched_at` at or after the snapshot. A lease records that instant (`since`, minus a clock-skew
margin); GC never uses a cutoff later than the oldest live lease's `since` (jobs/gc.py). A lease
expires unless renewed, so a killed backup holds GC back for at most one lease period.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, String, Table

from dockyard.metadata.models import metadata

backup_leases = Table(
    "backup_leases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("holder", String(200), nullable=False),  # host:pid of the backup, for humans
    Column("since", DateTime(timezone=True), nullable=False),  # GC keeps every blob touched at or after this
    Column("expires_at", DateTime(timezone=True), nullable=False),  # renewed while the copy runs
    Index("ix_backup_leases_expires_at", "expires_at"),
)
