"""Crash at exact points (issue 9 part 2), in-process: the process "dies" (a BaseException that
nothing catches, so every open transaction rolls back, as with SIGKILL) right after a storage
write and before the commit that makes a row own it. The random-SIGKILL test
(tests/e2e/test_faults_crash.py) rarely lands in these windows; these tests land there every time.

After each crash: the invariants hold with the storage intent accounting for the orphan; GC past
the grace period reclaims it (without listing storage), and the strict check finds no orphan.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from dockyard.metadata.db import utcnow
from dockyard.storage.paths import upload_key
from tests.support.invariants import assert_invariants, check_invariants

from .conftest import open_registry
from .helpers import pattern, sha256


class Crash(BaseException):
    """The process dies here: nothing handles it, every open transaction rolls back."""


def crash_after(obj, method: str):
    original = getattr(obj, method)

    def wrapper(*args, **kwargs):
        original(*args, **kwargs)
        raise Crash(method)

    setattr(obj, method, wrapper)
    return lambda: setattr(obj, method, original)


def crash_before(obj, method: str):
    original = getattr(obj, method)

    def wrapper(*args, **kwargs):
        raise Crash(method)

    setattr(obj, method, wrapper)
    return lambda: setattr(obj, method, original)


def gc_past_grace(services) -> dict:
    gc = services.gc
    gc.clock = lambda: utcnow() + timedelta(seconds=gc.grace_seconds + 5)
    try:
        return gc.run()
    finally:
        gc.clock = utcnow


def intents(reg) -> int:
    return reg.count("storage_intents")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_crash_between_blob_move_and_commit_leaves_an_intent_that_gc_reclaims(backend, tmp_path, database_url_for):
    async with open_registry(tmp_path / "data", "filesystem", database_url=database_url_for(backend)) as reg:
        services = reg.services
        data = pattern(5000, seed=3)
        digest = sha256(data)
        staging = upload_key("crash-test")
        services.storage.put(staging, data)
        restore = crash_after(services.storage, "move")
        with pytest.raises(Crash):
            services.blobs.publish("team/app", digest, staging, len(data))
        restore()
        # The bytes reached a blob key, the row never committed: an orphan, recorded by its intent.
        assert reg.count("blobs") == 0 and intents(reg) == 1
        assert [k for k in services.storage.list("blobs/")], "the crash left the moved object behind"
        assert_invariants(services.db.engine, services.storage)  # accounted for by the intent
        assert any("orphaned object" in p for p in check_invariants(services.db.engine, services.storage, allow_intents=False))
        # A GC inside the grace period leaves it alone (a publisher could still be using the intent).
        assert services.gc.run()["orphans_reclaimed"] == 0 and intents(reg) == 1
        result = gc_past_grace(services)
        assert result["orphans_reclaimed"] == 1 and intents(reg) == 0
        assert list(services.storage.list("blobs/")) == []
        assert_invariants(services.db.engine, services.storage, allow_intents=False)
        # The same blob publishes fine afterwards, and pulls.
        assert (await reg.push_blob("team/app", data)) == digest
        r = await reg.client.get(f"/v2/team/app/blobs/{digest}")
        assert r.status_code == 200 and r.content == data
        assert_invariants(services.db.engine, services.storage, allow_intents=False)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_crash_while_reviving_a_marked_blob_leaves_nothing_unowned_after_gc(backend, tmp_path, database_url_for):
    async with open_registry(tmp_path / "data", "filesystem", database_url=database_url_for(backend)) as reg:
        services = reg.services
        data = pattern(3000, seed=4)
        digest = await reg.push_blob("team/app", data)
        await reg.client.delete(f"/v2/team/app/blobs/{digest}")
        blob_id = reg.scalar("SELECT id FROM blobs WHERE digest = :d", d=digest)
        assert services.gc._mark([blob_id], utcnow() + timedelta(days=30)) == [blob_id]  # GC marked it: `deleting`
        staging = upload_key("crash-revive")
        services.storage.put(staging, data)
        restore = crash_after(services.storage, "move")
        with pytest.raises(Crash):
            services.blobs.publish("team/app", digest, staging, len(data))  # revive onto generation 2
        restore()
        assert reg.sql("SELECT state, generation FROM blobs WHERE digest = :d", d=digest) == [("deleting", 1)]
        assert_invariants(services.db.engine, services.storage)
        result = gc_past_grace(services)
        assert result["orphans_reclaimed"] == 1 and result["resumed"] == 1
        assert reg.count("blobs") == 0 and list(services.storage.list("blobs/")) == []
        assert_invariants(services.db.engine, services.storage, allow_intents=False)
        assert (await reg.push_blob("team/app", data)) == digest


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_crash_in_gc_sweep_after_deleting_bytes_is_finished_by_the_next_run(backend, tmp_path, database_url_for):
    async with open_registry(tmp_path / "data", "filesystem", database_url=database_url_for(backend)) as reg:
        services = reg.services
        kept, _ = await reg.push_image("team/app", "v1", seed=1)
        garbage = await reg.push_blob("team/app", pattern(2000, seed=9))
        await reg.client.delete(f"/v2/team/app/blobs/{garbage}")
        restore = crash_after(services.storage, "delete")
        with pytest.raises(Crash):
            gc_past_grace(services)
        restore()
        # The row is marked `deleting` (not `present`) and its bytes are gone: nobody can reach it.
        assert reg.sql("SELECT state FROM blobs WHERE digest = :d", d=garbage) == [("deleting",)]
        assert_invariants(services.db.engine, services.storage)
        result = gc_past_grace(services)
        assert result["resumed"] == 1 and reg.count("blobs", "digest = :d", d=garbage) == 0
        r = await reg.client.get("/v2/team/app/manifests/v1")
        assert r.status_code == 200 and sha256(r.content) == kept
        assert_invariants(services.db.engine, services.storage, allow_intents=False)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_crash_while_cancelling_an_upload_leaves_no_unowned_bytes(backend, tmp_path, database_url_for):
    async with open_registry(tmp_path / "data", "filesystem", database_url=database_url_for(backend)) as reg:
        services = reg.services
        location = await reg.start_upload("team/app")
        r = await reg.client.patch(location, content=b"x" * 10000, headers={"Content-Range": "0-9999"})
        assert r.status_code == 202, r.text
        upload = services.uploads.get("team/app", location.rsplit("/", 1)[1])
        restore = crash_before(services.storage, "delete")
        with pytest.raises(Crash):
            services.uploads.cancel(upload)  # dies between forgetting the row and deleting the bytes
        restore()
        # The bytes are deleted inside the row's transaction: the row survives with its bytes, so
        # nothing is left that no row owns (before, the row was gone and the bytes stayed forever).
        assert reg.upload_rows() == 1 and len(reg.upload_objects()) == 1
        assert_invariants(services.db.engine, services.storage, allow_intents=False)
        assert services.uploads.purge_stale(-1) == 1 and reg.upload_rows() == 0 and reg.upload_objects() == []
