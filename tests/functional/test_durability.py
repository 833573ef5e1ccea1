"""Uploads survive restarts and crashes; stale uploads are purged."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dockyard.metadata.db import utcnow

from .helpers import assert_error, pattern, sha256

REPO = "durable/app"
DATA = pattern(30_000, seed=21)
DIGEST = sha256(DATA)


def _upload_id(location: str) -> str:
    return location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[1]


async def _patch(registry, location: str, data: bytes, start: int) -> str:
    r = await registry.client.patch(location, content=data, headers={"Content-Range": f"{start}-{start + len(data) - 1}"})
    assert r.status_code == 202, r.text
    assert r.headers["range"] == f"0-{start + len(data) - 1}"
    return r.headers["location"]


async def test_upload_survives_restart(registry_factory):
    async with registry_factory("filesystem") as first:
        location = await first.start_upload(REPO)
        location = await _patch(first, location, DATA[:12_000], 0)
    async with registry_factory("filesystem") as second:
        s = await second.client.get(location)
        assert s.status_code == 204
        assert s.headers["range"] == "0-11999"
        location = await _patch(second, location, DATA[12_000:25_000], 12_000)
    async with registry_factory("filesystem") as third:
        r = await third.client.put(
            location, params={"digest": DIGEST}, content=DATA[25_000:], headers={"Content-Range": f"25000-{len(DATA) - 1}"}
        )
        assert r.status_code == 201, r.text
        r = await third.client.get(f"/v2/{REPO}/blobs/{DIGEST}")
        assert r.status_code == 200 and r.content == DATA
        assert third.upload_rows() == 0 and third.upload_objects() == []


async def test_streamed_upload_survives_restart(registry_factory):
    async with registry_factory("filesystem") as first:
        location = await first.start_upload(REPO)
        r = await first.client.patch(location, content=DATA[:7000])
        assert r.status_code == 202
        location = r.headers["location"]
    async with registry_factory("filesystem") as second:
        r = await second.client.patch(location, content=DATA[7000:])
        assert r.status_code == 202
        assert r.headers["range"] == f"0-{len(DATA) - 1}"
        r = await second.client.put(r.headers["location"], params={"digest": DIGEST})
        assert r.status_code == 201, r.text
        r = await second.client.get(f"/v2/{REPO}/blobs/{DIGEST}")
        assert r.content == DATA


async def test_two_live_instances_share_an_upload(registry_factory):
    """Two app instances on one data dir (two workers): alternate chunks between them."""
    async with registry_factory("filesystem") as a, registry_factory("filesystem") as b:
        location = await a.start_upload(REPO)
        offset = 0
        for i, size in enumerate([5000, 5000, 5000, 5000, 10_000]):
            node = a if i % 2 else b
            location = await _patch(node, location, DATA[offset : offset + size], offset)
            offset += size
        r = await a.client.put(location, params={"digest": DIGEST})
        assert r.status_code == 201, r.text
        for node in (a, b):
            r = await node.client.get(f"/v2/{REPO}/blobs/{DIGEST}")
            assert r.content == DATA


def _append_garbage(registry, location: str, garbage: bytes) -> None:
    path = registry.storage_root / "uploads" / _upload_id(location)
    assert path.exists()
    with open(path, "ab") as fh:
        fh.write(garbage)


async def test_crash_leftover_bytes_are_dropped_on_next_chunk(fs_registry):
    reg = fs_registry
    location = await reg.start_upload(REPO)
    location = await _patch(reg, location, DATA[:10_000], 0)
    _append_garbage(reg, location, b"\x00GARBAGE FROM A CRASHED WRITE" * 100)
    s = await reg.client.get(location)
    assert s.headers["range"] == "0-9999"
    location = await _patch(reg, location, DATA[10_000:], 10_000)
    r = await reg.client.put(location, params={"digest": DIGEST})
    assert r.status_code == 201, r.text
    r = await reg.client.get(f"/v2/{REPO}/blobs/{DIGEST}")
    assert r.content == DATA
    r = await reg.client.get(f"/v2/{REPO}/blobs/{DIGEST}", headers={"Range": "bytes=-100"})
    assert r.content == DATA[-100:]


async def test_crash_leftover_bytes_are_dropped_on_streamed_chunk(fs_registry):
    reg = fs_registry
    location = await reg.start_upload(REPO)
    location = await _patch(reg, location, DATA[:10_000], 0)
    _append_garbage(reg, location, b"junk" * 1000)
    r = await reg.client.patch(location, content=DATA[10_000:])
    assert r.status_code == 202
    assert r.headers["range"] == f"0-{len(DATA) - 1}"
    r = await reg.client.put(location, params={"digest": DIGEST})
    assert r.status_code == 201, r.text
    r = await reg.client.get(f"/v2/{REPO}/blobs/{DIGEST}")
    assert r.content == DATA


async def test_crash_leftover_bytes_are_dropped_on_finish(fs_registry):
    reg = fs_registry
    location = await reg.start_upload(REPO)
    location = await _patch(reg, location, DATA, 0)
    _append_garbage(reg, location, b"tail garbage")
    r = await reg.client.put(location, params={"digest": DIGEST})
    assert r.status_code == 201, r.text
    r = await reg.client.get(f"/v2/{REPO}/blobs/{DIGEST}")
    assert r.content == DATA
    r = await reg.client.head(f"/v2/{REPO}/blobs/{DIGEST}")
    assert r.headers["content-length"] == str(len(DATA))


async def test_crash_leftover_then_restart(registry_factory):
    async with registry_factory("filesystem") as first:
        location = await first.start_upload(REPO)
        location = await _patch(first, location, DATA[:4096], 0)
        _append_garbage(first, location, b"Z" * 5000)
    async with registry_factory("filesystem") as second:
        location = await _patch(second, location, DATA[4096:], 4096)
        r = await second.client.put(location, params={"digest": DIGEST})
        assert r.status_code == 201, r.text
        r = await second.client.get(f"/v2/{REPO}/blobs/{DIGEST}")
        assert r.content == DATA


# -- stale upload purge -------------------------------------------------------------------------


def a_second_later(registry) -> None:
    """Move the purge's clock on, so that every upload so far has been idle for a second."""
    moment = utcnow() + timedelta(seconds=1)
    registry.services.uploads.clock = lambda: moment


