"""Blob references: the one owner of every statement on `blobs` and `repository_blobs`.

The GC protocol (design.md section 2) lives in these operations, so it can be read here in one
place. The invariant: **no blob is ever deleted while something references it or is about to**,
and that is decided by the blob's own row, not by a timing window.

- **add ref / touch.** Every transaction that creates a reference to a blob (manifest PUT:
  `add_refs`; mount, publish, promotion: `touch_present`, `touch_one`) writes the blob's own row,
  `UPDATE blobs SET touched_at = now() [, ref_count = ref_count + 1] WHERE … AND state = 'present'`.
  If the row is not `present`, the writer fails cleanly (MANIFEST_BLOB_UNKNOWN, so the client
  uploads again) or retries.
- **drop ref.** A manifest delete decrements `ref_count` and touches the row (`drop_refs`); a
  blob DELETE only removes the repository link (`unlink`). Neither deletes bytes: GC does.
- **unlink.** A blob DELETE is refused while a manifest of the repository references the blob
  (every manifest's blobs stay linked to its repository; quotas and pulls rely on it). It locks
  the blob's row (`lock_present`) before it looks for referencing manifests; a manifest PUT
  writes the same row (`add_refs`) and re-reads its links after that write, so of the two racing
  writers the later one always sees the earlier one's commit.
- **refresh.** Blob HEAD/GET refreshes `touched_at` at most once per half grace period
  (`touch_id`, called by domain/blobs.py), so the usual HEAD → skip upload → PUT manifest
  sequence is covered by the grace period, and the row check above closes the remaining race.
- **mark.** GC marks in ONE statement whose conditions are all on that same row (`mark`):
  `UPDATE blobs SET state = 'deleting' WHERE id IN (…) AND state = 'present' AND ref_count = 0
  AND touched_at < cutoff`. Writer and GC then serialize on the row lock, and PostgreSQL
  re-checks the row's *new* values under READ COMMITTED. A `NOT EXISTS (SELECT … FROM refs)`
  sub-query would NOT be safe: its re-check does not see references committed after the
  statement began. SQLite serializes writers anyway. On PostgreSQL GC skips rows a writer holds
  (`SKIP LOCKED`): a held row is being referenced, and GC never waits, so it cannot deadlock.
  The marked blobs' repository links go in the same transaction.
- **sweep.** A second transaction locks the still-`deleting` rows, deletes each row's storage
  object, then the rows (`sweep`). A run interrupted between mark and sweep leaves `deleting`
  rows; the next run sweeps them first (`marked_ids`).
- **generations.** Storage keys carry a generation (storage/paths.py). Publishing a blob GC has
  marked revives the row onto the next generation's key while holding the row (`lock_marked`,
  `revive`), so the sweeper, which deletes only under the same lock and only rows still
  `deleting`, never deletes a revived blob's bytes.

Objects a crash left without a row are tracked by storage intents (domain/intents.py), not by
listing storage; GC asks `owns_key` before reclaiming one. Candidates come from one indexed
range scan (`ix_blobs_gc` on state, ref_count, touched_at), so a GC run costs in proportion to
the garbage, not to the registry.

Functions take the caller's connection: the reference and the caller's own writes (manifest
rows, quota check, storage move) commit or roll back together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, delete, exists, func, select, update

from dockyard.metadata.db import insert_ignore
from dockyard.metadata.models import blobs, manifest_references, manifests, repositories, repository_blobs
from dockyard.storage import StorageDriver

PRESENT = "present"
DELETING = "deleting"
# `admin verify --repair` moved the damaged bytes aside: the registry answers as if the blob were absent
# (HEAD/GET 404, a manifest naming it is MANIFEST_BLOB_UNKNOWN), so clients upload it again and the
# upload revives the row like a GC-marked one (`lock_marked`, `revive`). GC collects the row once nothing
# references it (the moved bytes are never deleted).
QUARANTINED = "quarantined"

# The blob-stat hot path (HEAD/GET of a blob) runs on a raw cursor, off the ORM (design.md section 5).
STAT_SQL = (
    "SELECT b.size, b.storage_key, b.id, b.touched_at FROM repositories r"
    " JOIN repository_blobs rb ON rb.repository_id = r.id"
    " JOIN blobs b ON b.id = rb.blob_id"
    " WHERE r.name = ? AND b.digest = ? AND b.state = 'present'"
)


@dataclass(frozen=True)
class StoredBlob:
    id: int
    size: int
    storage_key: str


# -- reads --------------------------------------------------------------------------------


def present_blob(conn: Connection, digest: str) -> StoredBlob | None:
    """The present blob `digest` (in any repository), or None."""
    row = conn.execute(
        select(blobs.c.id, blobs.c.size, blobs.c.storage_key).where(blobs.c.digest == digest, blobs.c.state == PRESENT)
    ).first()
    return None if row is None else StoredBlob(int(row.id), int(row.size), row.storage_key)


def blob_id(conn: Connection, digest: str) -> int | None:
    """The row id of `digest` in any state, or None."""
    return conn.execute(select(blobs.c.id).where(blobs.c.digest == digest)).scalar()


def generation_state(conn: Connection, digest: str) -> tuple[int, str] | None:
    """(generation, state) of `digest`'s row, or None if there is no row."""
    row = conn.execute(select(blobs.c.generation, blobs.c.state).where(blobs.c.digest == digest)).first()
    return None if row is None else (int(row.generation), row.state)


