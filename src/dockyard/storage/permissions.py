"""Owner-only file modes for everything the server writes: the database, blobs, uploads, key files.

Two layers, because either alone leaves gaps: the process umask (077) covers every file and
directory created from now on, whoever creates it (SQLite's -wal/-shm, storage subdirectories,
scan work dirs); `secure_tree` fixes what an older version created 0755/0644.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
MARKER = ".dockyard-modes-v1"  # present once a tree has been walked and tightened


def restrict_umask() -> int:
    """Make new files 0600 and new directories 0700 in this process; returns the old umask."""
    return os.umask(UMASK)


def secure_tree(root: Path) -> int:
    """Create `root` if needed and make it and everything under it owner-only.

    Returns how many entries had their mode tightened. Symlinks are neither followed nor changed
    (a link could point anywhere on the host); entries that vanish meanwhile are skipped."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    changed = _tighten(root, DIR_MODE)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            changed += _tighten(Path(dirpath, name), DIR_MODE)
        for name in filenames:
            changed += _tighten(Path(dirpath, name), FILE_MODE)
    return changed


def _tighten(path: Path, mode: int) -> int:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) & ~mode == 0:
        return 0
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode, follow_symlinks=False)
    except (FileNotFoundError, NotImplementedError):
        return 0
    return 1


def secure_server_paths(data_dir: Path, storage_root: Path | None, database_path: str | None) -> None:
    """Everything a server of these settings writes: umask first, then the existing trees.

    The full walk runs once per tree (a marker file remembers it): later starts only re-check the
    roots and the database files, so a store of millions of blobs does not slow every start. The
    umask keeps what is written afterwards owner-only."""
    restrict_umask()
    for root in (data_dir, storage_root):
        if root is None:
            continue
        root = Path(root)
        marker = root / MARKER
        if marker.exists():
            root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            _tighten(root, DIR_MODE)
        else:
            secure_tree(root)
            marker.touch(mode=FILE_MODE)
    if database_path:
        db = Path(database_path)
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), db.with_name(db.name + "-journal")):
            if path.exists():
                _tighten(path, FILE_MODE)


def secure_settings_paths(settings) -> None:
    """secure_server_paths for a Settings: its data dir, filesystem store and SQLite file."""
    from sqlalchemy.engine import make_url

    database_path = make_url(settings.resolved_database_url).database if settings.is_sqlite else None
    storage_root = settings.resolved_storage_root if settings.storage_driver == "filesystem" else None
    secure_server_paths(settings.data_dir, storage_root, database_path if database_path != ":memory:" else None)
