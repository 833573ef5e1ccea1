"""Fault injection helpers: a size-limited tmpfs to fill up, and a PostgreSQL to restart.

The tests run as root (CI and the dev containers), so `mount -t tmpfs` works; every mount is
undone in teardown, lazily if something still holds it open.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. "6m") at `path` for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0, name: str = "filler") -> Path:
    """Take all free space on `path`'s filesystem but `leave` bytes, with one file; delete it to free the space."""
    filler = path / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        want = max(free_bytes(path) - leave, 0)
        chunk = b"\0" * (1 << 20)
        written = 0
        while written < want:
            try:
                written += os.write(fd, chunk[: min(len(chunk), want - written)])
            except OSError:
                break
        os.fsync(fd)
    finally:
        os.close(fd)
    return filler
