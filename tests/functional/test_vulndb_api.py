"""/api/v1/system/vulndb in-process: status for any signed-in caller, updates for admins, the schedule."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from dockyard.scanning.vulndb import VulnDB

from .conftest import open_registry
from .helpers import assert_error

ADMIN = ("admin", "admin-password-1")
DEV = ("dev", "password-123")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "osv"


@pytest.fixture
async def reg(tmp_path: Path):
    # No in-process worker: a queued vulndb-update job must not try the network here.
    async with open_registry(tmp_path / "data", "filesystem", admin_password=ADMIN[1], worker_enabled=False) as r:
        r2 = await r.client.post("/api/v1/users", json={"username": DEV[0], "password": DEV[1]}, auth=ADMIN)
        assert r2.status_code == 201, r2.text
        yield r


def same_instant(text: str | None, expected: str | None) -> bool:
    if text is None or expected is None:
        return text == expected
    return datetime.fromisoformat(text.replace("Z", "+00:00")) == datetime.fromisoformat(expected)


async def test_status_of_an_empty_database(reg):
    r = await reg.client.get("/api/v1/system/vulndb", auth=DEV)
    assert r.status_code == 200, r.text
    assert r.json() == {"updated_at": None, "advisories": 0, "withdrawn": 0, "sources": []}


async def test_status_after_an_import_for_any_signed_in_caller(reg):
    VulnDB(reg.services.db).import_path(FIXTURES)
    expected = VulnDB(reg.services.db).status().as_dict()
    for auth in (ADMIN, DEV):
        r = await reg.client.get("/api/v1/system/vulndb", auth=auth)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"updated_at", "advisories", "withdrawn", "sources"}
        assert (body["advisories"], body["withdrawn"]) == (expected["advisories"], expected["withdrawn"]) == (11, 1)
        assert same_instant(body["updated_at"], expected["updated_at"])
        [source] = body["sources"]
        want = dict(expected["sources"][0])
        assert set(source) == set(want)
        assert same_instant(source.pop("imported_at"), want.pop("imported_at"))
        assert source == want == {"source": "osv", "origin": str(FIXTURES), "advisories": 11, "withdrawn": 1, "invalid": 0}
    assert_error(await reg.client.get("/api/v1/system/vulndb"), 401, "UNAUTHORIZED")


async def test_update_needs_an_admin_and_queues_one_job(reg):
    assert_error(await reg.client.post("/api/v1/system/vulndb/update"), 401, "UNAUTHORIZED")
    assert_error(await reg.client.post("/api/v1/system/vulndb/update", auth=DEV), 403, "DENIED")
    assert reg.services.jobs.list("vulndb-update").total == 0

    r = await reg.client.post("/api/v1/system/vulndb/update", auth=ADMIN)
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["kind"], job["state"], job["payload"]) == ("vulndb-update", "queued", {})
    assert "vulndb-update" in reg.services.worker.handlers  # registered by build_services

    again = await reg.client.post("/api/v1/system/vulndb/update", auth=ADMIN)
    assert again.status_code == 202 and again.json()["id"] == job["id"]  # joins the queued one
    assert reg.services.jobs.list("vulndb-update").total == 1

    listed = await reg.client.get("/api/v1/system/jobs", params={"kind": "vulndb-update"}, auth=ADMIN)
    assert [j["id"] for j in listed.json()] == [job["id"]]
    audit = (await reg.client.get("/api/v1/audit", params={"action": "vulndb"}, auth=ADMIN)).json()
    assert [(e["action"], e["object"], e["detail"]) for e in audit] == [
        ("vulndb.update", f"job {job['id']}", {"joined": True}),
        ("vulndb.update", f"job {job['id']}", {"joined": False}),
    ]


async def test_the_update_schedule_is_off_by_default_and_removed_when_emptied(tmp_path):
    data = tmp_path / "data"
    async with open_registry(data, "filesystem", worker_enabled=False) as reg:
        assert reg.services.scheduler.get("vulndb-update") is None
        assert reg.services.settings.vulndb_update_schedule == ""
    async with open_registry(data, "filesystem", worker_enabled=False, vulndb_update_schedule="0 4 * * *") as reg:
        schedule = reg.services.scheduler.get("vulndb-update")
        assert (schedule["kind"], schedule["cron"], schedule["payload"]) == ("vulndb-update", "0 4 * * *", {})
    async with open_registry(data, "filesystem", worker_enabled=False) as reg:
        assert reg.services.scheduler.get("vulndb-update") is None
