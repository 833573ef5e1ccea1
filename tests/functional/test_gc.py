"""Online garbage collection in-process: what it deletes, what it keeps, and the GC protocol's races."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dockyard.cli import app as cli_app
from dockyard.metadata.db import utcnow

from .conftest import open_registry
from .helpers import OCI_INDEX, OCI_MANIFEST, assert_error, descriptor, dumps, pattern, sha256

ADMIN = ("admin", "admin-password-1")
GRACE = 3600


@pytest.fixture
async def reg(tmp_path: Path, storage_driver: str):
    async with open_registry(
        tmp_path / "data", storage_driver, admin_password=ADMIN[1], gc_grace_seconds=GRACE, worker_poll_seconds=0.05
    ) as r:
        yield r


def later(reg, seconds: int = GRACE + 60) -> None:
    """Move GC's clock past the grace period of everything touched so far."""
    moment = utcnow() + timedelta(seconds=seconds)
    reg.services.gc.clock = lambda: moment


async def run_gc(reg, dry_run: bool = False) -> dict:
    r = await reg.client.post("/api/v1/system/gc", json={"dry_run": dry_run}, auth=ADMIN)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    for _ in range(400):
        job = (await reg.client.get(f"/api/v1/system/jobs/{job_id}", auth=ADMIN)).json()
        if job["state"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "succeeded", job
    return job["result"]


async def pull_verified(reg, repo: str, reference: str) -> None:
    r = await reg.client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": f"{OCI_MANIFEST},{OCI_INDEX}"})
    assert r.status_code == 200, r.text
    doc = r.json()
    children = doc.get("manifests", [])
    for child in children:
        await pull_verified(reg, repo, child["digest"])
    for desc in ([doc["config"]] if "config" in doc else []) + doc.get("layers", []):
        b = await reg.client.get(f"/v2/{repo}/blobs/{desc['digest']}")
        assert b.status_code == 200 and sha256(b.content) == desc["digest"], desc


def blob_row(reg, digest: str):
    rows = reg.sql("SELECT id, state, generation, storage_key, ref_count FROM blobs WHERE digest = :d", d=digest)
    return rows[0] if rows else None


async def test_dry_run_reports_counts_and_bytes_and_deletes_nothing(reg):
    await reg.push_image("team/app", "v1", seed=1)
    orphans = [pattern(1000 + n, seed=50 + n) for n in range(3)]
    for data in orphans:
        await reg.push_blob("team/app", data)
    before = reg.blob_objects()
    later(reg)
    result = await run_gc(reg, dry_run=True)
    assert result["dry_run"] is True
    assert (result["candidates"], result["candidate_bytes"]) == (3, sum(len(d) for d in orphans))
    assert result["deleted"] == 0 and reg.blob_objects() == before


async def test_gc_deletes_old_unreferenced_blobs_and_keeps_referenced_and_young_ones(reg):
    await reg.push_image("team/app", "v1", seed=1, layers=2)
    old = await reg.push_blob("team/app", pattern(3000, seed=7))
    old_key = blob_row(reg, old)[3]
    moment = utcnow() + timedelta(seconds=GRACE + 60)
    reg.services.blobs.clock = lambda: moment  # this upload happens "at" GC's now: young
    young = await reg.push_blob("team/app", pattern(2000, seed=8))
    reg.services.gc.clock = lambda: moment
    result = await run_gc(reg)
    assert (result["candidates"], result["deleted"], result["bytes_freed"]) == (1, 1, 3000)
    await reg.assert_blob_absent("team/app", old)
    assert not [k for k in reg.blob_objects() if old_key.replace("/", "") in k.replace("/", "").replace("\\", "")]
    assert (await reg.client.head(f"/v2/team/app/blobs/{young}")).status_code == 200
    await pull_verified(reg, "team/app", "v1")
    assert reg.count("blobs") == 4  # config + 2 layers + young
    again = await run_gc(reg)
    assert again["deleted"] == 0


async def test_deleting_a_manifest_frees_its_blobs_but_not_shared_ones(reg):
    shared = pattern(500, seed=99)
    shared_digest = await reg.push_blob("team/app", shared)
    digests = []
    for seed in (1, 2):
        config = dumps({"seed": seed})
        await reg.push_blob("team/app", config)
        body = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                      "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", shared)]})
        digests.append((await reg.push_manifest("team/app", f"v{seed}", body, OCI_MANIFEST), sha256(config)))
    r = await reg.client.delete(f"/v2/team/app/manifests/{digests[0][0]}")
    assert r.status_code == 202
    later(reg)
    result = await run_gc(reg)
    assert result["deleted"] == 1
    await reg.assert_blob_absent("team/app", digests[0][1])
    assert blob_row(reg, shared_digest)[4] == 1
    await pull_verified(reg, "team/app", "v2")


