"""Crash at any point (issue 9 part 2): SIGKILL a real `dockyard serve` at random moments while
manifest PUTs, retention runs and GC run, over many iterations, on SQLite and PostgreSQL.

Each iteration starts the server on the same data, lets pushers (fresh images, moving tags),
retention runs (keep the newest 3 in `crash/trim`) and GC runs (grace 1 s) go for a seeded random
time, then kills the whole process group. With the server dead, the invariants of design.md
must hold on what the crash left (no blob row without its bytes, ref_counts exact, no orphan
that no intent records). After the restart every tag acknowledged with a 201 in `crash/keep`
(where nothing deletes) pulls with the acknowledged digest, and every tag that exists pulls and
verifies. At the end GC runs once more past the grace period, and the strict check (no intent
left, no orphan at all) proves it reclaimed whatever the crashes orphaned.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from dockyard.metadata.db import Database
from dockyard.settings import Settings
from dockyard.storage.filesystem import FilesystemDriver
from tests.support.invariants import assert_invariants
from tests.support.server import run_dockyard

SEED = 20261207
ITERATIONS = 12
ADMIN = ("admin", "crash-admin-pw-1")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PUSHERS = 3
RETENTION_POLICY = {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                                                                "countNumber": 3}, "action": {"type": "expire"}}]}
ENV = {"DOCKYARD_GC_GRACE_SECONDS": "1", "DOCKYARD_WORKERS": "2", "DOCKYARD_WORKER_POLL_SECONDS": "0.1",
       "DOCKYARD_JOB_LEASE_SECONDS": "5"}
BASE = hashlib.sha256(b"shared base").digest() * 256  # 8 KiB layer shared by every image


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(label: str) -> tuple[list[bytes], bytes]:
    config = json.dumps({"label": label}).encode()
    own = label.encode() * 200
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(d), "size": len(d)} for d in (BASE, own)],
    }).encode()
    return [config, BASE, own], manifest


class Activity:
    def __init__(self, url: str, iteration: int, acked: dict):
        self.url, self.iteration, self.acked = url, iteration, acked
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"pushes": 0, "retention": 0, "gc": 0}

    def pusher(self, n: int) -> None:
        rnd = random.Random(SEED * 100 + self.iteration * 10 + n)
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False) as client:
            k = 0
            while not self.stop.is_set():
                k += 1
                label = f"it{self.iteration}-p{n}-{k}"
                blobs, manifest = image(label)
                repo, tag = ("crash/keep", label) if rnd.random() < 0.5 else ("crash/trim", f"t{rnd.randrange(6)}")
                try:
                    for data in blobs:
                        if client.head(f"/v2/{repo}/blobs/{sha(data)}").status_code != 200:
                            client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha(data)}, content=data)
                    r = client.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
                except httpx.HTTPError:
                    return  # the server was killed
                if r.status_code == 201 and repo == "crash/keep":
                    with self.lock:
                        self.acked[tag] = sha(manifest)
                        self.counts["pushes"] += 1

    def jobs(self, policy_id: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False, auth=ADMIN) as client:
            while not self.stop.is_set():
                try:
                    client.post(f"/api/v1/projects/crash/retention-policies/{policy_id}/run")
                    client.post("/api/v1/system/gc", json={"dry_run": False})
                except httpx.HTTPError:
                    return
                with self.lock:
                    self.counts["retention"] += 1
                    self.counts["gc"] += 1
                time.sleep(0.05)


def verify(url: str, acked: dict[str, str]) -> int:
    verified = 0
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        for repo in ("crash/keep", "crash/trim"):
            r = client.get(f"/v2/{repo}/tags/list")
            if r.status_code == 404:
                assert not acked or repo != "crash/keep", r.text
                continue
            assert r.status_code == 200, r.text
            listed = set(r.json()["tags"] or [])
            if repo == "crash/keep":
                missing = set(acked) - listed
                assert not missing, f"acknowledged tags lost by a crash: {sorted(missing)[:10]}"
            for tag in sorted(listed):
                m = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
                assert m.status_code == 200, (repo, tag, m.status_code, m.text)
                assert sha(m.content) == m.headers["docker-content-digest"]
                if repo == "crash/keep" and tag in acked:
                    assert sha(m.content) == acked[tag], (tag, "points at another manifest than acknowledged")
                doc = m.json()
                for desc in [doc["config"], *doc["layers"]]:
                    b = client.get(f"/v2/{repo}/blobs/{desc['digest']}")
                    assert b.status_code == 200 and sha(b.content) == desc["digest"], (repo, tag, desc, b.status_code)
                    verified += 1
    return verified


def check_dead(settings: Settings, **kwargs) -> None:
    db = Database(settings.resolved_database_url)
    try:
        assert_invariants(db.engine, FilesystemDriver(settings.resolved_storage_root), **kwargs)
    finally:
        db.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_crash_sigkill_during_manifest_put_retention_and_gc_loses_nothing(backend, tmp_path: Path, database_url_for):
    data_dir = tmp_path / "data"
    database_url = database_url_for(backend)
    settings = Settings(data_dir=data_dir, database_url=database_url)
    rnd = random.Random(SEED)
    acked: dict[str, str] = {}
    totals = {"pushes": 0, "retention": 0, "gc": 0, "verified_blobs": 0}
    policy_id = None
    run = lambda: run_dockyard(data_dir, database_url=database_url, admin_password=ADMIN[1], extra_env=ENV)  # noqa: E731
    for iteration in range(ITERATIONS):
        with run() as server:
            if policy_id is None:
                with httpx.Client(base_url=server.url, timeout=30, trust_env=False, auth=ADMIN) as client:
                    assert client.post("/api/v1/projects", json={"name": "crash"}).status_code == 201
                    r = client.post("/api/v1/projects/crash/retention-policies", json={
                        "name": "trim", "repository_pattern": "trim", "format": "ecr", "document": RETENTION_POLICY})
                    assert r.status_code == 201, r.text
                    policy_id = r.json()["id"]
            else:
                totals["verified_blobs"] += verify(server.url, acked)  # after the previous crash
            activity = Activity(server.url, iteration, acked)
            threads = [threading.Thread(target=activity.pusher, args=(n,)) for n in range(PUSHERS)]
            threads.append(threading.Thread(target=activity.jobs, args=(policy_id,)))
            for t in threads:
                t.start()
            time.sleep(rnd.uniform(0.3, 2.0))  # the scenario: a crash at a random moment, not synchronisation
            server.kill()
            activity.stop.set()
            for t in threads:
                t.join(30)
            assert not any(t.is_alive() for t in threads)
            for key, value in activity.counts.items():
                totals[key] += value
        check_dead(settings)  # what the crash left behind, before anything repairs it
    crashed_at = datetime.now(UTC)  # every crash leftover is older than this (same machine clock)
    with run() as server:
        totals["verified_blobs"] += verify(server.url, acked)
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False, auth=ADMIN) as client:
            # Past the grace period, crash leftovers are garbage: poll dry runs until gc's cutoff passes the crash.
            deadline = time.monotonic() + 60
            while datetime.fromisoformat(cutoff := run_gc(client, dry_run=True)["cutoff"]) <= crashed_at:
                assert time.monotonic() < deadline, f"gc's cutoff {cutoff} never passed {crashed_at.isoformat()}"
                time.sleep(0.1)
            result = run_gc(client)
        totals["verified_blobs"] += verify(server.url, acked)
    print(f"\n[{backend}] {totals} acked_keep_tags={len(acked)} final_gc={result}")
    assert totals["pushes"] >= 20 and totals["gc"] >= 10 and totals["retention"] >= 10
    check_dead(settings, allow_intents=False)  # GC reclaimed every orphan a crash left
    db = Database(settings.resolved_database_url)
    try:
        with db.engine.connect() as conn:
            from sqlalchemy import text

            assert conn.execute(text("SELECT count(*) FROM storage_intents")).scalar_one() == 0
    finally:
        db.dispose()


def run_gc(client: httpx.Client, dry_run: bool = False) -> dict:
    r = client.post("/api/v1/system/gc", json={"dry_run": dry_run})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    for _ in range(1200):
        job = client.get(f"/api/v1/system/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed"):
            assert job["state"] == "succeeded", job
            return job["result"]
        time.sleep(0.05)
    raise AssertionError(f"gc job {job_id} did not finish")
