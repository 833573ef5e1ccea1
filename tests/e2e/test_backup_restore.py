"""Backup under load against a real `dockyard serve` (issue 16, acceptance 5).

A pusher thread pushes images and an offline GC loop (`dockyard admin gc --grace-seconds 1`) runs
while `dockyard admin backup` copies; the backup is restored into a fresh directory and served by a
second `dockyard serve`; every tag that existed when the backup started pulls and verifies; `verify`
reports 0 problems, then exactly the one blob corrupted afterwards and the images that use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.functional.helpers import API_CLIENT
from tests.support.server import run_dockyard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _dockyard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dockyard", *args], capture_output=True, text=True, timeout=300)


def _image(seed: bytes) -> tuple[list[bytes], bytes]:
    layer = hashlib.sha256(seed).digest() * 2048  # 64 KiB, distinct per seed
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed.hex()}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer), "size": len(layer)}],
    }).encode()
    return [layer, config], manifest


def _push(client: httpx.Client, repo: str, tag: str, seed: bytes) -> str:
    """Push an image, again from the blobs if GC took one between upload and manifest (as clients do)."""
    blobs, manifest = _image(seed)
    for _ in range(5):
        for blob in blobs:
            r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": _digest(blob)}, content=blob)
            assert r.status_code == 201, r.text
        r = client.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        if r.status_code == 201:
            return _digest(manifest)
        assert r.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in r.text, r.text
    raise AssertionError(f"{repo}:{tag} never pushed")


def _pull(client: httpx.Client, repo: str, tag: str, digest: str) -> None:
    r = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and _digest(r.content) == digest, (repo, tag, r.status_code)
    doc = json.loads(r.content)
    for desc in (doc["config"], *doc["layers"]):
        blob = client.get(f"/v2/{repo}/blobs/{desc['digest']}")
        assert blob.status_code == 200 and _digest(blob.content) == desc["digest"], (repo, tag, desc["digest"])


def test_backup_under_load_restores_and_verifies(tmp_path: Path):
    data, dest, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    existing: dict[tuple[str, str], str] = {}
    with run_dockyard(data) as server, httpx.Client(base_url=server.url, headers=API_CLIENT, timeout=60) as client:
        base = _push(client, "base/app", "v1", b"base")
        existing |= {("base/app", "v1"): base, ("base/app", "stable"): _push(client, "base/app", "stable", b"base"),
                     ("mirror/app", "1.0"): _push(client, "mirror/app", "1.0", b"base")}
        for i in range(3):
            existing[("lib", f"t{i}")] = _push(client, "lib", f"t{i}", f"lib{i}".encode())

        stop = threading.Event()
        pushed: list[tuple[str, str]] = []
        failures: list[BaseException] = []

        def pusher() -> None:
            try:
                with httpx.Client(base_url=server.url, headers=API_CLIENT, timeout=60) as own:
                    n = 0
                    while not stop.is_set():
                        pushed.append((f"n{n}", _push(own, "load", f"n{n}", f"load{n}".encode())))
                        n += 1
            except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
                failures.append(exc)

        def collector() -> None:
            while not stop.is_set():
                gc = _dockyard("admin", "gc", "--data-dir", str(data), "--grace-seconds", "1", "--json")
                if gc.returncode != 0:
                    failures.append(AssertionError(gc.stderr))
                    return

        threads = [threading.Thread(target=pusher), threading.Thread(target=collector)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(pushed) < 2:  # the pusher is under way before the backup starts
            assert time.monotonic() < deadline and not failures, failures
            time.sleep(0.01)
        before = list(pushed)
        result = _dockyard("admin", "backup", str(dest), "--data-dir", str(data), "--json")
        deadline = time.monotonic() + 60
        while len(pushed) < len(before) + 2 and time.monotonic() < deadline and not failures:
            time.sleep(0.01)  # ...and still pushing after it
        stop.set()
        for t in threads:
            t.join(120)
        assert not failures, failures
        assert result.returncode == 0, result.stderr
        assert len(pushed) >= len(before) + 2
        existing |= {("load", tag): digest for tag, digest in before}

    report = json.loads(result.stdout)
    assert report["blobs"] >= 2 * (1 + 3 + len(before)) and report["counts"]["tags"] >= len(existing)
    done = _dockyard("admin", "restore", str(dest), str(restored))
    assert done.returncode == 0, done.stderr
    with run_dockyard(restored) as server, httpx.Client(base_url=server.url, headers=API_CLIENT, timeout=60) as client:
        for (repo, tag), digest in existing.items():
            _pull(client, repo, tag, digest)
        clean = _dockyard("admin", "verify", "--data-dir", str(restored), "--read-blobs", "--json")
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert json.loads(clean.stdout)["problems"] == []

        layer = _digest(_image(b"base")[0][0])
        hexpart = layer.split(":", 1)[1]
        [victim] = (restored / "storage" / "blobs" / "sha256" / hexpart[:2] / hexpart).iterdir()
        with open(victim, "r+b") as fh:
            fh.seek(100)
            fh.write(b"\0" * 16)
            fh.flush()
            os.fsync(fh.fileno())
        bad = _dockyard("admin", "verify", "--data-dir", str(restored), "--read-blobs", "--json")
        assert bad.returncode == 1, bad.stderr
        [problem] = json.loads(bad.stdout)["problems"]
        assert problem["digest"] == layer and problem["problem"] == "digest-mismatch"
        assert problem["images"] == ["base/app:stable", "base/app:v1", "mirror/app:1.0"]
