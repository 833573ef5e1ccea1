"""Online backup and restore of a registry on SQLite (docs/operations.md).

Order, and why it is consistent while pushes and GC run:

1. take a backup lease (domain/backup_leases.py) and commit it: from now on GC keeps every blob that
   loses its last reference, because that write touches the blob's row after the lease's `since`;
2. snapshot the database with SQLite's online backup API (one read transaction: a consistent view,
   writers are not blocked in WAL mode);
3. copy every blob the snapshot holds as `present`, content-addressed, hashing each copy against
   its digest; the lease is renewed while this runs, and released at the end.

A blob with no references in the snapshot (an upload whose manifest had not arrived yet) may be
collected meanwhile if it was already older than the grace; it is garbage in the snapshot too, so it is
marked `deleting` in the copy and the restored registry's GC clears it. A *referenced* blob that is
missing or whose bytes do not match its digest fails the backup: run `dockyard admin verify`.

The backup directory: `dockyard.db`, `blobs/<algorithm>/<hex>`, `secrets/kek` (the key that
encrypts the database's secrets, read just before the snapshot, with an interrupted rotation's
`secrets/kek.new`) and `manifest.json` (format version, counts, sha256 of the
database and the key, every blob's digest and size), written last: a directory without it is not
a backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from contextlib import closing
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.auth.secret_box import PENDING_SUFFIX
from dockyard.domain import backup_leases
from dockyard.metadata.db import Database, utcnow
from dockyard.storage import StorageDriver
from dockyard.storage.protocol import StorageError

FORMAT = "dockyard-backup"
VERSION = 1
DB_FILE = "dockyard.db"
MANIFEST = "manifest.json"
KEK_FILE = "secrets/kek"
KEK_PENDING = KEK_FILE + PENDING_SUFFIX  # the new KEK of an interrupted `rotate-kek`: secrets may be sealed under it
KEY_FILES = (KEK_FILE, KEK_PENDING)
CHUNK = 1 << 20


class BackupError(Exception):
    """The backup or restore cannot be completed (the message says what to do)."""


@dataclass
class BackupResult:
    path: str
    blobs: int = 0
    bytes: int = 0
    dropped: list[str] = field(default_factory=list)  # unreferenced blobs collected during the copy
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0


def hasher(digest: str):
    algorithm = digest.partition(":")[0]
    if algorithm not in ("sha256", "sha512"):
        raise BackupError(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algorithm)


def blob_path(root: Path, digest: str) -> Path:
    algorithm, _, encoded = digest.partition(":")
    if not encoded.isalnum() or not algorithm.isalnum():
        raise BackupError(f"malformed digest {digest!r}")
    return root / "blobs" / algorithm / encoded


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _empty_dir(path: Path, what: str) -> None:
    """A new or empty directory of ours, made owner-only: its files are the registry's database and key."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{what} {path} is not empty: give a new directory")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid == os.getuid():
        os.chmod(path, 0o700)
    elif not trusted_directory(st.st_uid, st.st_mode, os.getuid()):  # its owner could swap or plant files in it
        raise BackupError(f"{what} {path} belongs to another user (uid {st.st_uid}): give a directory of your own")


def trusted_directory(owner: int, mode: int, me: int) -> bool:
    """Whether a directory's owner and mode keep other users from renaming files in it: ours, or root's and
    not writable by everyone (a volume mount point, e.g. a Kubernetes volume with an fsGroup)."""
    return owner == me or (owner == 0 and not mode & 0o002)


def _copy_owner_only(source: Path, target: Path) -> None:
    """Copy a secret file: created 0600 (never copied at the umask's mode and tightened afterwards)."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        os.fchmod(out.fileno(), 0o600)
        shutil.copyfileobj(src, out)


def _key_files(kek_file: Path | None) -> dict[str, bytes]:
    """The KEK and a pending one, by their names in the backup (what the database's secrets are sealed under)."""
    if kek_file is None:
        return {}
    paths = {KEK_FILE: kek_file, KEK_PENDING: kek_file.with_name(kek_file.name + PENDING_SUFFIX)}
    return {name: path.read_bytes() for name, path in paths.items() if path.is_file()}


def _write_verified(chunks: Iterable[bytes], target: Path, digest: str, size: int) -> None:
    """Copy into `target` (through a temporary file), refusing bytes that do not hash to `digest`."""
    h = hasher(digest)
    written = 0
    partial = target.with_name(target.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "wb") as out:
        for chunk in chunks:
            h.update(chunk)
            out.write(chunk)
            written += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    actual = f"{digest.partition(':')[0]}:{h.hexdigest()}"
    if actual != digest or written != size:
        partial.unlink()
        raise BackupError(f"blob {digest}: the copy has {written} bytes hashing to {actual}, expected {size} bytes")
    partial.replace(target)


def _snapshot_blobs(snapshot: Path) -> list[tuple[str, int, str, int]]:
    with closing(sqlite3.connect(snapshot)) as conn:
        return conn.execute(
            "SELECT digest, size, storage_key, ref_count FROM blobs WHERE state = 'present' ORDER BY digest"
        ).fetchall()


def _counts(snapshot: Path) -> dict:
    with closing(sqlite3.connect(snapshot)) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 (fixed table names)
                  for t in ("repositories", "manifests", "tags")}
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    counts["schema_revision"] = revision[0] if revision else None
    return counts


