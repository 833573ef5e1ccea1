"""Shared pytest fixtures.

- ``data_dir``: an empty per-test data directory for a server.
- ``postgres_url`` (session): a throwaway PostgreSQL started with
  scripts/postgres.sh; yields the SQLAlchemy URL of database ``dockyard``.
  Set DOCKYARD_TEST_POSTGRES_URL to use an existing server instead.
- ``postgres_db_url``: a fresh, empty database on that server for one test.
- ``database_url_for``: a function backend -> URL: None for "sqlite", a
  fresh PostgreSQL database URL for "postgresql" (for parametrized tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.server import free_port  # noqa: E402

POSTGRES_SH = REPO_ROOT / "scripts" / "postgres.sh"
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config):
    config.addinivalue_line("markers", "conformance: runs the OCI distribution-spec conformance suite")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


class PostgresServer:
    def __init__(self, directory: Path, port: int, url: str):
        self.directory, self.port, self.url = directory, port, url

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database owned by the test user; return its URL."""
        if self.directory is None:
            raise RuntimeError("DOCKYARD_TEST_POSTGRES_URL is set: cannot create databases")
        name = name or f"dockyard_{uuid.uuid4().hex[:12]}"
        return _postgres_sh("createdb", str(self.directory), str(self.port), name)


def _postgres_sh(*args: str) -> str:
    proc = subprocess.run(["bash", str(POSTGRES_SH), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/postgres.sh {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def postgres_server():
    external = os.environ.get("DOCKYARD_TEST_POSTGRES_URL")
    if external:
        yield PostgresServer(None, None, external)
        return
    # Not under pytest's tmp dir: its parents are mode 0700 and the server
    # runs as the `postgres` OS user.
    directory = Path(tempfile.mkdtemp(prefix="dockyard-pg-"))
    directory.chmod(0o755)
    port = free_port()
    try:
        url = _postgres_sh("start", str(directory), str(port))
        yield PostgresServer(directory, port, url)
    finally:
        subprocess.run(["bash", str(POSTGRES_SH), "stop", str(directory)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of the session's PostgreSQL database ``dockyard``."""
    return postgres_server.url


@pytest.fixture
def postgres_db_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of a new, empty database for this test."""
    return postgres_server.create_database()


@pytest.fixture
def database_url_for(request: pytest.FixtureRequest):
    """``database_url_for(backend)``: None for "sqlite" (Dockyard's default),
    a fresh PostgreSQL database URL for "postgresql"."""

    def get(backend: str) -> str | None:
        if backend == "sqlite":
            return None
        if backend == "postgresql":
            return request.getfixturevalue("postgres_db_url")
        raise ValueError(f"unknown backend {backend!r}")

    return get
