"""Hostile OSV exports sent to POST /api/v1/system/vulndb/import: a damaged zip member, records whose
names do not fit the database's columns, and records built to make the refusal message enormous.
Each is refused or skipped with a short reason; none is a 500 or a half-finished import."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from dockyard.scanning import vulndb as vulndb_module
from dockyard.scanning.vulndb import VulnDB

from .conftest import open_registry
from .helpers import API_CLIENT, assert_error

ADMIN = ("admin", "admin-password-1")
ZIP = {**API_CLIENT, "Content-Type": "application/zip"}
URL = "/api/v1/system/vulndb/import"


def record(advisory_id: str, *, ecosystem: str = "PyPI", name: str = "requests", **extra) -> dict:
    return {"id": advisory_id, "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": ecosystem, "name": name},
                          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}]}],
            **extra}


def export(records: dict[str, dict | bytes], compress: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as archive:
        for name, rec in records.items():
            archive.writestr(name, rec if isinstance(rec, bytes) else json.dumps(rec))
    return buf.getvalue()


@pytest.fixture
async def reg(tmp_path: Path):
    async with open_registry(tmp_path / "data", "filesystem", admin_password=ADMIN[1], worker_enabled=False) as r:
        yield r


async def test_a_damaged_member_is_a_400_and_nothing_is_imported(reg):
    good = json.dumps(record("PYSEC-1")).encode()
    body = bytearray(export({"PYSEC-1.json": record("PYSEC-1"), "PYSEC-2.json": good}, zipfile.ZIP_STORED))
    second = body.rindex(good)  # the second member's stored bytes: flip one so its CRC no longer matches
    body[second + 10] ^= 0x20
    r = await reg.client.post(URL, params={"source": "PyPI"}, content=bytes(body), headers=ZIP, auth=ADMIN)
    message = assert_error(r, 400, "INVALID_REQUEST")["errors"][0]["message"]
    assert "PYSEC-2.json" in message
    assert VulnDB(reg.services.db).status().advisories == 0  # both records were in the one unwritten batch
    assert list((reg.data_dir / "tmp").iterdir()) == []


async def test_a_corrupt_deflate_stream_is_a_400(reg):
    body = bytearray(export({"PYSEC-1.json": record("PYSEC-1", details="x" * 5000)}))
    start = 30 + len("PYSEC-1.json")  # the local header, then the member's deflate stream
    body[start:start + 8] = b"\xff" * 8
    r = await reg.client.post(URL, params={"source": "PyPI"}, content=bytes(body), headers=ZIP, auth=ADMIN)
    assert "PYSEC-1.json" in assert_error(r, 400, "INVALID_REQUEST")["errors"][0]["message"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_names_longer_than_their_columns_are_invalid_records_not_a_failed_import(tmp_path, database_url_for, backend):
    # SQLite stores any length; PostgreSQL refused the row and, before, the whole import with it (a 500).
    body = export({
        "ok.json": record("PYSEC-OK"),
        "long-id.json": record("X" * 256),
        "long-alias.json": record("PYSEC-ALIAS", aliases=["CVE-" + "9" * 300]),
        "long-package.json": record("PYSEC-PKG", name="p" * 600),
        "long-ecosystem.json": record("PYSEC-ECO", ecosystem="E" * 300),
    })
    url = database_url_for(backend)
    extra = {"database_url": url} if url else {}
    async with open_registry(tmp_path / "data", "filesystem", admin_password=ADMIN[1], worker_enabled=False, **extra) as reg:
        r = await reg.client.post(URL, params={"source": "PyPI"}, content=body, headers=ZIP, auth=ADMIN)
        assert r.status_code == 200, r.text
        assert VulnDB(reg.services.db).status().advisories == 1
    [report] = r.json()["sources"]
    assert (report["records"], report["written"], report["invalid"]) == (1, 1, 4)
    assert sorted(e.split(":", 1)[0] for e in report["errors"]) == [
        "long-alias.json", "long-ecosystem.json", "long-id.json", "long-package.json"]
    assert all("longer than" in e for e in report["errors"])


async def test_an_invalid_records_reason_is_short_however_large_the_record(reg):
    huge = "9" * 2_000_000
    body = export({"a.json": record("PYSEC-A", modified=huge), "b.json": {"id": huge},
                   ("n" * 5000) + ".json": b"{not json"})
    r = await reg.client.post(URL, params={"source": "PyPI"}, content=body, headers=ZIP, auth=ADMIN)
    assert r.status_code == 200, r.text
    [report] = r.json()["sources"]
    assert report["invalid"] == 3 and len(report["errors"]) == 3
    assert max(len(e) for e in report["errors"]) <= vulndb_module.MAX_ERROR_CHARS
    assert len(r.content) < 10_000


def test_records_are_written_in_batches_bounded_by_bytes(tmp_path, monkeypatch):
    """500 records of 16 MiB each would be 8 GiB held at once: a batch is also cut by size."""
    from dockyard.metadata.db import Database

    db = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    db.migrate()
    monkeypatch.setattr(vulndb_module, "BATCH_BYTES", 10_000)
    sizes: list[int] = []
    real = VulnDB._write

    def spy(self, batch, report):
        sizes.append(sum(len(raw) for _, raw in batch))
        return real(self, batch, report)

    monkeypatch.setattr(VulnDB, "_write", spy)
    records = [(f"{i}.json", json.dumps(record(f"PYSEC-{i}", details="d" * 3000)).encode()) for i in range(10)]
    report = VulnDB(db).import_records("PyPI", "test", iter(records))
    assert report.written == 10 and len(sizes) >= 3
    assert max(sizes) <= 10_000 + 3500


async def test_an_upload_removes_spool_files_a_killed_server_left(reg):
    import os
    import time

    spool = reg.data_dir / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    stale, live = spool / "upload-killed", spool / "upload-in-progress"
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    r = await reg.client.post(URL, params={"source": "PyPI"}, content=export({"a.json": record("PYSEC-A")}),
                              headers=ZIP, auth=ADMIN)
    assert r.status_code == 200, r.text
    assert sorted(p.name for p in spool.iterdir()) == ["upload-in-progress"]


async def test_no_other_caller_method_or_path_gets_a_body_spooled(reg):
    """Only an administrator's POST to the one exact path streams past the 1 MiB cap: a robot (even one
    with every action), a registry bearer token, another method, a trailing slash or a sub-path is
    refused before a body byte is written to the spool."""
    big = b"PK" + b"\0" * (2 * 1024 * 1024)
    assert (await reg.client.post("/api/v1/projects", json={"name": "team"}, auth=ADMIN)).status_code == 201
    made = await reg.client.post("/api/v1/robots", json={"name": "ci", "project": "team",
                                                         "actions": ["pull", "push", "delete"]}, auth=ADMIN)
    assert made.status_code == 201, made.text
    robot = (made.json()["name"], made.json()["secret"])
    assert_error(await reg.client.post(URL, params={"source": "PyPI"}, content=big, headers=ZIP, auth=robot), 403, "DENIED")
    bearer = {**ZIP, "Authorization": "Bearer not-a-session"}
    assert_error(await reg.client.post(URL, params={"source": "PyPI"}, content=big, headers=bearer), 401, "UNAUTHORIZED")
    for method in ("PUT", "PATCH"):
        r = await reg.client.request(method, URL, params={"source": "PyPI"}, content=big, headers=ZIP, auth=ADMIN)
        assert r.status_code == 405, (method, r.text)
    for path in (URL + "/", URL + "/more", "/api/v1/system/vulndb/import%2F"):
        r = await reg.client.post(path, params={"source": "PyPI"}, content=big, headers=ZIP, auth=ADMIN)
        assert_error(r, 413, "SIZE_INVALID")
    assert not (reg.data_dir / "tmp").exists() or [p for p in (reg.data_dir / "tmp").iterdir()
                                                   if p.name.startswith("upload-")] == []
    assert VulnDB(reg.services.db).status().advisories == 0


async def test_a_zip_declaring_too_many_entries_is_refused_before_its_directory_is_loaded(reg, monkeypatch):
    """zipfile keeps ~500 bytes per central-directory entry: 40 million empty entries fit in 4 GiB."""
    monkeypatch.setattr(vulndb_module, "MAX_ZIP_ENTRIES", 10)
    body = export({f"{i}.json": record(f"PYSEC-{i}") for i in range(11)})
    ok = export({f"{i}.json": record(f"PYSEC-{i}") for i in range(10)})
    loaded: list[str] = []
    real = zipfile.ZipFile.__init__

    def spy(self, file, *args, **kwargs):
        loaded.append(str(file))
        return real(self, file, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "__init__", spy)
    r = await reg.client.post(URL, params={"source": "PyPI"}, content=body, headers=ZIP, auth=ADMIN)
    assert "declares 11 entries in" in assert_error(r, 400, "INVALID_REQUEST")["errors"][0]["message"]
    assert loaded == []
    r = await reg.client.post(URL, params={"source": "PyPI"}, content=ok, headers=ZIP, auth=ADMIN)
    assert r.status_code == 200 and r.json()["written"] == 10, r.text


def test_the_entry_count_is_read_from_a_zip64_directory_too(tmp_path):
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.json", "{}")
    assert vulndb_module.zip_directory(path)[0] == 1
    # Past 65535 entries the end record says 0xFFFF and the count is in the zip64 record.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(70_000):
            archive.writestr(zipfile.ZipInfo(f"{i}"), b"")
    path.write_bytes(buf.getvalue())
    entries, directory = vulndb_module.zip_directory(path)
    assert entries == 70_000 and 70_000 * 46 < directory < len(buf.getvalue())
    (tmp_path / "not.zip").write_bytes(b"hello")
    assert vulndb_module.zip_directory(tmp_path / "not.zip") is None


async def test_a_zip_whose_directory_is_larger_than_its_entry_count_says_is_refused(reg, monkeypatch):
    """zipfile reads the directory by size, whatever count the end record gives."""
    monkeypatch.setattr(vulndb_module, "MAX_ZIP_DIRECTORY_BYTES", 500)
    body = bytearray(export({f"{i}.json": record(f"PYSEC-{i}") for i in range(20)}))
    end = body.rindex(b"PK\x05\x06")
    body[end + 8:end + 12] = (1).to_bytes(2, "little") * 2  # claim 1 entry: the count no longer tells
    r = await reg.client.post(URL, params={"source": "PyPI"}, content=bytes(body), headers=ZIP, auth=ADMIN)
    assert "bytes of directory" in assert_error(r, 400, "INVALID_REQUEST")["errors"][0]["message"]
