"""Importing dockyard does nothing but define things; and derandomized Hypothesis tests generate
the same data whatever dockyard modules were imported before them.

The second property is what broke `test_faults_fuzz_oci.py`: Hypothesis draws literals from every
loaded local module, so `import dockyard.cli.remote` in an earlier test changed its requests
(tests/support/hypothesis_constants.py). Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, logging, os, signal, sys, threading

def state():
    return {
        "threads": sorted(t.name for t in threading.enumerate()),
        "root_handlers": len(logging.getLogger().handlers),
        "root_level": logging.getLogger().level,
        "logging_disabled": logging.root.manager.disable,
        "signals": {s: repr(signal.getsignal(getattr(signal, s))) for s in ("SIGINT", "SIGTERM", "SIGHUP")},
        "environ": sorted(os.environ),
        "files": sorted(os.listdir(".")),
        "hypothesis": "hypothesis" in sys.modules,
        "excepthook": repr(sys.excepthook),
    }

before = state()
from tests.support.hypothesis_constants import dockyard_module_names, load_all_dockyard_modules
load_all_dockyard_modules()
print(json.dumps({"before": before, "after": state(), "modules": len(dockyard_module_names())}))
"""

GENERATE = r"""
import json, sys
for name in sys.argv[1:]:
    __import__(name)
from tests.support.hypothesis_constants import load_all_dockyard_modules
load_all_dockyard_modules()
from hypothesis import Phase, given, settings, strategies as st

seen = []

@settings(max_examples=300, derandomize=True, database=None, phases=[Phase.generate])
@given(st.lists(st.text(alphabet="abcxyz0123-_./", min_size=1, max_size=20), max_size=4), st.integers())
def run(names, number):
    seen.append([names, number])

run()
print(json.dumps(seen))
"""


def _python(code: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_importing_every_dockyard_module_has_no_side_effects(tmp_path):
    """No threads, logging set-up, signal handlers, environment changes, files, or test tooling
    at import time: all of that belongs to create_app() and the CLI's commands."""
    report = json.loads(_python(PROBE, cwd=tmp_path))
    assert report["modules"] > 100  # really walked the package
    assert report["after"] == report["before"]
    assert os.listdir(tmp_path) == []


def test_hypothesis_data_does_not_depend_on_earlier_dockyard_imports(tmp_path):
    """With every dockyard module loaded first, a derandomized test draws the same examples
    whether or not something else (here the CLI) was imported before it."""
    alone = json.loads(_python(GENERATE, cwd=tmp_path))
    after_cli = json.loads(_python(GENERATE, "dockyard.cli.remote", "dockyard.cli", cwd=tmp_path))
    assert len(alone) == 300
    assert after_cli == alone
