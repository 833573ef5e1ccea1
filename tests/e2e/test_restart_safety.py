"""SIGKILL the server in the middle of a chunked upload, restart it, and resume.

Checks: the client resumes from the offset the server reports and succeeds; nothing committed
before the kill is lost; no object under blobs/ ever holds bytes that do not match its digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port, run_dockyard
from tests.functional.helpers import API_CLIENT

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_small_image(client: httpx.Client, repo: str, tag: str) -> str:
    layer = os.urandom(64 * 1024)
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    for blob in (layer, config):
        r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": _digest(blob)}, content=blob)
        assert r.status_code == 201, r.text
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer), "size": len(layer)}],
        }
    ).encode()
    r = client.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text
    return _digest(manifest)


def _assert_blob_keys_verified(storage_root: Path) -> int:
    """Every object under blobs/ must hash to the digest in its key: no partial object, ever."""
    count = 0
    for path in (storage_root / "blobs").rglob("*"):
        if path.is_file():
            algorithm, encoded = path.parts[-4], path.parts[-2]
            assert hashlib.new(algorithm, path.read_bytes()).hexdigest() == encoded, f"corrupt blob object {path}"
            count += 1
    return count


@pytest.mark.parametrize("kill_after_mib", [1, 3])
def test_sigkill_mid_chunk_then_resume(tmp_path, kill_after_mib):
    data_dir = tmp_path / "data"
    port = free_port()
    chunk1 = os.urandom(4 * MiB)
    chunk2 = os.urandom(6 * MiB)
    blob = chunk1 + chunk2
    storage_root = data_dir / "storage"

    with run_dockyard(data_dir, port=port) as server:
        client = httpx.Client(headers=API_CLIENT, base_url=server.url, timeout=30)
        committed_manifest = _push_small_image(client, "restart/app", "before-kill")
        r = client.post("/v2/restart/blob/blobs/uploads/")
        assert r.status_code == 202
        location = r.headers["Location"]
        upload_file = storage_root / "uploads" / r.headers["Docker-Upload-UUID"]
        r = client.patch(location, content=chunk1, headers={"Content-Range": f"0-{len(chunk1) - 1}"})
        assert r.status_code == 202 and r.headers["Range"] == f"0-{len(chunk1) - 1}"

        # Stream chunk 2 slowly; kill the server once part of it has reached the disk.
        release = threading.Event()

        def slow_body():
            sent = 0
            while sent < len(chunk2):
                piece = chunk2[sent : sent + 256 * 1024]
                sent += len(piece)
                yield piece
                if sent >= kill_after_mib * MiB + 256 * 1024:
                    release.wait(30)

        outcome: dict[str, object] = {}

        def send_chunk2():
            try:
                outcome["response"] = httpx.patch(server.url + location, content=slow_body(), timeout=30)
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        sender = threading.Thread(target=send_chunk2)
        sender.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if upload_file.exists() and upload_file.stat().st_size >= len(chunk1) + kill_after_mib * MiB:
                break
            time.sleep(0.01)
        else:
            pytest.fail("server never wrote part of chunk 2")
        server.kill()
        release.set()
        sender.join(30)
        assert "error" in outcome or outcome["response"].status_code >= 400, "the interrupted PATCH cannot have succeeded"
        # Bytes past the committed offset may sit in the upload file; they must never reach a blob key.
        assert upload_file.stat().st_size > len(chunk1)
        client.close()

    with run_dockyard(data_dir, port=port) as server:
        client = httpx.Client(headers=API_CLIENT, base_url=server.url, timeout=30)
        # Nothing committed before the kill is lost.
        r = client.get("/v2/restart/app/manifests/before-kill", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == committed_manifest
        # The client asks where to resume, as docker/containerd do after an error.
        r = client.get(location)
        assert r.status_code == 204
        resume_at = int(r.headers["Range"].split("-")[1]) + 1
        assert resume_at == len(chunk1)
        rest = blob[resume_at:]
        r = client.patch(location, content=rest, headers={"Content-Range": f"{resume_at}-{len(blob) - 1}"})
        assert r.status_code == 202, r.text
        r = client.put(location, params={"digest": _digest(blob)})
        assert r.status_code == 201, r.text
        r = client.get(f"/v2/restart/blob/blobs/{_digest(blob)}")
        assert r.status_code == 200 and _digest(r.content) == _digest(blob)
        assert _assert_blob_keys_verified(storage_root) == 3
        assert not upload_file.exists()
        client.close()


def test_sigkill_between_uploads_keeps_finished_blobs(tmp_path):
    """Kill right after a burst of completed pushes: every acknowledged blob survives intact."""
    data_dir = tmp_path / "data"
    port = free_port()
    pushed: list[tuple[str, str]] = []
    with run_dockyard(data_dir, port=port) as server:
        client = httpx.Client(headers=API_CLIENT, base_url=server.url, timeout=30)
        for i in range(10):
            tag = f"t{i}"
            pushed.append((tag, _push_small_image(client, "burst/app", tag)))
        server.kill()
        client.close()
    with run_dockyard(data_dir, port=port) as server:
        client = httpx.Client(headers=API_CLIENT, base_url=server.url, timeout=30)
        for tag, digest in pushed:
            r = client.get(f"/v2/burst/app/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
            for desc in [json.loads(r.content)["config"], *json.loads(r.content)["layers"]]:
                b = client.get(f"/v2/burst/app/blobs/{desc['digest']}")
                assert b.status_code == 200 and _digest(b.content) == desc["digest"]
        _assert_blob_keys_verified(data_dir / "storage")
        client.close()
