"""Disk full (issue 9 part 2): storage on a small tmpfs fills up in the middle of a push.

The push gets 507 STORAGE_FULL (OCI JSON), never a 201; nothing partial sits under a blob key;
pulls of images pushed before keep working; once space is freed the very same push succeeds.
Also the SQLite database itself on the full disk.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.faults import fill, small_tmpfs
from tests.support.invariants import assert_invariants

from .conftest import open_registry
from .helpers import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, assert_error, descriptor, dumps, pattern, sha256

MiB = 1024 * 1024


def big_image(seed: int) -> tuple[list[bytes], bytes]:
    config = dumps({"architecture": "amd64", "os": "linux", "seed": seed})
    layer = pattern(2 * MiB, seed=seed)
    manifest = dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config), "layers": [descriptor(OCI_LAYER, layer)],
    })
    return [config, layer], manifest


async def push(client: httpx.AsyncClient, repo: str, tag: str, blobs: list[bytes], manifest: bytes, mode: str) -> list[httpx.Response]:
    """Push with one upload style; returns every response (stops at the first failure)."""
    seen: list[httpx.Response] = []
    for data in blobs:
        digest = sha256(data)
        if mode == "single-post":
            r = await client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
            seen.append(r)
            if r.status_code != 201:
                return seen
            continue
        r = await client.post(f"/v2/{repo}/blobs/uploads/")
        seen.append(r)
        if r.status_code != 202:
            return seen
        location = r.headers["location"]
        if mode == "chunked":
            for start in range(0, len(data), 512 * 1024):
                chunk = data[start:start + 512 * 1024]
                r = await client.patch(location, content=chunk, headers={
                    "Content-Range": f"{start}-{start + len(chunk) - 1}", "Content-Type": "application/octet-stream"})
                seen.append(r)
                if r.status_code != 202:
                    return seen
                location = r.headers["location"]
            r = await client.put(location, params={"digest": digest})
        else:  # monolithic PUT
            r = await client.put(location, params={"digest": digest}, content=data)
        seen.append(r)
        if r.status_code != 201:
            return seen
    seen.append(await client.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}))
    return seen


async def assert_pulls(client: httpx.AsyncClient, repo: str, tag: str, manifest: bytes) -> None:
    r = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == manifest, (r.status_code, r.text[:300])
    doc = r.json()
    for desc in [doc["config"], *doc["layers"]]:
        b = await client.get(f"/v2/{repo}/blobs/{desc['digest']}")
        assert b.status_code == 200 and sha256(b.content) == desc["digest"], (desc, b.status_code)


def assert_failed_with_storage_full(responses: list[httpx.Response]) -> None:
    last = responses[-1]
    assert all(r.status_code != 201 for r in responses if "/manifests/" in str(r.request.url)), "manifest got a 201"
    assert_error(last, 507, "STORAGE_FULL")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("mode", ["monolithic", "chunked", "single-post"])
async def test_disk_full_mid_push_gets_507_and_the_same_push_succeeds_after_space_is_freed(
    backend, mode, tmp_path, database_url_for
):
    mnt = tmp_path / "small"
    with small_tmpfs(mnt, "8m"):
        storage_root = mnt / "storage"
        async with open_registry(tmp_path / "data", "filesystem", storage_root=storage_root,
                                 database_url=database_url_for(backend)) as reg:
            client, services = reg.client, reg.services
            old_digest, old_manifest = await reg.push_image("team/app", "old", seed=1, layers=2)
            blobs, manifest = big_image(seed=7)
            filler = fill(mnt, leave=MiB)  # the 2 MiB layer cannot fit: the disk fills mid-upload

            responses = await push(client, "team/app", "new", blobs, manifest, mode)
            assert_failed_with_storage_full(responses)
            r = await client.put("/v2/team/app/manifests/new", content=manifest, headers={"Content-Type": OCI_MANIFEST})
            assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")  # never a 201 for a push whose bytes are not stored
            assert (await client.head(f"/v2/team/app/blobs/{sha256(blobs[1])}")).status_code == 404
            # Nothing partial under a blob key; every row has all of its bytes.
            assert_invariants(services.db.engine, services.storage)
            await assert_pulls(client, "team/app", "old", old_manifest)  # existing images keep working

            filler.unlink()
            responses = await push(client, "team/app", "new", blobs, manifest, mode)
            assert responses[-1].status_code == 201, responses[-1].text
            await assert_pulls(client, "team/app", "new", manifest)
            await assert_pulls(client, "team/app", "old", old_manifest)
            assert_invariants(services.db.engine, services.storage)


async def test_disk_full_sqlite_database_on_the_full_disk_answers_507_and_recovers(tmp_path):
    """The SQLite database (and its WAL) lives on the disk that fills: writes fail with 507, reads go on."""
    mnt = tmp_path / "small"
    with small_tmpfs(mnt, "16m"):
        async with open_registry(mnt / "data", "filesystem") as reg:
            client, services = reg.client, reg.services
            _, old_manifest = await reg.push_image("team/app", "old", seed=1, layers=2)
            blobs, manifest = big_image(seed=9)
            filler = fill(mnt, leave=0)
            seen_full = []
            # Fill the database too: small pushes that need rows (upload sessions, tags) until it says so.
            for n in range(50):
                r = await client.post("/v2/team/app/blobs/uploads/")
                if r.status_code == 507:
                    seen_full.append(r)
                    break
                assert r.status_code == 202, r.text
                r = await client.put(r.headers["location"], params={"digest": sha256(b"x" * 4096 + bytes([n]))},
                                     content=b"x" * 4096 + bytes([n]))
                if r.status_code == 507:
                    seen_full.append(r)
                    break
                assert r.status_code == 201, r.text
            assert seen_full, "the full disk never refused a write"
            assert_error(seen_full[0], 507, "STORAGE_FULL")
            responses = await push(client, "team/app", "new", blobs, manifest, "monolithic")
            assert_failed_with_storage_full(responses)
            await assert_pulls(client, "team/app", "old", old_manifest)
            r = await client.get("/v2/team/app/tags/list")
            assert r.status_code == 200 and r.json()["tags"] == ["old"]

            filler.unlink()
            responses = await push(client, "team/app", "new", blobs, manifest, "monolithic")
            assert responses[-1].status_code == 201, responses[-1].text
            await assert_pulls(client, "team/app", "new", manifest)
            assert_invariants(services.db.engine, services.storage)
