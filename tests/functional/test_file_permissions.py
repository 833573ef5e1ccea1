"""Issue 9, finding 1: the data directory is 0700 and everything under it 0600, including what an
older version left world-readable and what the server writes later (database, WAL and SHM files,
blobs, uploads, key files, storage subdirectories)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .conftest import open_registry
from .helpers import pattern


def loose_entries(root: Path) -> list[str]:
    """Everything under root (root included) that is not owner-only."""
    loose = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if stat.S_ISLNK(os.lstat(path).st_mode):
            continue
        wanted = 0o700 if path.is_dir() else 0o600
        if mode & ~wanted:
            loose.append(f"{path.relative_to(root)} {oct(mode)}")
    return loose


def old_version_tree(data_dir: Path) -> None:
    """What cb381ad left: a 0755 data dir and 0644 files, including a blob."""
    blob_dir = data_dir / "storage" / "blobs" / "sha256" / "ab"
    blob_dir.mkdir(parents=True)
    for d in (data_dir, data_dir / "storage", data_dir / "storage" / "blobs", blob_dir.parent, blob_dir):
        d.chmod(0o755)
    (blob_dir / "data").write_bytes(b"old blob")
    (blob_dir / "data").chmod(0o644)
    (data_dir / "notes.txt").write_text("left by an operator")
    (data_dir / "notes.txt").chmod(0o644)


async def test_finding1_data_dir_0700_and_every_file_0600_in_process(tmp_path):
    data_dir = tmp_path / "data"
    old_version_tree(data_dir)
    assert loose_entries(data_dir)  # the set-up really is loose
    outside = tmp_path / "blobs-elsewhere"
    async with open_registry(data_dir, "filesystem", storage_root=outside) as reg:
        await reg.push_blob("library/app", pattern(100_000, seed=1))
        upload = await reg.start_upload("library/app")  # left open: a partial upload on disk
        r = await reg.client.patch(upload, content=pattern(5000, seed=2),
                                   headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        assert reg.upload_objects() and reg.blob_objects()
        files = {p.name for p in data_dir.rglob("*")}
        assert {"dockyard.db", "dockyard.db-wal", "dockyard.db-shm", "kek"} <= files
        assert loose_entries(data_dir) == []
        assert loose_entries(outside) == []
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert loose_entries(data_dir) == [] and loose_entries(outside) == []