async def test_purge_stale_uploads(registry):
    loc_data = await registry.start_upload(REPO)
    await _patch(registry, loc_data, DATA[:1000], 0)
    loc_empty = await registry.start_upload(REPO)
    assert registry.upload_rows() == 2
    assert len(registry.upload_objects()) == 1  # the empty session has no bytes yet
    a_second_later(registry)
    # a generous max age keeps fresh uploads
    kept = await registry.services.db.run(registry.services.uploads.purge_stale, 3600)
    assert kept == 0
    assert registry.upload_rows() == 2
    purged = await registry.services.db.run(registry.services.uploads.purge_stale, 0)
    assert purged == 2
    assert registry.upload_rows() == 0
    assert registry.upload_objects() == []
    for loc in (loc_data, loc_empty):
        r = await registry.client.get(loc)
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
        r = await registry.client.patch(loc, content=b"more", headers={"Content-Range": "1000-1003"})
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    assert registry.blob_objects() == []
    # purging again is a no-op
    assert await registry.services.db.run(registry.services.uploads.purge_stale, 0) == 0


async def test_purge_keeps_published_blobs(registry):
    digest = await registry.push_blob(REPO, DATA)
    await registry.start_upload(REPO)
    a_second_later(registry)
    assert registry.services.uploads.purge_stale(0) == 1
    r = await registry.client.get(f"/v2/{REPO}/blobs/{digest}")
    assert r.status_code == 200 and r.content == DATA
    assert len(registry.blob_objects()) == 1


@pytest.mark.parametrize("driver", ["filesystem"])
async def test_purged_upload_file_removed_from_disk(registry_factory, driver):
    async with registry_factory(driver) as reg:
        location = await reg.start_upload(REPO)
        await _patch(reg, location, DATA[:2000], 0)
        path = reg.storage_root / "uploads" / _upload_id(location)
        assert path.exists() and path.stat().st_size == 2000
        a_second_later(reg)
        assert reg.services.uploads.purge_stale(0) == 1
        assert not path.exists()
