"""Fixtures shared by the unit tests.

- ``db``: a migrated metadata database, once on SQLite and once on PostgreSQL. A module that needs only
  SQLite says so with ``pytestmark = pytest.mark.parametrize("db", ["sqlite"], indirect=True)``.
- Every test gets its own empty client credential store and docker config, so CLI tests never read
  (or write) the logins saved in the home directory of whoever runs them.
"""

from __future__ import annotations

import pytest

from dockyard.metadata.db import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path, database_url_for):
    url = database_url_for(request.param) or f"sqlite:///{tmp_path / 'meta.db'}"
    database = Database(url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture(autouse=True)
def no_saved_logins(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKYARD_CREDENTIALS_FILE", str(tmp_path / "saved-logins" / "credentials.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "saved-logins" / "docker"))