async def test_index_children_keep_their_blobs(reg):
    children = []
    for seed in (11, 12):
        digest, body = await reg.push_image("team/multi", None, seed=seed)
        children.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
                         "platform": {"architecture": f"arch{seed}", "os": "linux"}})
    index = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    await reg.push_manifest("team/multi", "latest", index, OCI_INDEX)
    later(reg)
    result = await run_gc(reg)
    assert result["candidates"] == 0 and result["deleted"] == 0
    await pull_verified(reg, "team/multi", "latest")


async def test_mark_then_reupload_gets_a_new_generation_that_the_sweep_leaves_alone(reg):
    data = pattern(4000, seed=3)
    digest = await reg.push_blob("team/app", data)
    blob_id, _, generation, key, _ = blob_row(reg, digest)
    gc = reg.services.gc
    cutoff = utcnow() + timedelta(seconds=1)
    # GC marks the blob and is then paused before its sweep.
    assert await reg.services.db.run(gc._mark, [blob_id], cutoff) == [blob_id]
    assert (await reg.client.head(f"/v2/team/app/blobs/{digest}")).status_code == 404
    # A manifest referencing the marked blob fails cleanly; a mount falls back to an upload.
    config = dumps({"x": 1})
    await reg.push_blob("team/app", config)
    body = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                  "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", data)]})
    assert_error(await reg.put_manifest("team/app", "v1", body, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN")
    r = await reg.client.post("/v2/team/other/blobs/uploads/", params={"mount": digest, "from": "team/app"})
    assert r.status_code == 202
    # The client re-uploads: the row is revived onto generation+1 and the old key is gone.
    await reg.push_blob("team/app", data)
    revived = blob_row(reg, digest)
    assert revived[0] == blob_id and revived[1] == "present" and revived[2] == generation + 1 and revived[3] != key
    assert reg.services.storage.stat(key) is None
    # The paused sweep resumes: it must neither delete the new key nor the revived row.
    assert await reg.services.db.run(gc._sweep, [blob_id]) == (0, 0)
    assert blob_row(reg, digest)[1] == "present"
    b = await reg.client.get(f"/v2/team/app/blobs/{digest}")
    assert b.status_code == 200 and hashlib.sha256(b.content).hexdigest() == digest.partition(":")[2]
    await reg.push_manifest("team/app", "v1", body, OCI_MANIFEST)
    later(reg)
    assert (await run_gc(reg))["deleted"] == 0
    await pull_verified(reg, "team/app", "v1")


async def test_mark_skips_a_blob_referenced_after_the_scan(reg):
    digest, body = await reg.push_image("team/app", "v1", seed=5)
    layer = json.loads(body)["layers"][0]["digest"]
    blob_id = blob_row(reg, layer)[0]
    assert blob_row(reg, layer)[4] == 1
    assert await reg.services.db.run(reg.services.gc._mark, [blob_id], utcnow() + timedelta(days=9)) == []
    assert blob_row(reg, layer)[1] == "present"


async def test_an_interrupted_run_is_finished_by_the_next(reg):
    digest = await reg.push_blob("team/app", pattern(700, seed=4))
    blob_id, _, _, key, _ = blob_row(reg, digest)
    assert await reg.services.db.run(reg.services.gc._mark, [blob_id], utcnow() + timedelta(seconds=1)) == [blob_id]
    result = await run_gc(reg)  # nothing is past the grace period; only the leftover mark is swept
    assert (result["marked_before"], result["resumed"], result["bytes_freed"]) == (1, 1, 700)
    assert blob_row(reg, digest) is None and reg.services.storage.stat(key) is None


async def test_head_refreshes_touched_at_at_most_once_per_half_grace(reg):
    digest = await reg.push_blob("team/app", pattern(100, seed=6))
    old = utcnow() - timedelta(seconds=GRACE)
    with reg.services.db.write() as conn:
        from sqlalchemy import update

        from dockyard.metadata.models import blobs

        conn.execute(update(blobs).where(blobs.c.digest == digest).values(touched_at=old))
    later(reg, GRACE // 2)
    assert (await run_gc(reg, dry_run=True))["candidates"] == 1
    assert (await reg.client.head(f"/v2/team/app/blobs/{digest}")).status_code == 200
    first = reg.scalar("SELECT touched_at FROM blobs WHERE digest = :d", d=digest)
    assert str(first) > str(old.replace(tzinfo=None))
    assert (await run_gc(reg, dry_run=True))["candidates"] == 0  # protected again
    assert (await reg.client.head(f"/v2/team/app/blobs/{digest}")).status_code == 200
    assert reg.scalar("SELECT touched_at FROM blobs WHERE digest = :d", d=digest) == first  # no second write


async def test_gc_api_lists_runs_and_jobs_and_needs_an_admin(reg):
    result = await run_gc(reg, dry_run=True)
    runs = await reg.client.get("/api/v1/system/gc", auth=ADMIN)
    assert runs.status_code == 200 and runs.json()[0]["result"] == result and runs.headers["x-total-count"] == "1"
    jobs = await reg.client.get("/api/v1/system/jobs", params={"kind": "gc"}, auth=ADMIN)
    assert [j["kind"] for j in jobs.json()] == ["gc"]
    assert_error(await reg.client.get("/api/v1/system/jobs/999999", auth=ADMIN), 404, "NOT_FOUND")
    assert (await reg.client.post("/api/v1/system/gc", json={})).status_code == 401
    r = await reg.client.post("/api/v1/users", json={"username": "dev", "password": "password-123"}, auth=ADMIN)
    assert r.status_code == 201
    assert_error(await reg.client.post("/api/v1/system/gc", json={}, auth=("dev", "password-123")), 403, "DENIED")
    assert_error(await reg.client.get("/api/v1/system/gc", auth=("dev", "password-123")), 403, "DENIED")
    audit = (await reg.client.get("/api/v1/audit", params={"action": "gc"}, auth=ADMIN)).json()
    assert [e["action"] for e in audit] == ["gc.start"]


async def test_scheduled_gc_runs_from_the_gc_schedule_setting(tmp_path):
    # No housekeeping or events-prune schedule: its 600 s interval could fall due with the moved clock.
    async with open_registry(tmp_path / "data", "filesystem", gc_schedule="*/10 * * * *", worker_enabled=False,
                             upload_purge_interval_seconds=0, event_prune_schedule=None) as reg:
        services = reg.services
        schedule = services.scheduler.get("gc")
        assert schedule["cron"] == "*/10 * * * *" and schedule["payload"] == {"dry_run": False}
        services.scheduler.clock = lambda: schedule["next_run_at"] + timedelta(seconds=1)
        [job_id] = services.scheduler.tick()
        assert services.worker.run_pending() == 1
        assert services.jobs.get(job_id)["state"] == "succeeded"
    async with open_registry(tmp_path / "data", "filesystem", worker_enabled=False) as reg:
        assert reg.services.scheduler.get("gc") is None  # unset: on demand only


def test_offline_admin_gc_with_progress(tmp_path, monkeypatch):
    async def prepare() -> str:
        async with open_registry(tmp_path / "data", "filesystem", worker_enabled=False) as reg:
            await reg.push_image("team/app", "v1", seed=1)
            return await reg.push_blob("team/app", pattern(5000, seed=2))

    orphan = asyncio.run(prepare())
    import dockyard.app

    build_services = dockyard.app.build_services
    moment = utcnow() + timedelta(seconds=GRACE + 60)

    def services_an_hour_later(settings):
        """The CLI's own services, with GC's clock past the grace period (no waiting for it)."""
        services = build_services(settings)
        services.gc.clock = lambda: moment
        return services

    monkeypatch.setattr(dockyard.app, "build_services", services_an_hour_later)
    runner = CliRunner()
    args = ["admin", "gc", "--data-dir", str(tmp_path / "data"), "--grace-seconds", str(GRACE), "--json"]
    dry = runner.invoke(cli_app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    counted = json.loads(dry.stdout[dry.stdout.index("{"):])
    assert (counted["candidates"], counted["candidate_bytes"], counted["deleted"]) == (1, 5000, 0)
    res = runner.invoke(cli_app, args)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout[res.stdout.index("{"):])
    assert (result["deleted"], result["bytes_freed"]) == (1, 5000)
    leftovers = [p for p in (tmp_path / "data" / "storage" / "blobs").rglob("*") if p.is_file() and orphan.partition(":")[2] in str(p)]
    assert leftovers == []
    assert len([p for p in (tmp_path / "data" / "storage" / "blobs").rglob("g*") if p.is_file()]) == 2  # config + layer


def test_offline_gc_refuses_a_negative_grace_that_would_put_the_cutoff_in_the_future(tmp_path: Path):
    res = CliRunner().invoke(cli_app, ["admin", "gc", "--data-dir", str(tmp_path / "data"), "--grace-seconds", "-86400"])
    assert res.exit_code == 2, res.output
    assert "--grace-seconds" in res.output
    assert not (tmp_path / "data").exists()  # refused before anything was opened
