"""`dockyard admin verify`: check that every referenced blob is stored intact, like zot's scrub.

Driven by the database, never by listing storage: the blobs checked are those a manifest references
(`manifest_references`) or whose row counts references. Without `read_blobs` a check is a stat (the
object exists with the recorded size); with it, the bytes are hashed against the digest, throttled to
`rate_mb` MB/s so a scrub does not starve pulls. Each problem names the images that use the blob:
`repo:tag` for tagged manifests (and indexes that contain them), else `repo@digest`.

Repair never deletes bytes. With a backup directory (`source`), a missing or damaged blob is copied
back from it (verified against its digest, then moved onto the blob's key atomically). Without one,
a damaged object is moved aside under `quarantine/` and its row marked `quarantined`, so the registry
treats the blob as absent (HEAD 404): a client pushing the image again uploads it, which brings the row
back; until then pulls fail cleanly instead of on the client's digest check. A later `--from` run
restores a quarantined blob too. A missing blob is only reported (re-push the image, or restore it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select, text

from dockyard.domain import blob_refs
from dockyard.domain.backup import BackupError, blob_path, hasher
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import blobs, manifest_references
from dockyard.storage import StorageDriver
from dockyard.storage.protocol import StorageError

CHUNK = 1 << 20


@dataclass
class Problem:
    digest: str
    problem: str  # no-row | missing | size-mismatch | digest-mismatch | quarantined
    detail: str
    storage_key: str | None
    images: list[str] = field(default_factory=list)
    repaired: str | None = None  # restored | quarantined


class _Throttle:
    def __init__(self, rate_mb: float | None):
        self.rate = rate_mb * 1_000_000 if rate_mb else None
        self.started = time.monotonic()
        self.total = 0

    def consumed(self, n: int) -> None:
        self.total += n
        if self.rate:
            ahead = self.total / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)  # throttling, by design: a scrub must not take the disk from pulls


def _checked(conn) -> list[tuple[str, int | None, str | None, str | None]]:
    """(digest, size, storage_key, state) of every referenced blob; size etc. None when no row exists."""
    referenced = select(manifest_references.c.digest).where(manifest_references.c.kind == "blob").distinct()
    rows = {r.digest: (r.digest, r.size, r.storage_key, r.state) for r in conn.execute(
        select(blobs.c.digest, blobs.c.size, blobs.c.storage_key, blobs.c.state)
        .where((blobs.c.ref_count > 0) | blobs.c.digest.in_(referenced))
    )}
    for digest in conn.execute(referenced).scalars():
        rows.setdefault(digest, (digest, None, None, None))
    return [rows[d] for d in sorted(rows)]


_IMAGES = text("""
WITH users AS (
  SELECT m.id, m.repository_id, m.digest FROM manifests m
  JOIN manifest_references r ON r.manifest_id = m.id AND r.kind = 'blob' AND r.digest = :digest
), parents AS (
  SELECT p.id, p.repository_id, p.digest FROM manifests p
  JOIN manifest_references r ON r.manifest_id = p.id AND r.kind = 'manifest'
  JOIN users u ON u.digest = r.digest AND u.repository_id = p.repository_id
), everything AS (SELECT * FROM users UNION SELECT * FROM parents)
SELECT repo.name, e.digest, t.name FROM everything e
JOIN repositories repo ON repo.id = e.repository_id
LEFT JOIN tags t ON t.manifest_id = e.id
""")


def images_using(conn, digest: str) -> list[str]:
    names = set()
    for repo, manifest, tag in conn.execute(_IMAGES, {"digest": digest}):
        names.add(f"{repo}:{tag}" if tag else f"{repo}@{manifest}")
    return sorted(names)


def _inspect(storage: StorageDriver, digest: str, size: int, key: str, read: bool, throttle: _Throttle) -> tuple[str, str] | None:
    stored = storage.stat(key)
    if stored is None:
        return "missing", f"no object at {key}"
    if stored != size:
        return "size-mismatch", f"{stored} bytes stored, {size} recorded"
    if read:
        h = hasher(digest)
        try:
            for chunk in storage.open_read(key):
                h.update(chunk)
                throttle.consumed(len(chunk))
        except (StorageError, OSError) as exc:
            return "missing", f"unreadable: {exc}"
        actual = f"{digest.partition(':')[0]}:{h.hexdigest()}"
        if actual != digest:
            return "digest-mismatch", f"content hashes to {actual}"
    return None


def _restore_from(storage: StorageDriver, source: Path, digest: str, size: int, key: str) -> bool:
    path = blob_path(source, digest)
    if not path.is_file() or path.stat().st_size != size:
        return False
    h = hasher(digest)
    staging = f"uploads/repair-{uuid.uuid4().hex}"
    writer = storage.open_write(staging)
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
                writer.write(chunk)
        writer.commit()
    except BaseException:
        writer.abort()
        storage.delete(staging)
        raise
    if f"{digest.partition(':')[0]}:{h.hexdigest()}" != digest:
        storage.delete(staging)
        return False
    storage.move(staging, key)
    return True


def verify(
    db: Database, storage: StorageDriver, *, read_blobs: bool = False, rate_mb: float | None = None,
    repair: bool = False, source: Path | None = None, progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Check every referenced blob; returns {"checked", "bytes_read", "problems": [Problem as dict]}."""
    throttle = _Throttle(rate_mb)
    report = progress or (lambda done, total: None)
    with db.read() as conn:
        rows = _checked(conn)
    problems: list[Problem] = []
    for i, (digest, size, key, state) in enumerate(rows):
        if state == blob_refs.QUARANTINED:
            found = ("quarantined", f"damaged bytes were moved to quarantine/{key} by an earlier --repair;"
                                    " push the image again, or repair --from a backup")
        elif key is None or state != blob_refs.PRESENT:
            found = ("no-row", "referenced by a manifest, but the registry has no present blob row for it")
        else:
            try:
                found = _inspect(storage, digest, size, key, read_blobs, throttle)
            except BackupError as exc:
                found = ("digest-mismatch", str(exc))
        report(i + 1, len(rows))
        if found is None:
            continue
        problem = Problem(digest, found[0], found[1], key if state in (blob_refs.PRESENT, blob_refs.QUARANTINED) else None)
        if repair and problem.storage_key is not None:
            problem.repaired = _repair(db, storage, problem, size, source)
        problems.append(problem)
    with db.read() as conn:
        for problem in problems:
            problem.images = images_using(conn, problem.digest)
    return {"checked": len(rows), "bytes_read": throttle.total, "problems": [asdict(p) for p in problems]}