def referencing_manifest(conn: Connection, repo_id: int, digest: str) -> str | None:
    """The digest of a manifest of repository `repo_id` that references blob `digest`, or None."""
    return conn.execute(
        select(manifests.c.digest)
        .join(manifest_references, manifest_references.c.manifest_id == manifests.c.id)
        .where(manifests.c.repository_id == repo_id, manifest_references.c.kind == "blob", manifest_references.c.digest == digest)
        .order_by(manifests.c.digest)
        .limit(1)
    ).scalar()


def linked_present(conn: Connection, repo_id: int, digests: Sequence[str]) -> set[str]:
    """The `digests` that are present and linked into the repository `repo_id`."""
    return set(
        conn.execute(
            select(blobs.c.digest)
            .join(repository_blobs, and_(repository_blobs.c.blob_id == blobs.c.id, repository_blobs.c.repository_id == repo_id))
            .where(blobs.c.digest.in_(digests), blobs.c.state == PRESENT)
        ).scalars()
    )


def holders(conn: Connection, digest: str, source: str | None = None, limit: int = 100) -> list[str]:
    """Names of repositories (only `source`, if given) holding the present blob `digest`, in name order."""
    query = (
        select(repositories.c.name)
        .join(repository_blobs, repository_blobs.c.repository_id == repositories.c.id)
        .join(blobs, blobs.c.id == repository_blobs.c.blob_id)
        .where(blobs.c.digest == digest, blobs.c.state == PRESENT)
    )
    if source is not None:
        query = query.where(repositories.c.name == source)
    return list(conn.execute(query.order_by(repositories.c.name).limit(limit)).scalars())


def owns_key(conn: Connection, digest: str, key: str) -> bool:
    """Whether a blob row (any state) owns storage `key` of `digest`."""
    query = select(blobs.c.id).where(blobs.c.digest == digest, blobs.c.storage_key == key)
    return conn.execute(query.limit(1)).first() is not None


# -- quota reads: bytes of present blobs linked into a set of repositories ----------------


def _linked_into(repo_filter) -> exists:
    return exists(
        select(repository_blobs.c.blob_id)
        .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
        .where(repository_blobs.c.blob_id == blobs.c.id, repo_filter)
    )


def linked_bytes(conn: Connection, repo_filter) -> int:
    """Bytes of distinct present blobs linked into the repositories matching `repo_filter`."""
    linked = (
        select(repository_blobs.c.blob_id)
        .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
        .where(repo_filter)
    )
    return int(
        conn.execute(
            select(func.coalesce(func.sum(blobs.c.size), 0)).where(blobs.c.id.in_(linked), blobs.c.state == PRESENT)
        ).scalar_one()
    )


def unlinked_bytes(conn: Connection, digests: Iterable[str], repo_filter) -> int:
    """Bytes of the present `digests` NOT yet linked into any repository matching `repo_filter`."""
    wanted = list(dict.fromkeys(digests))
    return int(
        conn.execute(
            select(func.coalesce(func.sum(blobs.c.size), 0)).where(
                blobs.c.digest.in_(wanted), blobs.c.state == PRESENT, ~_linked_into(repo_filter)
            )
        ).scalar_one()
    )


def held_size(conn: Connection, digest: str, repo_filter) -> int:
    """Size of the present `digest` if a repository matching `repo_filter` holds it, else 0."""
    size = conn.execute(
        select(blobs.c.size).where(blobs.c.digest == digest, blobs.c.state == PRESENT, _linked_into(repo_filter))
    ).scalar()
    return int(size or 0)


# -- references: add, drop, touch, link ----------------------------------------------------


def add_refs(conn: Connection, digests: Sequence[str], now: datetime) -> int:
    """A new manifest references `digests`: ref_count + 1 and touch, on present rows only.
    Returns how many rows were written; fewer than len(digests) means one is gone or marked."""
    return conn.execute(
        update(blobs)
        .where(blobs.c.digest.in_(digests), blobs.c.state == PRESENT)
        .values(ref_count=blobs.c.ref_count + 1, touched_at=now)
    ).rowcount


