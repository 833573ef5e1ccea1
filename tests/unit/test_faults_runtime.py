"""Soak finding: under load each server worker's RSS climbed in ~20 MiB steps that never came back
(glibc's per-thread malloc arenas, 8 per core). Server processes now cap the arenas
(`malloc_arena_max`, default 2); tests/e2e/test_soak.py asserts RSS stays flat."""

from __future__ import annotations

import os
import subprocess
import sys

from dockyard.settings import Settings

PROBE = "from dockyard.runtime import limit_malloc_arenas as f, os; print(f({n}), os.environ.get('MALLOC_ARENA_MAX'))"


def _probe(n: int) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    return subprocess.run([sys.executable, "-c", PROBE.format(n=n)], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_soak_finding_server_processes_cap_malloc_arenas_by_default(tmp_path):
    assert Settings(data_dir=tmp_path).malloc_arena_max == 2
    assert _probe(2) == "True 2"  # mallopt applied here, and inherited by the processes it starts
    assert _probe(0) == "False None"  # 0 leaves glibc alone
