"""GC torture: pushes, tag moves, manifest deletes and GC runs together against a real server.

Two server workers (each with its in-process job worker), `gc_grace_seconds` = 2, on SQLite and
PostgreSQL. Pushers use the usual client sequence (HEAD a shared base layer, skip its upload if
present, PUT the manifest); GC is triggered again and again through the API. Afterwards every
tag must pull with every blob digest-verified, and a final GC must leave no unreferenced blob
older than the grace period, and no stored object without a row (nor a row without its object).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from dockyard.metadata.db import Database
from dockyard.settings import Settings
from tests.support.server import run_dockyard
from tests.functional.helpers import API_CLIENT

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ADMIN = ("admin", "torture-admin-pw")
DURATION = 20.0
PUSHERS = 4
GRACE = 2
REPOS = ("team/alpha", "team/beta", "team/gamma")
TAGS = ("latest", "stable", "v1", "v2")
BASES = [hashlib.sha256(f"base-{n}".encode()).digest() * 64 for n in range(4)]  # 2 KiB shared layers


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"pushes": 0, "base_skipped": 0, "manifest_retries": 0, "deletes": 0, "gc_runs": 0, "gc_deleted": 0}
        self.errors: list[str] = []

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n


def transient(send, attempts: int = 5) -> httpx.Response:
    """Send, and send again after a 503 UNAVAILABLE with Retry-After, as a registry client does. A
    PostgreSQL transaction that fails transiently (e.g. a deadlock victim) is rolled back and answered
    that way; CI once saw it on a manifest delete racing GC and pushes. Tags must still never break."""
    for _ in range(attempts - 1):
        r = send()
        if r.status_code != 503 or "Retry-After" not in r.headers:
            return r
        time.sleep(min(float(r.headers["Retry-After"]), 2.0))
    return send()


def upload(client: httpx.Client, repo: str, data: bytes) -> None:
    r = transient(lambda: client.post(f"/v2/{repo}/blobs/uploads/"))
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    r = transient(lambda: client.put(location, params={"digest": sha(data)}, content=data))
    assert r.status_code == 201, r.text


def pusher(url: str, seed: int, stop: threading.Event, stats: Stats) -> None:
    rnd = random.Random(seed)
    pushed: list[tuple[str, str]] = []
    with httpx.Client(headers=API_CLIENT, base_url=url, timeout=60, trust_env=False) as client:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                repo = rnd.choice(REPOS)
                base = rnd.choice(BASES)
                own = f"pusher {seed} image {n}".encode() * 40
                config = json.dumps({"seed": seed, "n": n}).encode()
                body = json.dumps({
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(d), "size": len(d)} for d in (base, own)],
                }).encode()
                for attempt in range(5):
                    if client.head(f"/v2/{repo}/blobs/{sha(base)}").status_code == 200:
                        stats.add("base_skipped")
                    else:
                        upload(client, repo, base)
                    upload(client, repo, own)
                    upload(client, repo, config)
                    tag = rnd.choice(TAGS)
                    r = transient(lambda: client.put(f"/v2/{repo}/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST}))
                    if r.status_code == 201:
                        break
                    # The protocol's clean failure: a blob was collected meanwhile; push it again.
                    assert r.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in r.text, (r.status_code, r.text)
                    stats.add("manifest_retries")
                else:
                    raise AssertionError("manifest push failed 5 times")
                stats.add("pushes")
                pushed.append((repo, sha(body)))
                if len(pushed) > 3 and rnd.random() < 0.3:
                    old_repo, old = pushed.pop(rnd.randrange(len(pushed) - 1))
                    r = transient(lambda: client.delete(f"/v2/{old_repo}/manifests/{old}"))
                    assert r.status_code == 202, (r.status_code, r.text)  # its own manifest: nobody else deletes it
                    stats.add("deletes")
            except Exception as exc:  # recorded, asserted on after the run
                with stats.lock:
                    stats.errors.append(f"pusher {seed}: {exc!r}")
                return


def run_gc(client: httpx.Client, dry_run: bool = False) -> dict:
    r = client.post("/api/v1/system/gc", json={"dry_run": dry_run}, auth=ADMIN)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    for _ in range(1200):
        job = client.get(f"/api/v1/system/jobs/{job_id}", auth=ADMIN).json()
        if job["state"] in ("succeeded", "failed"):
            assert job["state"] == "succeeded", job
            return job["result"]
        time.sleep(0.05)
    raise AssertionError(f"gc job {job_id} did not finish")


def collector(url: str, stop: threading.Event, stats: Stats) -> None:
    with httpx.Client(headers=API_CLIENT, base_url=url, timeout=60, trust_env=False) as client:
        while not stop.is_set():
            try:
                result = run_gc(client)
            except Exception as exc:
                with stats.lock:
                    stats.errors.append(f"gc: {exc!r}")
                return
            stats.add("gc_runs")
            stats.add("gc_deleted", result["deleted"] + result["resumed"])
            time.sleep(0.1)


def verify_tags(client: httpx.Client) -> int:
    verified = 0
    for repo in REPOS:
        r = client.get(f"/v2/{repo}/tags/list")
        assert r.status_code == 200, r.text
        for tag in r.json()["tags"] or []:
            m = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert m.status_code == 200, (repo, tag, m.text)
            doc = m.json()
            for desc in [doc["config"], *doc["layers"]]:
                b = client.get(f"/v2/{repo}/blobs/{desc['digest']}")
                assert b.status_code == 200, (repo, tag, desc, b.status_code)
                assert sha(b.content) == desc["digest"], (repo, tag, desc)
                verified += 1
    return verified


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_gc_while_pushing_never_breaks_a_tag(backend, tmp_path: Path, database_url_for):
    data_dir = tmp_path / "data"
    database_url = database_url_for(backend)
    env = {"DOCKYARD_GC_GRACE_SECONDS": str(GRACE), "DOCKYARD_WORKERS": "2", "DOCKYARD_WORKER_POLL_SECONDS": "0.2"}
    with run_dockyard(data_dir, database_url=database_url, auth_mode="none", admin_password=ADMIN[1], extra_env=env) as server:
        url = server.url
        with httpx.Client(headers=API_CLIENT, base_url=url, timeout=60, trust_env=False) as client:
            assert client.post("/api/v1/projects", json={"name": "team"}, auth=ADMIN).status_code == 201
        stats = Stats()
        stop = threading.Event()
        threads = [threading.Thread(target=pusher, args=(url, seed, stop, stats)) for seed in range(PUSHERS)]
        threads.append(threading.Thread(target=collector, args=(url, stop, stats)))
        for t in threads:
            t.start()
        time.sleep(DURATION)  # the scenario: pushes, deletes and GC racing for DURATION seconds
        stop.set()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert stats.errors == []
        with httpx.Client(headers=API_CLIENT, base_url=url, timeout=60, trust_env=False) as client:
            verified = verify_tags(client)
            stopped_at = datetime.now(UTC)  # every write of the run is older than this (same machine clock)
            deadline = time.monotonic() + 60  # past the grace period: poll dry runs until gc's cutoff passes it
            while datetime.fromisoformat(cutoff := run_gc(client, dry_run=True)["cutoff"]) <= stopped_at:
                assert time.monotonic() < deadline, f"gc's cutoff {cutoff} never passed {stopped_at.isoformat()}"
                time.sleep(0.1)
            final = run_gc(client)
            assert verify_tags(client) == verified
        counts = stats.counts
        print(f"\n[{backend}] {counts} final_gc_deleted={final['deleted']} blobs_verified={verified}")
        assert counts["pushes"] >= 20 and counts["gc_runs"] >= 5 and counts["deletes"] >= 3
        assert counts["gc_deleted"] + final["deleted"] > 0  # GC really collected during the run

    settings = Settings(data_dir=data_dir, database_url=database_url)
    db = Database(settings.resolved_database_url)
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT storage_key, state, ref_count FROM blobs")).all()
            old_garbage = conn.execute(
                text("SELECT count(*) FROM blobs WHERE ref_count = 0 AND touched_at < :cutoff"),
                {"cutoff": final_cutoff(final, db.is_sqlite)},
            ).scalar_one()
            negative = conn.execute(text("SELECT count(*) FROM blobs WHERE ref_count < 0")).scalar_one()
    finally:
        db.dispose()
    assert old_garbage == 0 and negative == 0
    assert {r.state for r in rows} <= {"present"}
    stored = sorted(
        os.path.relpath(os.path.join(d, f), settings.resolved_storage_root).replace(os.sep, "/")
        for d, _, files in os.walk(settings.resolved_storage_root / "blobs")
        for f in files
    )
    assert stored == sorted(r.storage_key for r in rows)  # no orphaned object, no row without its object


def final_cutoff(result: dict, is_sqlite: bool):
    """The final run's cutoff, in the form each database compares with its stored times."""
    cutoff = datetime.fromisoformat(result["cutoff"])
    return cutoff.strftime("%Y-%m-%d %H:%M:%S.%f") if is_sqlite else cutoff