def drop_refs(conn: Connection, digests: Sequence[str], now: datetime) -> None:
    """A deleted manifest no longer references `digests`: ref_count - 1, and touch (the grace
    period then starts from the delete)."""
    conn.execute(
        update(blobs).where(blobs.c.digest.in_(digests)).values(ref_count=blobs.c.ref_count - 1, touched_at=now)
    )


def touch_present(conn: Connection, digests: Sequence[str], now: datetime) -> int:
    """Touch the present rows of `digests` (a writer about to link them); returns how many."""
    return conn.execute(
        update(blobs).where(blobs.c.digest.in_(digests), blobs.c.state == PRESENT).values(touched_at=now)
    ).rowcount


def touch_one(conn: Connection, digest: str, now: datetime) -> StoredBlob | None:
    """Touch the present row of `digest` and return it; None if it is absent or marked."""
    row = conn.execute(
        update(blobs)
        .where(blobs.c.digest == digest, blobs.c.state == PRESENT)
        .values(touched_at=now)
        .returning(blobs.c.id, blobs.c.size, blobs.c.storage_key)
    ).first()
    return None if row is None else StoredBlob(int(row.id), int(row.size), row.storage_key)


def touch_id(conn: Connection, blob_id: int, now: datetime) -> None:
    """Refresh a present blob's touched_at (a HEAD: a client may reference it soon)."""
    conn.execute(update(blobs).where(blobs.c.id == blob_id, blobs.c.state == PRESENT).values(touched_at=now))


def link(conn: Connection, repo_id: int, blob_id: int, now: datetime) -> bool:
    """Link a blob into a repository (idempotent); True if the link is new."""
    return bool(
        insert_ignore(
            conn, repository_blobs, {"repository_id": repo_id, "blob_id": blob_id, "created_at": now}, ["repository_id", "blob_id"]
        )
    )


def link_digests(conn: Connection, repo_id: int, digests: Sequence[str], now: datetime) -> int:
    """Link every row of `digests` into a repository; returns how many links are new.
    Call after `touch_present` confirmed they are all present, in the same transaction."""
    ids = list(conn.execute(select(blobs.c.id).where(blobs.c.digest.in_(digests))).scalars())
    return sum(link(conn, repo_id, i, now) for i in ids)


def lock_present(conn: Connection, digest: str) -> int | None:
    """Lock (PostgreSQL) the present row of `digest` and return its id; None if absent or marked.
    A manifest PUT writing the row (`add_refs`) waits for us, or we wait for its commit."""
    query = select(blobs.c.id).where(blobs.c.digest == digest, blobs.c.state == PRESENT)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).scalar()


def unlink(conn: Connection, repo_id: int, blob_id: int) -> bool:
    """Remove a blob's link from one repository (bytes stay for GC); False if there was none."""
    return bool(
        conn.execute(
            delete(repository_blobs).where(repository_blobs.c.repository_id == repo_id, repository_blobs.c.blob_id == blob_id)
        ).rowcount
    )


# -- publishing: create or revive a blob's row ----------------------------------------------


def insert_blob(conn: Connection, digest: str, size: int, key: str, now: datetime) -> int | None:
    """Claim `digest` with a new present row at generation 1 (uncommitted until the caller commits).
    Returns the new row's id, or None if a row already exists."""
    row = {"digest": digest, "size": size, "storage_key": key, "generation": 1, "state": PRESENT,
           "ref_count": 0, "created_at": now, "touched_at": now}
    if not insert_ignore(conn, blobs, row, ["digest"]):
        return None
    return conn.execute(select(blobs.c.id).where(blobs.c.digest == digest)).scalar_one()


def lock_marked(conn: Connection, digest: str):
    """Lock (PostgreSQL) and return `digest`'s row if it is not present (marked by GC, or quarantined):
    id, generation, storage_key. The sweeper takes the same lock, so it cannot delete while we revive."""
    query = select(blobs.c.id, blobs.c.generation, blobs.c.storage_key).where(blobs.c.digest == digest, blobs.c.state != PRESENT)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).first()


def revive(conn: Connection, blob_id: int, key: str, generation: int, size: int, now: datetime) -> None:
    """Bring a locked, marked row back as present on a new generation's key."""
    conn.execute(
        update(blobs)
        .where(blobs.c.id == blob_id)
        .values(state=PRESENT, storage_key=key, generation=generation, size=size, touched_at=now)
    )


def quarantine(conn: Connection, digest: str, key: str) -> bool:
    """Take the present row of `digest` stored at `key` out of service (verify found its bytes damaged);
    False if it is no longer that row (GC marked it, or a re-push moved it, since the check)."""
    return bool(
        conn.execute(
            update(blobs).where(blobs.c.digest == digest, blobs.c.storage_key == key, blobs.c.state == PRESENT)
            .values(state=QUARANTINED)
        ).rowcount
    )


