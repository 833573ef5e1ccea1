"""Attack review of issue 15: offline commands that open the blob store (`admin gc`, `admin purge-uploads`,
`worker --once`), given a `--database-url` that exists and a `--data-dir` that does not, refuse with
one clear line and create nothing: they would otherwise run against a new, empty blob store.
SQLite (a database outside the data directory) and PostgreSQL."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dockyard.cli import app

COMMANDS = [["admin", "gc", "--dry-run"], ["admin", "purge-uploads"], ["worker", "--once"]]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path, database_url_for):
    url = database_url_for(request.param) or f"sqlite:///{tmp_path / 'elsewhere' / 'registry.db'}"
    (tmp_path / "elsewhere").mkdir()
    result = CliRunner().invoke(app, ["admin", "migrate", "--data-dir", str(tmp_path / "real"), "--database-url", url])
    assert result.exit_code == 0, result.output
    return url


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_missing_data_dir_is_refused_not_created(tmp_path, database, command):
    missing = tmp_path / "typo"
    result = CliRunner().invoke(app, [*command, "--data-dir", str(missing), "--database-url", database])
    assert result.exit_code == 1, result.output
    assert "no data directory at" in result.output
    assert str(missing) in result.output.replace("\n", "")
    assert not missing.exists()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_missing_blob_store_is_refused(tmp_path, database, command):
    data = tmp_path / "data"
    data.mkdir()
    result = CliRunner().invoke(app, [*command, "--data-dir", str(data), "--database-url", database])
    assert result.exit_code == 1, result.output
    assert "no blob store at" in result.output
    assert not (data / "storage").exists()


def test_an_existing_registry_still_works(tmp_path, database):
    result = CliRunner().invoke(app, ["admin", "gc", "--dry-run", "--data-dir", str(tmp_path / "real"), "--database-url", database])
    assert result.exit_code == 0, result.output
