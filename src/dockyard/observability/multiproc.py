"""The per-run directory of prometheus_client's multiprocess mode, made by `dockyard serve`.

Every worker process writes its counters to files there and a scrape sums them, so the directory
must be fresh for each run (old files would add a previous run's counts) and set in the
environment before any worker imports prometheus_client. It lives under data_dir/tmp as
`metrics-<pid of serve>`; directories of runs whose serve process is gone are removed at start.
"""

from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_multiproc_dir(data_dir: Path) -> Path:
    """Make a fresh directory for this run, drop those of dead runs, and export it to the workers."""
    base = data_dir / "tmp"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for old in base.glob("metrics-*"):
        pid = old.name.removeprefix("metrics-")
        if not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = base / f"metrics-{os.getpid()}"
    path.mkdir(mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    owner = os.getpid()
    # Removed when serve exits (workers are forked: the pid check keeps them from running it).
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(path, ignore_errors=True))
    return path