def lock_quarantined(conn: Connection, digest: str) -> str | None:
    """Lock (PostgreSQL) the quarantined row of `digest` and return its storage key; None otherwise."""
    query = select(blobs.c.storage_key).where(blobs.c.digest == digest, blobs.c.state == QUARANTINED)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).scalar()


def unquarantine(conn: Connection, digest: str, now: datetime) -> None:
    """Good bytes are back at the quarantined row's key (restored from a backup): serve it again."""
    conn.execute(
        update(blobs).where(blobs.c.digest == digest, blobs.c.state == QUARANTINED).values(state=PRESENT, touched_at=now)
    )


# -- GC: mark and sweep --------------------------------------------------------------------


def _candidates(cutoff: datetime):
    # A quarantined row nothing references any more is garbage too (its bytes stay under quarantine/).
    return (blobs.c.state.in_((PRESENT, QUARANTINED)), blobs.c.ref_count == 0, blobs.c.touched_at < cutoff)


def garbage_stats(conn: Connection, cutoff: datetime) -> tuple[int, int, int]:
    """(candidates, their bytes, rows left marked by an interrupted run)."""
    count, size = conn.execute(select(func.count(), func.coalesce(func.sum(blobs.c.size), 0)).where(*_candidates(cutoff))).one()
    stale = conn.execute(select(func.count()).where(blobs.c.state == DELETING)).scalar_one()
    return int(count), int(size), int(stale)


def candidate_ids(conn: Connection, cutoff: datetime, limit: int) -> list[int]:
    """Unreferenced present blobs untouched since `cutoff` (an index range scan)."""
    return list(conn.execute(select(blobs.c.id).where(*_candidates(cutoff)).limit(limit)).scalars())


def marked_ids(conn: Connection, limit: int) -> list[int]:
    """Blobs marked `deleting` and not swept yet."""
    return list(conn.execute(select(blobs.c.id).where(blobs.c.state == DELETING).limit(limit)).scalars())


def mark(conn: Connection, ids: Sequence[int], cutoff: datetime) -> list[int]:
    """Mark the candidates among `ids` `deleting`, re-checking every condition on the row itself,
    and drop their repository links; returns the ids marked."""
    target = blobs.c.id.in_(ids)
    if conn.dialect.name == "postgresql":
        # Lock only rows no writer holds right now (a writer holding one is referencing it):
        # GC never waits on a row lock, so it can never deadlock with a manifest PUT.
        free = select(blobs.c.id).where(target, *_candidates(cutoff)).with_for_update(skip_locked=True)
        target = blobs.c.id.in_(free)
    marked = list(
        conn.execute(update(blobs).where(target, *_candidates(cutoff)).values(state=DELETING).returning(blobs.c.id)).scalars()
    )
    if marked:
        conn.execute(delete(repository_blobs).where(repository_blobs.c.blob_id.in_(marked)))
    return marked


def sweep(conn: Connection, ids: Sequence[int], storage: StorageDriver) -> tuple[int, int]:
    """Delete the objects of the rows among `ids` still marked, then the rows, under the rows'
    locks; returns (rows deleted, bytes freed)."""
    query = select(blobs.c.id, blobs.c.storage_key, blobs.c.size).where(blobs.c.id.in_(ids), blobs.c.state == DELETING)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # a publisher reviving a row holds it
    rows = conn.execute(query).all()
    for row in rows:
        storage.delete(row.storage_key)
    if rows:
        conn.execute(delete(blobs).where(blobs.c.id.in_([r.id for r in rows]), blobs.c.state == DELETING))
    return len(rows), sum(int(r.size) for r in rows)


def drop_ref_counts(conn: Connection, counts: dict[str, int], now: datetime) -> None:
    """Many manifests go at once (a repository delete): each digest loses `counts[digest]` references.
    One UPDATE per distinct count, so a repository of thousands of manifests costs a few statements."""
    by_count: dict[int, list[str]] = {}
    for digest, n in counts.items():
        by_count.setdefault(n, []).append(digest)
    for n, digests in by_count.items():
        for start in range(0, len(digests), 500):
            chunk = digests[start:start + 500]
            conn.execute(update(blobs).where(blobs.c.digest.in_(chunk)).values(ref_count=blobs.c.ref_count - n, touched_at=now))


def pending_stats(conn: Connection, cutoff: datetime) -> tuple[int, int, datetime | None]:
    """Unreferenced present blobs still inside the grace period (touched at or after `cutoff`):
    (count, bytes, oldest touch). GC reports them so "0 B freed" is never a silent surprise."""
    count, size, oldest = conn.execute(
        select(func.count(), func.coalesce(func.sum(blobs.c.size), 0), func.min(blobs.c.touched_at)).where(
            blobs.c.state == PRESENT, blobs.c.ref_count == 0, blobs.c.touched_at >= cutoff
        )
    ).one()
    return int(count), int(size), oldest
