"""Issue #19 items 2, 7, 8 and issue #9 through the scan service and the app's own worker: hostile
images pushed by a project member fail their scan with the cap's reason while the registry keeps
answering; an index's repeated child is catalogued once; a stopping worker releases its scan job."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import anyio.to_thread
import httpx
import pytest

from dockyard.app import create_app
from dockyard.policy.security_policy import BUILTIN_SCANNER
from dockyard.scanning import sbom as sbom_module
from dockyard.scanning import syft_runner
from dockyard.scanning.limits import GiB, MiB, ScanLimitExceeded
from dockyard.scanning.service import SCAN_JOB
from dockyard.settings import Settings
from tests.support import hostile_images
from tests.support.scan_images import FIXED, LOG4SHELL, VULNERABLE, java_app

from .governance_helpers import ADMIN, BASE, Env
from .helpers import OCI_INDEX, OCI_MANIFEST, Registry, descriptor, dumps
from .test_security_gates import import_fixtures, push_built
from .helpers import API_CLIENT

LIMITS = {
    "scan_max_unpacked_bytes": 16 * MiB,
    "scan_max_files": 10_000,
    "scan_max_package_db_bytes": 4 * MiB,
    "scan_max_memory_bytes": 2 * GiB,
}
HOSTILE = {
    "gzip-bomb": (lambda root: hostile_images.gzip_bomb(root, 256 * MiB), r"unpacks to more than 16 MiB \(scan_max_unpacked_bytes"),
    "many-files": (lambda root: hostile_images.many_files(root, 20_000), r"more than 10000 files \(scan_max_files\)"),
    "huge-dpkg-status": (
        lambda root: hostile_images.huge_dpkg_status(root, 12 * MiB),
        r"var/lib/dpkg/status is 12 MiB, more than 4 MiB \(scan_max_package_db_bytes\)",
    ),
}


async def _env(tmp_path: Path, **settings):
    app = create_app(Settings(data_dir=tmp_path / "data", admin_password=ADMIN[1], **LIMITS, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url=BASE, auth=ADMIN) as api:
            yield Env(Registry(app=app, client=api, driver="filesystem", data_dir=tmp_path / "data"), api)


@pytest.fixture
async def env(tmp_path):
    async for e in _env(tmp_path):
        yield e


@pytest.fixture
async def manual(tmp_path):
    """No background worker: the test runs the scan jobs itself."""
    async for e in _env(tmp_path, worker_enabled=False):
        yield e


def scans_dir(env) -> Path:
    return env.reg.data_dir / "tmp" / "scans"


def leftover_scan_dirs(env) -> list[str]:
    return os.listdir(scans_dir(env)) if scans_dir(env).exists() else []


async def until(condition, timeout: float = 120):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await anyio.to_thread.run_sync(condition)):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return result


@pytest.mark.parametrize("kind", HOSTILE)
async def test_finding2_hostile_image_fails_with_its_reason_while_the_registry_serves(env, tmp_path, monkeypatch, kind):
    build, reason = HOSTILE[kind]
    await env.project("team")
    image = build(tmp_path / "image")
    digest = await push_built(env, "team/app", "latest", image)
    # The scan process waits at a gate, so the requests below are answered while the scan runs.
    gate = tmp_path / "gate"
    script = f'while [ ! -e "{gate}" ]; do sleep 0.02; done; exec "$0" -m dockyard.scanning.syft_runner "$1"'
    monkeypatch.setattr(syft_runner, "CHILD", ["sh", "-c", script, sys.executable])
    r = await env.api.post("/api/v1/repositories/team/app/artifacts/latest/scan")
    assert r.status_code in (200, 202), r.text
    await until(lambda: leftover_scan_dirs(env))  # the scan process has started
    r = await env.api.get("/v2/team/app/manifests/latest")
    assert r.status_code == 200 and r.headers["docker-content-digest"] == digest
    status = (await env.api.get("/api/v1/repositories/team/app/artifacts/latest/scan")).json()
    assert status["in_progress"] and status["images"][0]["report"] is None
    gate.touch()

    def report():
        return env.services.scans.reports.get(digest, BUILTIN_SCANNER)

    failed = await until(report)
    assert failed.status == "failed"
    assert failed.error.startswith(f"ScanLimitExceeded: layer {image.layers[0]}")
    assert re.search(reason, failed.error), failed.error
    assert leftover_scan_dirs(env) == []  # removed before the failure was recorded
    assert (await env.api.get("/v2/")).status_code == 200


async def test_finding2_over_a_cap_a_rescan_keeps_the_last_verdict(manual, tmp_path):
    env = manual
    await env.project("team")
    import_fixtures(env)
    digest = await push_built(env, "team/app", "1", java_app(tmp_path / "img", VULNERABLE))
    scans = env.services.scans
    payload = {"repository": "team/app", "digest": digest, "scanner": BUILTIN_SCANNER, "force": True}
    await anyio.to_thread.run_sync(scans.handle_scan, payload, lambda _: None)
    good = scans.reports.get(digest, BUILTIN_SCANNER)
    assert good.status == "ok" and good.summary["Critical"] == 1
    scans.limits = replace(scans.limits, max_files=2)
    with pytest.raises(ScanLimitExceeded, match=r"more than 2 files \(scan_max_files\)"):
        await anyio.to_thread.run_sync(scans.handle_scan, payload, lambda _: None)
    kept = scans.reports.get(digest, BUILTIN_SCANNER)
    assert kept.status == "ok" and [f["id"] for f in kept.findings] == [good.findings[0]["id"]]
    assert LOG4SHELL in json.dumps(kept.findings)
    assert leftover_scan_dirs(env) == []


def _index(*children: bytes) -> bytes:
    return dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, body, platform={"architecture": "amd64", "os": "linux"}) for body in children],
    })  # fmt: skip


async def test_finding8_an_index_listing_one_child_30_times_runs_syft_once(manual, tmp_path, monkeypatch):
    env = manual
    await env.project("team")
    image = java_app(tmp_path / "img", FIXED)
    child = await push_built(env, "team/app", "child", image)
    index = _index(*[image.manifest] * 30)
    index_digest = await env.reg.push_manifest("team/app", "multi", index, OCI_INDEX)
    runs: list[str] = []
    real = sbom_module.catalogue_image
    monkeypatch.setattr(sbom_module, "catalogue_image", lambda manifest, *a, **k: (runs.append(manifest), real(manifest, *a, **k))[1])
    job_id = env.services.scans.request("team/app", index_digest, BUILTIN_SCANNER, force=True)
    await anyio.to_thread.run_sync(env.services.worker.run_pending)
    # One child job for the one image (issue 19 item 6: a job per platform image), one syft run.
    assert [c["payload"]["digest"] for c in env.services.jobs.children(job_id)] == [child]
    parent = env.services.jobs.get(job_id)
    assert parent["state"] == "succeeded" and [i["digest"] for i in parent["result"]["images"]] == [child]
    assert len(runs) == 1


async def test_finding8_a_stopping_worker_releases_the_index_scan_between_images(manual, tmp_path):
    env = manual
    await env.project("team")
    first, second = java_app(tmp_path / "a", VULNERABLE), java_app(tmp_path / "b", FIXED)
    for tag, image in (("a", first), ("b", second)):
        await push_built(env, "team/app", tag, image)
    index_digest = await env.reg.push_manifest("team/app", "multi", _index(first.manifest, second.manifest), OCI_INDEX)
    worker, scans, queue = env.services.worker, env.services.scans, env.services.jobs
    job_id = scans.request("team/app", index_digest, BUILTIN_SCANNER, force=True)
    assert await anyio.to_thread.run_sync(worker.run_one)  # the index: one child job per image
    children = {c["payload"]["digest"]: c["id"] for c in queue.children(job_id)}
    assert set(children) == {first.digest, second.digest}
    assert await anyio.to_thread.run_sync(worker.run_one)  # the first image
    assert scans.reports.get(first.digest, BUILTIN_SCANNER).status == "ok"
    worker.stop()  # as the app's shutdown does, between the two images
    assert await anyio.to_thread.run_sync(worker.run_one)
    job = queue.get(children[second.digest])
    assert (job["state"], job["attempts"], job["error"]) == ("queued", 0, None)  # released, not failed
    assert queue.get(job_id)["state"] == "waiting"
    assert scans.reports.get(second.digest, BUILTIN_SCANNER) is None  # neither scanned nor marked failed
    assert leftover_scan_dirs(env) == []
    # The next worker picks the job up again and finishes it; the index job finishes with it.
    worker.stopping.clear()
    assert await anyio.to_thread.run_sync(worker.run_one)
    assert queue.get(children[second.digest])["state"] == "succeeded"
    assert queue.get(job_id)["state"] == "succeeded"
    assert scans.reports.get(second.digest, BUILTIN_SCANNER).status == "ok"


async def test_finding8_a_stop_while_syft_runs_kills_it_and_releases_the_job(manual, tmp_path):
    env = manual
    await env.project("team")
    digest = await push_built(env, "team/app", "1", java_app(tmp_path / "img", FIXED))
    worker, scans = env.services.worker, env.services.scans
    job_id = scans.request("team/app", digest, BUILTIN_SCANNER)
    started: list[Path] = []

    def stopping() -> bool:  # the worker is asked to stop once syft is running
        started.extend(scans_dir(env).glob(f"*/{syft_runner.SYFT_STARTED}"))
        return bool(started)

    scans.stopping = stopping
    assert await anyio.to_thread.run_sync(worker.run_one)
    assert started, "syft never started"
    job = env.services.jobs.get(job_id)
    assert (job["state"], job["attempts"]) == ("queued", 0)
    assert scans.reports.get(digest, BUILTIN_SCANNER) is None  # a stop is no failed verdict
    assert leftover_scan_dirs(env) == []