def _still_present(db: Database, digest: str, key: str) -> bool:
    """Re-read just before a repair: GC may have collected the blob since the check (verify runs beside a
    live server), and bytes copied back then would be an object no row owns, never deleted."""
    with db.read() as conn:
        row = conn.execute(select(blobs.c.state, blobs.c.storage_key).where(blobs.c.digest == digest)).first()
    return row is not None and row.state == blob_refs.PRESENT and row.storage_key == key


def _repair(db: Database, storage: StorageDriver, problem: Problem, size: int, source: Path | None) -> str | None:
    key = problem.storage_key
    assert key is not None
    if problem.problem == "quarantined":
        return _restore_quarantined(db, storage, problem.digest, size, key, source) if source is not None else None
    if not _still_present(db, problem.digest, key):
        return None
    if source is not None and _restore_from(storage, source, problem.digest, size, key):
        return "restored"
    if problem.problem in ("size-mismatch", "digest-mismatch"):
        # The row leaves `present` in the transaction that moves the bytes: from its commit on, HEAD says 404
        # and a re-push uploads the blob again (blob_refs.QUARANTINED).
        with db.write() as conn:
            if not blob_refs.quarantine(conn, problem.digest, key):
                return None
            storage.move(key, f"quarantine/{key}")
        return "quarantined"
    return None


def _restore_quarantined(db: Database, storage: StorageDriver, digest: str, size: int, key: str, source: Path) -> str | None:
    """Copy a quarantined blob back from a backup and serve it again, holding its row (a re-push racing
    us either revived it already, so the row is not quarantined any more, or waits for our commit)."""
    with db.write() as conn:
        if blob_refs.lock_quarantined(conn, digest) != key or not _restore_from(storage, source, digest, size, key):
            return None
        blob_refs.unquarantine(conn, digest, utcnow())
    return "restored"
