"""The advisory store: local import (--from), idempotent upsert, status, download."""

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest

from dockyard.metadata.db import Database
from dockyard.scanning.vulndb import (
    VulnDB,
    VulnDBError,
    discover,
    download_export,
    export_url,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "osv"
BY_ECOSYSTEM = {
    "PyPI": ["GHSA-j8r2-6x86-q33q", "GHSA-v845-jxx5-vc9f", "PYSEC-2022-42969"],
    "npm": ["GHSA-35jh-r3h4-6jhm"],
    "Go": ["GO-2023-2102", "GO-2022-0617"],
    "Maven": ["GHSA-jfh8-c2jp-5v3q"],
    "Debian": ["DSA-5218-1", "DSA-5532-1"],
    "Alpine": ["ALPINE-CVE-2022-2097", "ALPINE-CVE-2022-37434"],
}


def export_zip(ids, extra=None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in ids:
            z.writestr(f"{i}.json", (FIXTURES / f"{i}.json").read_bytes())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def vulndb(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    database.migrate()
    yield VulnDB(database)
    database.dispose()


@pytest.fixture
def mirror(tmp_path):
    """OSV's bucket layout on disk: <dir>/<ECOSYSTEM>/all.zip."""
    root = tmp_path / "osv"
    for eco, ids in BY_ECOSYSTEM.items():
        (root / eco).mkdir(parents=True)
        (root / eco / "all.zip").write_bytes(export_zip(ids))
    return root


def test_import_bucket_layout_and_status(vulndb, mirror):
    reports = vulndb.import_path(mirror)
    assert sorted(r.source for r in reports) == sorted(BY_ECOSYSTEM)
    assert all(r.invalid == 0 for r in reports)
    status = vulndb.status()
    assert status.advisories == 11
    assert status.withdrawn == 1  # GO-2022-0617
    go = next(s for s in status.sources if s.source == "Go")
    assert (go.advisories, go.withdrawn) == (2, 1)
    assert go.origin.endswith("Go/all.zip")
    body = status.as_dict()
    assert body["advisories"] == 11 and body["updated_at"] and len(body["sources"]) == 6
    json.dumps(body)  # the API/CLI payload is plain JSON


def test_import_is_idempotent_and_newer_modified_wins(vulndb, tmp_path):
    folder = tmp_path / "PyPI"
    folder.mkdir()
    (folder / "GHSA-j8r2-6x86-q33q.json").write_bytes((FIXTURES / "GHSA-j8r2-6x86-q33q.json").read_bytes())
    first = vulndb.import_path(folder)[0]
    assert (first.source, first.written, first.unchanged) == ("PyPI", 1, 0)
    again = vulndb.import_path(folder)[0]
    assert (again.written, again.unchanged) == (0, 1)
    data = json.loads((folder / "GHSA-j8r2-6x86-q33q.json").read_text())
    data["modified"] = "2024-01-01T00:00:00Z"
    data["summary"] = "updated"
    (folder / "GHSA-j8r2-6x86-q33q.json").write_text(json.dumps(data))
    newer = vulndb.import_path(folder)[0]
    assert newer.written == 1
    assert vulndb.get("GHSA-j8r2-6x86-q33q").summary == "updated"
    data["modified"] = "2020-01-01T00:00:00Z"
    data["summary"] = "stale"
    (folder / "GHSA-j8r2-6x86-q33q.json").write_text(json.dumps(data))
    assert vulndb.import_path(folder)[0].unchanged == 1
    assert vulndb.get("GHSA-j8r2-6x86-q33q").summary == "updated"


def test_invalid_records_are_counted_not_fatal(vulndb, tmp_path):
    path = tmp_path / "npm" / "all.zip"
    path.parent.mkdir()
    path.write_bytes(export_zip(["GHSA-35jh-r3h4-6jhm"], {"broken.json": b"{", "noid.json": b'{"modified": "2024-01-01T00:00:00Z"}', "README": b"x"}))
    report = vulndb.import_path(path)[0]
    assert (report.source, report.records, report.invalid) == ("npm", 1, 2)
    assert any("broken.json" in e for e in report.errors)
    assert vulndb.status().sources[0].invalid == 2


def test_withdrawn_kept_but_not_served(vulndb, mirror):
    vulndb.import_path(mirror)
    assert vulndb.get("GO-2022-0617").is_withdrawn
    live = vulndb.advisories_for([("Go", "k8s.io/kubernetes"), ("Go", "golang.org/x/net")])
    assert [a.id for a in live] == ["GO-2023-2102"]


def test_lookup_by_normalised_pypi_name(vulndb, mirror):
    vulndb.import_path(mirror)
    assert [a.id for a in vulndb.advisories_for([("PyPI", "requests")])] == ["GHSA-j8r2-6x86-q33q"]
    assert vulndb.advisories_for([("PyPI", "nothing-here")]) == []


def test_discover_errors(tmp_path):
    with pytest.raises(VulnDBError):
        discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VulnDBError):
        discover(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(VulnDBError):
        discover(tmp_path / "notes.txt")


def test_export_url_encodes_release_scoped_names():
    assert export_url("PyPI") == "https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip"
    assert export_url("Debian:12", "http://mirror/") == "http://mirror/Debian%3A12/all.zip"


def mock_bucket(exports: dict[str, bytes], calls: list):
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.raw_path.decode())
        for eco, body in exports.items():
            if request.url.raw_path.decode() == f"/{export_url(eco, '').lstrip('/')}":
                return httpx.Response(200, content=body)
        return httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://bucket")


def test_update_downloads_imports_and_skips_unchanged(vulndb, tmp_path):
    calls: list = []
    work = tmp_path / "work"
    work.mkdir()
    exports = {"PyPI": export_zip(BY_ECOSYSTEM["PyPI"]), "Alpine:v3.16": export_zip(["ALPINE-CVE-2022-2097"])}
    with mock_bucket(exports, calls) as client:
        reports = vulndb.update(client, ["PyPI", "Alpine:v3.16"], base_url="http://bucket", workdir=work)
        assert [(r.source, r.records, r.skipped) for r in reports] == [("PyPI", 3, False), ("Alpine:v3.16", 1, False)]
        assert "/Alpine%3Av3.16/all.zip" in calls
        again = vulndb.update(client, ["PyPI"], base_url="http://bucket", workdir=work)
        assert again[0].skipped
    status = vulndb.status()
    assert {s.source for s in status.sources} == {"PyPI", "Alpine:v3.16"}
    assert status.advisories == 4
    assert list(work.iterdir()) == []  # downloads are temporary


def test_download_failures_are_errors(tmp_path):
    calls: list = []
    with mock_bucket({"npm": b"not a zip"}, calls) as client:
        with pytest.raises(VulnDBError, match="HTTP 404"):
            download_export(client, "http://bucket/Nope/all.zip", tmp_path / "x.zip")
        with pytest.raises(VulnDBError, match="not a zip"):
            download_export(client, "http://bucket/npm/all.zip", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
    assert [p.name for p in tmp_path.iterdir()] == []
