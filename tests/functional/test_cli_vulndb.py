"""`dockyard vulndb update|status` straight against a data directory (no server, no network).

The data directory must exist (`dockyard admin migrate` makes it here): these commands never create
one, and they name the database they use on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dockyard.cli import app
from dockyard.jobs.queue import JobQueue
from dockyard.metadata.db import Database

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "osv"


def invoke(*args: str):
    return CliRunner().invoke(app, ["vulndb", *args])


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A migrated data directory, as `dockyard serve` or `dockyard admin migrate` leaves it."""
    path = tmp_path / "data"
    result = CliRunner().invoke(app, ["admin", "migrate", "--data-dir", str(path)])
    assert result.exit_code == 0, result.output
    assert f"database: {path.resolve() / 'dockyard.db'}" in result.stderr
    return path


def rescan_jobs(data: Path) -> list[dict]:
    db = Database(f"sqlite:///{data / 'dockyard.db'}")
    try:
        return JobQueue(db).list("rescan").items
    finally:
        db.dispose()


def test_update_from_fixtures_then_status(data):
    first = invoke("update", "--from", str(FIXTURES), "--data-dir", str(data))
    assert first.exit_code == 0, first.output
    for column in ("source", "records", "written", "unchanged", "withdrawn", "invalid"):
        assert column in first.stdout
    row = next(line for line in first.stdout.splitlines() if line.startswith("osv\t"))  # piped: TSV
    assert row.split("\t")[:6] == ["osv", "11", "11", "0", "1", "0"]
    [job] = rescan_jobs(data)
    assert job["payload"] == {"reason": "vulndb-update"}
    assert f"11 advisories written; rescan job {job['id']} queued" in first.stderr
    assert first.stderr.startswith(f"database: {data.resolve() / 'dockyard.db'}\n")

    again = invoke("update", "--from", str(FIXTURES), "--data-dir", str(data))
    assert again.exit_code == 0, again.output
    row = next(line for line in again.stdout.splitlines() if line.startswith("osv\t"))
    assert row.split("\t")[:6] == ["osv", "11", "0", "11", "1", "0"]
    assert "nothing changed" in again.stderr
    assert len(rescan_jobs(data)) == 1

    status = invoke("status", "--data-dir", str(data))
    assert status.exit_code == 0, status.output
    assert "osv" in status.stdout and "total: 11 advisories (1 withdrawn); last update: " in status.stdout

    as_json = invoke("status", "--json", "--data-dir", str(data))
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.stdout)
    assert set(body) == {"updated_at", "advisories", "withdrawn", "sources"}
    assert (body["advisories"], body["withdrawn"]) == (11, 1)
    [source] = body["sources"]
    assert source["source"] == "osv" and source["origin"] == str(FIXTURES) and source["imported_at"] == body["updated_at"]
    assert (source["advisories"], source["withdrawn"], source["invalid"]) == (11, 1, 0)


