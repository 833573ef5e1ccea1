"""POST /api/v1/system/vulndb/import and `dockyard vulndb import`: an air-gapped OSV import that
reaches the running server's database, streamed past the API's 1 MiB body cap, admin only."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
from typer.testing import CliRunner

import dockyard.scanning.updates
from dockyard.cli import app as cli_app
from dockyard.scanning.vulndb import VulnDB

from .conftest import open_registry
from .helpers import API_CLIENT, assert_error

ADMIN = ("admin", "admin-password-1")
DEV = ("dev", "password-123")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "osv"
RECORDS = sorted(FIXTURES.glob("*.json"))
ZIP = {**API_CLIENT, "Content-Type": "application/zip"}


def export_zip(padding: int = 0) -> bytes:
    """An OSV export of the fixture records; `padding` bytes of incompressible non-record data make it large."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for record in RECORDS:
            archive.writestr(record.name, record.read_bytes())
        if padding:
            archive.writestr("README.bin", os.urandom(padding), compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


@pytest.fixture
async def reg(tmp_path: Path):
    async with open_registry(tmp_path / "data", "filesystem", admin_password=ADMIN[1], worker_enabled=False) as r:
        created = await r.client.post("/api/v1/users", json={"username": DEV[0], "password": DEV[1]}, auth=ADMIN)
        assert created.status_code == 201, created.text
        yield r


async def test_an_uploaded_export_reaches_the_servers_database(reg):
    body = export_zip(padding=3 * 1024 * 1024)  # above the 1 MiB cap every other /api/v1 body has
    assert len(body) > 3 * 1024 * 1024
    r = await reg.client.post("/api/v1/system/vulndb/import", params={"source": "PyPI"}, content=body, headers=ZIP,
                              auth=ADMIN)
    assert r.status_code == 200, r.text
    result = r.json()
    [report] = result["sources"]
    assert (report["source"], report["records"], report["written"], report["withdrawn"], report["skipped"]) == (
        "PyPI", 11, 11, 1, False)
    assert result["written"] == 11 and result["rescan_job"] is not None and result["rescan_joined"] is False
    status = VulnDB(reg.services.db).status()
    assert status.advisories == 11 and [s.source for s in status.sources] == ["PyPI"]
    assert status.sources[0].origin.startswith("upload sha256:")
    assert reg.services.jobs.get(result["rescan_job"])["payload"] == {"reason": "vulndb-update"}
    # The same export again is recognised by its sha256 and not read.
    again = await reg.client.post("/api/v1/system/vulndb/import", params={"source": "PyPI"}, content=body, headers=ZIP,
                                  auth=ADMIN)
    assert again.status_code == 200 and again.json()["sources"][0]["skipped"] is True and again.json()["rescan_job"] is None
    audit = (await reg.client.get("/api/v1/audit", params={"action": "vulndb.import"}, auth=ADMIN)).json()
    assert [(e["action"], e["object"], e["detail"]["written"], e["detail"]["bytes"]) for e in audit] == [
        ("vulndb.import", "source PyPI", 0, len(body)), ("vulndb.import", "source PyPI", 11, len(body))]
    assert list((reg.data_dir / "tmp").iterdir()) == []  # the spooled upload is gone


async def test_only_administrators_and_nothing_is_spooled_for_others(reg):
    body = export_zip(padding=2 * 1024 * 1024)
    assert_error(await reg.client.post("/api/v1/system/vulndb/import", params={"source": "PyPI"}, content=body,
                                       headers=ZIP), 401, "UNAUTHORIZED")
    denied = assert_error(await reg.client.post("/api/v1/system/vulndb/import", params={"source": "PyPI"}, content=body,
                                                headers=ZIP, auth=DEV), 403, "DENIED")
    assert "dockyard vulndb update --from FILE" in denied["errors"][0]["message"]
    assert not (reg.data_dir / "tmp").exists() or list((reg.data_dir / "tmp").iterdir()) == []
    assert VulnDB(reg.services.db).status().advisories == 0


async def test_bad_uploads_are_refused_with_a_reason(reg, monkeypatch):
    post = reg.client.post
    url = "/api/v1/system/vulndb/import"
    r = await post(url, params={"source": "PyPI"}, content=b"hello, not a zip", headers=ZIP, auth=ADMIN)
    assert "not a zip archive" in assert_error(r, 400, "INVALID_REQUEST")["errors"][0]["message"]
    empty_zip = io.BytesIO()
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("notes.txt", "no records")
    r = await post(url, params={"source": "PyPI"}, content=empty_zip.getvalue(), headers=ZIP, auth=ADMIN)
    assert "no .json records" in assert_error(r, 400, "INVALID_REQUEST")["errors"][0]["message"]
    r = await post(url, params={"source": "PyPI"}, content=b"", headers=ZIP, auth=ADMIN)
    assert "no body" in assert_error(r, 400, "INVALID_REQUEST")["errors"][0]["message"]
    r = await post(url, params={"source": "../etc"}, content=export_zip(), headers=ZIP, auth=ADMIN)
    assert "expected an OSV ecosystem name" in assert_error(r, 400, "INVALID_REQUEST")["errors"][0]["message"]
    monkeypatch.setattr(dockyard.scanning.updates, "MAX_IMPORT_BYTES", 1000)
    assert_error(await post(url, params={"source": "PyPI"}, content=export_zip(), headers=ZIP, auth=ADMIN), 413, "SIZE_INVALID")

    async def chunked():  # no Content-Length: the cap is enforced while streaming
        data = export_zip()
        for i in range(0, len(data), 500):
            yield data[i:i + 500]

    assert_error(await post(url, params={"source": "PyPI"}, content=chunked(), headers=ZIP, auth=ADMIN), 413, "SIZE_INVALID")
    assert VulnDB(reg.services.db).status().advisories == 0
    assert list((reg.data_dir / "tmp").iterdir()) == []


class _BufferedASGI(httpx.BaseTransport):
    """The CLI's sync client (streaming the file from a generator) against the in-process app."""

    def __init__(self, app):
        self.inner = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        buffered = httpx.Request(request.method, request.url, headers=request.headers, content=request.read())

        async def forward() -> httpx.Response:
            response = await self.inner.handle_async_request(buffered)
            return httpx.Response(response.status_code, headers=response.headers, content=await response.aread())

        return anyio.from_thread.run(forward)


async def test_cli_import_uploads_to_the_running_registry(reg, monkeypatch, tmp_path):
    from dockyard.cli import remote

    def local_client(self) -> httpx.Client:
        return httpx.Client(transport=_BufferedASGI(reg.app), base_url="http://registry.test/api/v1",
                            auth=(self.username, self.password or ""), headers=remote.CLIENT_HEADERS)

    monkeypatch.setattr(remote.Remote, "client", local_client)
    export = tmp_path / "exports" / "Go" / "all.zip"
    export.parent.mkdir(parents=True)
    export.write_bytes(export_zip())
    env = {"DOCKYARD_URL": "http://registry.test", "DOCKYARD_USERNAME": ADMIN[0], "DOCKYARD_PASSWORD": ADMIN[1],
           "DOCKYARD_CREDENTIALS_FILE": str(tmp_path / "credentials.json"), "DOCKER_CONFIG": str(tmp_path / "docker"),
           "COLUMNS": "200"}
    run = lambda *args: CliRunner().invoke(cli_app, ["vulndb", "import", *args], env=env)  # noqa: E731
    result = await anyio.to_thread.run_sync(run, str(export), "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["written"] == 11 and body["sources"][0]["source"] == "Go" and body["rescan_job"] is not None
    assert f"uploading {export} as source Go" in result.stderr
    assert [s.source for s in VulnDB(reg.services.db).status().sources] == ["Go"]
    table = await anyio.to_thread.run_sync(run, str(export), "--source", "Go")
    assert table.exit_code == 0, table.output
    assert "skipped: export unchanged" in table.stdout and "nothing changed" in table.stderr
    bad = await anyio.to_thread.run_sync(run, str(FIXTURES / "GO-2022-0617.json"))
    assert bad.exit_code == 2 and "expected an OSV export .zip" in bad.stderr
    denied = await anyio.to_thread.run_sync(lambda: CliRunner().invoke(
        cli_app, ["vulndb", "import", str(export)], env={**env, "DOCKYARD_USERNAME": DEV[0], "DOCKYARD_PASSWORD": DEV[1]}))
    assert denied.exit_code == 1 and "HTTP 403 DENIED" in denied.stderr
