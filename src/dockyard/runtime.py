"""Process-level tuning for server processes.

glibc gives each thread that allocates under contention its own malloc arena (up to 8 per core),
and an arena's freed memory mostly stays in the process. Under the soak (benchmarks/soak.py) the
server's RSS climbed by ~20 MiB per worker process whenever a burst of jobs and requests pulled
more threads into new arenas, never coming back down; with two arenas it stayed flat
(docs/reliability.md). So every server process caps its arenas (`malloc_arena_max`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("dockyard.runtime")
M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc malloc arenas for this process and the processes it starts; False where not glibc."""
    if arenas <= 0:
        return False
    os.environ.setdefault("MALLOC_ARENA_MAX", str(arenas))  # children read it at start-up
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(M_ARENA_MAX, int(os.environ["MALLOC_ARENA_MAX"])))
    if not ok:
        log.warning("could not limit malloc arenas")
    return ok
