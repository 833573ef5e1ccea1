"""`dockyard vulndb update|status` straight against a data directory (no server, no network)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dockyard.cli import app
from dockyard.jobs.queue import JobQueue
from dockyard.metadata.db import Database

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "osv"


def invoke(*args: str):
    return CliRunner().invoke(app, ["vulndb", *args])


def rescan_jobs(data: Path) -> list[dict]:
    db = Database(f"sqlite:///{data / 'dockyard.db'}")
    try:
        return JobQueue(db).list("rescan").items
    finally:
        db.dispose()


def test_update_from_fixtures_then_status(tmp_path):
    data = tmp_path / "data"
    first = invoke("update", "--from", str(FIXTURES), "--data-dir", str(data))
    assert first.exit_code == 0, first.output
    for column in ("source", "records", "written", "unchanged", "withdrawn", "invalid"):
        assert column in first.stdout
    row = next(line for line in first.stdout.splitlines() if line.startswith("osv\t"))  # piped: TSV
    assert row.split("\t")[:6] == ["osv", "11", "11", "0", "1", "0"]
    [job] = rescan_jobs(data)
    assert job["payload"] == {"reason": "vulndb-update"}
    assert f"11 advisories written; rescan job {job['id']} queued" in first.stderr

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


def test_update_json_output(tmp_path):
    result = invoke("update", "--from", str(FIXTURES / "GO-2022-0617.json"), "--data-dir", str(tmp_path / "data"), "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["written"] == 1 and body["rescan_job"] is not None and body["rescan_joined"] is False
    [report] = body["sources"]
    assert (report["source"], report["records"], report["withdrawn"], report["skipped"]) == ("osv", 1, 1, False)


def test_status_of_an_empty_database(tmp_path):
    result = invoke("status", "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert "empty" in result.stdout
    as_json = invoke("status", "--json", "--data-dir", str(tmp_path / "data"))
    assert json.loads(as_json.stdout) == {"updated_at": None, "advisories": 0, "withdrawn": 0, "sources": []}


def test_a_bad_path_is_one_clear_line_and_exit_1(tmp_path):
    missing = tmp_path / "no-such-dir"
    result = invoke("update", "--from", str(missing), "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {missing}: no such file or directory"
    assert "Traceback" not in result.output and result.stdout == ""
    assert rescan_jobs(tmp_path / "data") == []

    not_an_export = tmp_path / "notes.txt"
    not_an_export.write_text("hello")
    bad = invoke("update", "--from", str(not_an_export), "--data-dir", str(tmp_path / "data"))
    assert bad.exit_code == 1 and "expected a .zip export, a .json record or a directory" in bad.stderr


def test_no_network_says_to_use_from(tmp_path):
    # Nothing listens on port 9 of the loopback: the connection is refused at once.
    result = invoke("update", "--ecosystem", "PyPI", "--base-url", "http://127.0.0.1:9", "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not download http://127.0.0.1:9/PyPI/all.zip: ")
    assert last.endswith("; use --from PATH to import local OSV exports")


def test_from_cannot_be_combined_with_download_options(tmp_path):
    result = invoke("update", "--from", str(FIXTURES), "--ecosystem", "PyPI", "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 2 and "--from imports local files" in result.stderr