def test_update_json_output(data):
    result = invoke("update", "--from", str(FIXTURES / "GO-2022-0617.json"), "--data-dir", str(data), "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["written"] == 1 and body["rescan_job"] is not None and body["rescan_joined"] is False
    [report] = body["sources"]
    assert (report["source"], report["records"], report["withdrawn"], report["skipped"]) == ("osv", 1, 1, False)


def test_status_of_an_empty_database(data):
    result = invoke("status", "--data-dir", str(data))
    assert result.exit_code == 0, result.output
    assert "empty" in result.stdout
    as_json = invoke("status", "--json", "--data-dir", str(data))
    assert json.loads(as_json.stdout) == {"updated_at": None, "advisories": 0, "withdrawn": 0, "sources": []}


def test_a_bad_path_is_one_clear_line_and_exit_1(tmp_path, data):
    missing = tmp_path / "no-such-dir"
    result = invoke("update", "--from", str(missing), "--data-dir", str(data))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {missing}: no such file or directory"
    assert "Traceback" not in result.output and result.stdout == ""
    assert rescan_jobs(data) == []

    not_an_export = tmp_path / "notes.txt"
    not_an_export.write_text("hello")
    bad = invoke("update", "--from", str(not_an_export), "--data-dir", str(data))
    assert bad.exit_code == 1 and "expected a .zip export, a .json record or a directory" in bad.stderr


def test_no_network_says_to_use_from(data):
    # Nothing listens on port 9 of the loopback: the connection is refused at once.
    result = invoke("update", "--ecosystem", "PyPI", "--base-url", "http://127.0.0.1:9", "--data-dir", str(data))
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not download http://127.0.0.1:9/PyPI/all.zip: ")
    assert last.endswith("; use --from PATH to import local OSV exports")


def test_from_cannot_be_combined_with_download_options(tmp_path):
    result = invoke("update", "--from", str(FIXTURES), "--ecosystem", "PyPI", "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 2 and "--from imports local files" in result.stderr


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["update", "--from", str(FIXTURES)]])
def test_a_missing_data_directory_is_refused_not_created(tmp_path, monkeypatch, args):
    """Run from another directory, with the default data directory: nothing is created, and the
    message names the database it looked for and how to point at the right one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOCKYARD_DATA_DIR", raising=False)
    monkeypatch.delenv("DOCKYARD_DATABASE_URL", raising=False)
    monkeypatch.delenv("DOCKYARD_CONFIG", raising=False)
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    expected = tmp_path.resolve() / "dockyard-data"
    assert result.stderr.startswith(f"database: {expected / 'dockyard.db'}\n")
    assert f"error: no data directory at {expected}" in result.stderr
    assert "give --data-dir or --database-url" in result.stderr and "dockyard admin migrate" in result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["admin", "gc", "--dry-run"], ["admin", "purge-uploads"], ["admin", "rotate-kek"],
                                     ["worker", "--once"]])
def test_other_offline_commands_refuse_a_missing_data_directory(tmp_path, command):
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(app, [*command, "--data-dir", str(missing)])
    assert result.exit_code == 1, result.output
    assert f"error: no data directory at {missing}" in result.stderr
    assert not missing.exists()


def test_an_existing_directory_without_a_database_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    result = invoke("status", "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 1 and f"error: no database at {tmp_path / 'data'}" in result.stderr
    assert list((tmp_path / "data").iterdir()) == []


def test_postgresql_without_a_dockyard_schema_is_refused(tmp_path, postgres_db_url):
    """A fresh, empty PostgreSQL database is not a registry's: refused until `admin migrate` made it one;
    the database named on stderr never shows the password."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres_db_url)
    shown = url.render_as_string(hide_password=True)
    plain = url.render_as_string(hide_password=False)
    args = ["--database-url", plain, "--data-dir", str(tmp_path / "data")]
    refused = invoke("status", *args)
    assert refused.exit_code == 1, refused.output
    assert f"database: {shown}" in refused.stderr and "holds no Dockyard schema" in refused.stderr
    if url.password:
        assert f":{url.password}@" not in refused.output and ":***@" in refused.stderr
    assert not (tmp_path / "data").exists()
    migrated = CliRunner().invoke(app, ["admin", "migrate", *args])
    assert migrated.exit_code == 0, migrated.output
    status = invoke("status", "--json", *args)
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["advisories"] == 0


def test_a_sqlite_database_url_is_the_file_checked_and_named(tmp_path, data):
    """--database-url sqlite:///FILE is the database, not DATA_DIR/dockyard.db: a missing FILE is refused
    (and not created) even when the data directory holds a database, and an existing one is used."""
    missing = tmp_path / "elsewhere" / "meta.db"
    (tmp_path / "elsewhere").mkdir()
    refused = invoke("status", "--data-dir", str(data), "--database-url", f"sqlite:///{missing}")
    assert refused.exit_code == 1, refused.output
    assert refused.stderr.startswith(f"database: {missing}\n")
    assert f"error: no database at {missing.parent}" in refused.stderr
    assert list((tmp_path / "elsewhere").iterdir()) == []
    # Once the database exists at the URL, it is the one used.
    migrated = CliRunner().invoke(app, ["admin", "migrate", "--data-dir", str(data), "--database-url", f"sqlite:///{missing}"])
    assert migrated.exit_code == 0 and f"database: {missing}" in migrated.stderr, migrated.output
    used = invoke("status", "--json", "--data-dir", str(data), "--database-url", f"sqlite:///{missing}")
    assert used.exit_code == 0, used.output
    assert used.stderr.startswith(f"database: {missing}\n")
    assert json.loads(used.stdout)["advisories"] == 0
