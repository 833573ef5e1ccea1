"""The README's first command, run literally in a fresh clone and a fresh virtual environment, serves a registry.

The venv sees the already-installed dependencies (``--system-site-packages``) so the test does not download the
world; what it proves is that `pip install -e .` of a clean clone installs a working `dockyard` entry point and
that `dockyard serve` comes up on its embedded defaults (SQLite plus ./dockyard-data) with no other step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.server import REPO_ROOT, free_port
from tests.unit.test_readme import readme_commands


def test_readme_first_command_serves_from_a_fresh_clone(tmp_path: Path):
    install_and_serve, _ = readme_commands()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_") and k != "PYTHONPATH"}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(venv), DOCKYARD_PORT=str(port))
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(["bash", "-c", install_and_serve], cwd=clone, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert status == 401, (status, (tmp_path / "serve.log").read_text()[-3000:])
        assert (clone / "dockyard-data").is_dir(), "the embedded defaults keep data in ./dockyard-data"
        assert (venv / "bin" / "dockyard").exists(), "pip install -e . installs the dockyard entry point"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
