"""The per-run directory of prometheus_client's multiprocess mode, made by `dockyard serve`.

Every worker process writes its counters to files there and a scrape sums them, so the directory
must be fresh for each run (old files would add a previous run's counts) and set in the
environment before any worker imports prometheus_client. It lives under data_dir/tmp as
`metrics-<host>-<pid of serve>-<random>`; directories of earlier runs on this host whose serve
process is gone are removed at start.

A pid only means something on its own host and in its own pid namespace: two containers sharing a
data volume both run serve as pid 1. So a directory made on another host is never touched, and the
random part keeps a run from taking over (and, at exit, removing) the directory of another run that
happens to have the same pid.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported
_NAME = re.compile(r"metrics-(?P<host>[A-Za-z0-9.-]{1,64})-(?P<pid>[0-9]{1,10})-[0-9a-f]{16}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"


def prepare_multiproc_dir(data_dir: Path) -> Path:
    """Make a fresh directory for this run, drop those of dead runs on this host, and export it to the workers."""
    base = data_dir / "tmp"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    host, me = _host(), os.getpid()
    for old in base.glob("metrics-*"):
        found = _NAME.fullmatch(old.name)
        if found is None or found["host"] != host or old.is_symlink():
            continue  # not ours to judge: another host's run, or not a run directory at all
        pid = int(found["pid"])
        if pid == me or not _alive(pid):  # our own pid: an earlier run in this namespace (a restarted container)
            shutil.rmtree(old, ignore_errors=True)
    path = base / f"metrics-{host}-{me}-{secrets.token_hex(8)}"
    path.mkdir(mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    # Removed when serve exits (workers are forked: the pid check keeps them from running it).
    atexit.register(lambda: os.getpid() == me and shutil.rmtree(path, ignore_errors=True))
    return path