def backup(
    db: Database, storage: StorageDriver, sqlite_file: Path, dest: Path, *, kek_file: Path | None = None,
    lease_seconds: int = 600, progress: Callable[[int, int], None] | None = None,
) -> BackupResult:
    """Back up a running registry's SQLite database and referenced blobs into the new directory `dest`."""
    started = time.monotonic()
    _empty_dir(dest, "backup directory")
    report = progress or (lambda done, total: None)
    keys = _key_files(kek_file)  # read around the snapshot: it must go with the keys that open it
    lease = backup_leases.take(db, lease_seconds)  # 1. before the snapshot (see the module docstring)
    try:
        snapshot = dest / (DB_FILE + ".partial")
        source = sqlite3.connect(sqlite_file, timeout=30)
        try:
            with closing(sqlite3.connect(snapshot)) as target:
                source.backup(target)  # 2. one step: one consistent read transaction
        finally:
            source.close()
        if _key_files(kek_file) != keys:
            raise BackupError("the key-encryption key changed while the database was copied (`rotate-kek`?): "
                              "run the backup again")
        rows = _snapshot_blobs(snapshot)
        result = BackupResult(path=str(dest))
        renewed = time.monotonic()
        entries = []
        for i, (digest, size, key, ref_count) in enumerate(rows):  # 3. copy what the snapshot holds
            if time.monotonic() - renewed > lease_seconds / 3:
                if not backup_leases.renew(db, lease, lease_seconds):
                    raise BackupError("the backup lease expired (the copy stalled); GC may have run: start again")
                renewed = time.monotonic()
            try:
                if storage.stat(key) is None:
                    raise StorageError(f"no object {key}")
                _write_verified(storage.open_read(key), blob_path(dest, digest), digest, size)
            except (StorageError, OSError) as exc:
                if ref_count > 0:
                    raise BackupError(f"blob {digest} is referenced but unreadable ({exc}); run `dockyard admin verify`") from exc
                result.dropped.append(digest)  # collected garbage: not part of any image in the snapshot
                continue
            entries.append({"digest": digest, "size": size})
            result.blobs += 1
            result.bytes += size
            report(i + 1, len(rows))
        if result.dropped:
            with closing(sqlite3.connect(snapshot)) as conn, conn:
                conn.executemany("UPDATE blobs SET state = 'deleting' WHERE digest = ?", [(d,) for d in result.dropped])
    finally:
        backup_leases.release(db, lease)
    snapshot.replace(dest / DB_FILE)
    files = {DB_FILE: file_sha256(dest / DB_FILE)}
    for name, data in keys.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(dest / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        files[name] = file_sha256(dest / name)
    result.counts = {**_counts(dest / DB_FILE), "blobs": result.blobs, "blob_bytes": result.bytes}
    result.seconds = round(time.monotonic() - started, 3)
    manifest = {"format": FORMAT, "version": VERSION, "created_at": utcnow().isoformat(), "counts": result.counts,
                "files": files, "dropped": result.dropped, "blobs": entries}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return result


def read_manifest(src: Path) -> dict:
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src} is not a complete Dockyard backup (no readable {MANIFEST}): {exc}") from exc
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise BackupError(f"{src}/{MANIFEST}: not a {FORMAT} version {VERSION} backup")
    return manifest


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(CHUNK), b"")


def restore(src: Path, data_dir: Path, progress: Callable[[int, int], None] | None = None) -> dict:
    """Restore the backup `src` into the new, empty `data_dir` (database, blobs at their keys, secrets/kek),
    checking every file against the backup's manifest and every blob against its digest as it copies."""
    manifest = read_manifest(src)
    _empty_dir(data_dir, "data directory")
    report = progress or (lambda done, total: None)
    files = manifest.get("files")
    if not isinstance(files, dict) or DB_FILE not in files or not set(files) <= {DB_FILE, *KEY_FILES}:
        raise BackupError(f"{src}/{MANIFEST} must list {DB_FILE} (and at most {', '.join(KEY_FILES)}), nothing else: "
                          "the backup is damaged or was altered")
    for name, expected in files.items():
        if file_sha256(src / name) != expected:
            raise BackupError(f"{src}/{name} does not match the backup's manifest (sha256): the backup is damaged")
    with closing(sqlite3.connect(f"file:{src / DB_FILE}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT digest, size, storage_key FROM blobs WHERE state = 'present' ORDER BY digest").fetchall()
    storage_root = data_dir / "storage"
    for i, (digest, size, key) in enumerate(rows):
        source = blob_path(src, digest)
        if not source.is_file():
            raise BackupError(f"blob {digest} is missing from the backup")
        if (found := source.stat().st_size) != size:  # before copying: a padded file must not fill the disk
            raise BackupError(f"blob {digest}: {found} bytes in the backup, expected {size} bytes")
        target = storage_root / key
        if storage_root.resolve() not in target.resolve().parents:
            raise BackupError(f"blob {digest} has an unsafe storage key {key!r}")
        _write_verified(_file_chunks(source), target, digest, size)
        report(i + 1, len(rows))
    _copy_owner_only(src / DB_FILE, data_dir / DB_FILE)
    for name in KEY_FILES:
        if name in files:
            _copy_owner_only(src / name, data_dir / name)
    counts = manifest.get("counts")
    return {"data_dir": str(data_dir), "blobs": len(rows), "bytes": sum(r[1] for r in rows),
            "counts": counts if isinstance(counts, dict) else {}}
