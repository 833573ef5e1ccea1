"""The per-run directory of prometheus_client's multiprocess mode, made by `dockyard serve`.

Every worker process writes its counters to files there and a scrape sums them, so the directory
must be fresh for each run (old files would add a previous run's counts) and set in the
environment before any worker imports prometheus_client. It lives under data_dir/tmp as
`metrics-<pid of serve>-<random>`; directories of runs that are over are removed at start.

Whether a run is over is told by a lock, not by its pid: a pid only means something in its own pid
namespace and on its own host (two containers sharing a data volume both run serve as pid 1). Each
run holds an exclusive flock on `<dir>/.lock` for as long as serve lives (the kernel drops it when
the process dies, however it dies); a directory whose lock can be taken belongs to a finished run.
The random part keeps a run from ever reusing (and at exit removing) another run's directory.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import secrets
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported
LOCK_NAME = ".lock"
_RUN = re.compile(r"metrics-[0-9]{1,10}-[0-9a-f]{16}")
_held: list[int] = []  # this run's lock, open until the process exits


def _finished(run: Path) -> int | None:
    """An fd holding `run`'s lock if its run is over (the caller closes it), else None."""
    try:
        fd = os.open(run / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None  # being made right now, or not a run directory of this format: leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None  # its serve is alive (on this host or another that shares the volume)
    return fd


def prepare_multiproc_dir(data_dir: Path) -> Path:
    """Make a fresh directory for this run, drop those of finished runs, and export it to the workers."""
    base = data_dir / "tmp"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for old in base.glob("metrics-*"):
        if not _RUN.fullmatch(old.name) or old.is_symlink():
            continue
        fd = _finished(old)
        if fd is not None:
            try:
                shutil.rmtree(old, ignore_errors=True)
            finally:
                os.close(fd)
    me = os.getpid()
    path = base / f"metrics-{me}-{secrets.token_hex(8)}"
    path.mkdir(mode=0o700)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held.append(fd)
    os.environ[MULTIPROC_ENV] = str(path)
    # Removed when serve exits (workers are forked: the pid check keeps them from running it).
    atexit.register(lambda: os.getpid() == me and shutil.rmtree(path, ignore_errors=True))
    return path
