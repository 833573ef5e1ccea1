"""Make derandomized Hypothesis runs independent of which dockyard modules happen to be loaded.

Hypothesis (since 6.131) mixes the string and number literals of every *local* module in
`sys.modules` (for us: dockyard's; test files are excluded) into the data it generates, sampled
by its seeded random. A derandomized test therefore generates different data depending on what
earlier tests in the same process imported: `test_faults_fuzz_oci.py` generated another request
sequence after a test had imported `dockyard.cli.remote`, and only that sequence hit a bug.
Loading every dockyard module up front fixes the pool, so what a test generates depends only on
the code, not on test order or selection.
"""

from __future__ import annotations

import importlib
import pkgutil

import dockyard

# Not library modules: the alembic environment and revisions run under alembic only, and
# `python -m dockyard` starts the CLI.
SKIPPED = ("dockyard.__main__", "dockyard.metadata.migrations")


def dockyard_module_names() -> list[str]:
    """Every importable dockyard module (packages included), in a stable order."""
    names: list[str] = []

    def walk(path, prefix: str) -> None:
        for info in sorted(pkgutil.iter_modules(path, prefix), key=lambda i: i.name):
            if any(info.name == s or info.name.startswith(s + ".") for s in SKIPPED):
                continue
            names.append(info.name)
            if info.ispkg:
                walk(importlib.import_module(info.name).__path__, info.name + ".")

    walk(dockyard.__path__, "dockyard.")
    return names


def load_all_dockyard_modules() -> None:
    """Import every dockyard module, so Hypothesis's pool of local constants is complete."""
    for name in dockyard_module_names():
        importlib.import_module(name)
