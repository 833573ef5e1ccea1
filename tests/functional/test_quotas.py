"""Project quotas: usage counts distinct blobs once per project; pushes over the quota are DENIED."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import open_registry
from .helpers import assert_error, pattern, sha256

ADMIN = ("admin", "admin-password-1")


@pytest.fixture
async def reg(tmp_path: Path, storage_driver: str):
    async with open_registry(tmp_path / "data", storage_driver, admin_password=ADMIN[1], worker_enabled=False) as r:
        for name in ("team", "other", "team_x"):
            assert (await r.client.post("/api/v1/projects", json={"name": name}, auth=ADMIN)).status_code == 201
        yield r


async def quota(reg, project: str = "team") -> dict:
    r = await reg.client.get(f"/api/v1/projects/{project}/quota", auth=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


async def set_quota(reg, value, project: str = "team") -> dict:
    r = await reg.client.put(f"/api/v1/projects/{project}/quota", json={"quota_bytes": value}, auth=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


async def try_push(reg, repo: str, data: bytes):
    location = (await reg.client.post(f"/v2/{repo}/blobs/uploads/")).headers["location"]
    return await reg.client.put(location, params={"digest": sha256(data)}, content=data)


async def test_usage_counts_distinct_blobs_within_the_project(reg):
    assert await quota(reg) == {"project": "team", "quota_bytes": None, "used_bytes": 0}
    shared, own = pattern(1000, seed=1), pattern(300, seed=2)
    await reg.push_blob("team/a", shared)
    await reg.push_blob("team/b", shared)
    await reg.push_blob("team/b", own)
    await reg.push_blob("other/c", shared)
    await reg.push_blob("team_x/d", pattern(50, seed=3))  # 'team_x/…' is not in project team
    assert (await quota(reg))["used_bytes"] == 1300
    assert (await quota(reg, "other"))["used_bytes"] == 1000


async def test_a_push_over_the_quota_is_denied_and_leaves_nothing(reg):
    await reg.push_blob("team/a", pattern(600, seed=1))
    assert await set_quota(reg, 1000) == {"project": "team", "quota_bytes": 1000, "used_bytes": 600}
    big = pattern(500, seed=9)
    err = assert_error(await try_push(reg, "team/a", big), 403, "DENIED")["errors"][0]
    assert err["message"] == "quota of project team exceeded: 600 B used of 1000 B; this blob needs 500 B"
    assert reg.count("blobs", "digest = :d", d=sha256(big)) == 0 and reg.upload_rows() == 0
    assert reg.upload_objects() == [] and len(reg.blob_objects()) == 1
    # Under the quota is fine; so is a blob the project already holds, in another of its repositories.
    await reg.push_blob("team/a", pattern(400, seed=10))
    await reg.push_blob("team/b", pattern(600, seed=1))
    assert (await quota(reg))["used_bytes"] == 1000
    # Other projects are not affected; lifting the quota lets the push through.
    await reg.push_blob("other/a", big)
    await set_quota(reg, None)
    await reg.push_blob("team/a", big)
    assert (await quota(reg))["used_bytes"] == 1500


async def test_a_mount_over_the_quota_is_refused(reg):
    data = pattern(800, seed=4)
    digest = await reg.push_blob("other/src", data)
    await set_quota(reg, 500)
    r = await reg.client.post("/v2/team/a/blobs/uploads/", params={"mount": digest, "from": "other/src"})
    assert_error(r, 403, "DENIED")
    assert (await reg.client.head(f"/v2/team/a/blobs/{digest}")).status_code == 404
    await set_quota(reg, 800)
    r = await reg.client.post("/v2/team/a/blobs/uploads/", params={"mount": digest, "from": "other/src"})
    assert r.status_code == 201


async def test_quota_api_authorization_and_validation(reg):
    assert (await reg.client.post("/api/v1/users", json={"username": "dev", "password": "password-123"}, auth=ADMIN)).status_code == 201
    dev = ("dev", "password-123")
    assert_error(await reg.client.put("/api/v1/projects/team/quota", json={"quota_bytes": 5}, auth=dev), 403, "DENIED")
    assert_error(await reg.client.get("/api/v1/projects/team/quota", auth=dev), 404, "NOT_FOUND")
    assert_error(await reg.client.put("/api/v1/projects/team/quota", json={"quota_bytes": -1}, auth=ADMIN), 400, "INVALID_REQUEST")
    assert_error(await reg.client.put("/api/v1/projects/nope/quota", json={"quota_bytes": 1}, auth=ADMIN), 404, "NOT_FOUND")
    await set_quota(reg, 2048)
    events = (await reg.client.get("/api/v1/audit", params={"action": "quota.set"}, auth=ADMIN)).json()
    assert events[0]["detail"] == {"quota_bytes": 2048, "previous_quota_bytes": None}
