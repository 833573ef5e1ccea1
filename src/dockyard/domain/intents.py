"""Storage intents: the record of a key written before any row owns it.

Publishing moves verified bytes onto a fresh blob key inside the transaction that inserts (or
revives) the blob's row. A crash after the move but before the commit would leave bytes that no
row owns, and start-up never scans storage to find them. So the key is recorded first, in its own
committed transaction; the publishing transaction deletes the intent as its first write (on
PostgreSQL that row lock is what GC's reclaim waits on) and commits it together with the row.
If the process dies, the intent survives and GC (jobs/gc.py) deletes the orphaned object.
Blob keys carry a nonce, so no other writer can ever reuse an orphan's key.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert

from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import storage_intents


def record_intent(db: Database, key: str) -> int:
    """Commit an intent to write `key`; returns its id."""
    with db.write() as conn:
        return int(
            conn.execute(
                insert(storage_intents).values(storage_key=key, created_at=utcnow()).returning(storage_intents.c.id)
            ).scalar_one()
        )


def claim_intent(conn: Connection, intent_id: int) -> bool:
    """Delete the intent inside the caller's transaction before it writes the key. False means GC
    reclaimed it meanwhile, and the caller must not write the key (it would be an untracked orphan)."""
    return bool(conn.execute(delete(storage_intents).where(storage_intents.c.id == intent_id)).rowcount)


def forget_intent(db: Database, intent_id: int) -> None:
    """Drop an intent whose key is owned by a row, or was never written, or is gone again."""
    with db.write() as conn:
        conn.execute(delete(storage_intents).where(storage_intents.c.id == intent_id))
