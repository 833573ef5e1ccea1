"""Backup under load, restore into a fresh directory, verify and repair (issue 16, acceptance 5)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from dockyard.cli import app as cli
from dockyard.domain import backup_leases
from dockyard.jobs.gc import GarbageCollector
from dockyard.metadata.backup_tables import backup_leases as backup_leases_table
from dockyard.metadata.db import utcnow

from .conftest import open_registry
from .helpers import OCI_MANIFEST, assert_error, dumps, pattern, sha256

runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(cli, list(args))


async def _pull_and_check(reg, repo: str, tag: str, expected_digest: str) -> None:
    r = await reg.client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, (repo, tag, r.text)
    assert sha256(r.content) == expected_digest
    doc = json.loads(r.content)
    for desc in [doc["config"], *doc["layers"]]:
        blob = await reg.client.get(f"/v2/{repo}/blobs/{desc['digest']}")
        assert blob.status_code == 200, (repo, tag, desc["digest"])
        assert sha256(blob.content) == desc["digest"] and len(blob.content) == desc["size"]


def _blob_file(data_dir: Path, digest: str) -> Path:
    hexpart = digest.split(":", 1)[1]
    [path] = (data_dir / "storage" / "blobs" / "sha256" / hexpart[:2] / hexpart).iterdir()
    return path


async def test_backup_while_pushing_then_restore_verify_and_repair(tmp_path: Path):
    data, dest, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    existing: dict[tuple[str, str], str] = {}
    async with open_registry(data, "filesystem") as reg:
        shared_digest, shared_body = await reg.push_image("app", "v1", seed=1, layers=2)
        await reg.push_manifest("app", "latest", shared_body, OCI_MANIFEST)
        await reg.push_image("other", "1.0", seed=1, layers=2)  # the same blobs, linked into a second repository
        existing |= {("app", "v1"): shared_digest, ("app", "latest"): shared_digest, ("other", "1.0"): shared_digest}
        for i in range(2, 6):
            digest, _ = await reg.push_image("lib", f"t{i}", seed=i, layers=2)
            existing[("lib", f"t{i}")] = digest

        pushed_during: list[str] = []
        stop = asyncio.Event()
        goal = [0]  # the pusher keeps going after stop until it has pushed this many

        async def pusher() -> None:
            n = 100
            while not stop.is_set() or len(pushed_during) < goal[0]:
                await reg.push_image("load", f"n{n}", seed=n, layers=3)
                pushed_during.append(f"n{n}")
                n += 1

        task = asyncio.create_task(pusher())
        deadline = asyncio.get_running_loop().time() + 30
        while not pushed_during:  # the pusher is running before the backup starts
            assert asyncio.get_running_loop().time() < deadline and not task.done()
            await asyncio.sleep(0.01)
        started_with = len(pushed_during)
        result = await asyncio.to_thread(_cli, "admin", "backup", str(dest), "--data-dir", str(data), "--json")
        goal[0] = started_with + 2  # pushes go on after the backup too
        stop.set()
        await asyncio.wait_for(task, 30)
        assert result.exit_code == 0, result.output
        assert len(pushed_during) >= started_with + 2
        for tag in pushed_during[:started_with]:  # images tagged before the backup started are in it
            existing[("load", tag)] = sha256((await reg.client.get(f"/v2/load/manifests/{tag}",
                                                                    headers={"Accept": OCI_MANIFEST})).content)
        # The lease is gone once the backup ends.
        assert reg.count("backup_leases") == 0

    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["format"] == "dockyard-backup" and manifest["version"] == 1
    assert manifest["counts"]["blobs"] == len(manifest["blobs"]) >= 3 + 4 * 3
    assert manifest["files"]["dockyard.db"] == "sha256:" + hashlib.sha256((dest / "dockyard.db").read_bytes()).hexdigest()
    assert "secrets/kek" in manifest["files"]

    # A restore refuses a data directory that is not empty.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    refused = _cli("admin", "restore", str(dest), str(tmp_path / "busy"))
    assert refused.exit_code == 1 and "not empty" in refused.output

    done = _cli("admin", "restore", str(dest), str(restored))
    assert done.exit_code == 0, done.output
    async with open_registry(restored, "filesystem") as reg:
        for (repo, tag), digest in existing.items():
            await _pull_and_check(reg, repo, tag, digest)

    ok = _cli("admin", "verify", "--data-dir", str(restored), "--read-blobs", "--json")
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert report["problems"] == [] and report["checked"] >= 3 + 4 * 3

    # Corrupt one layer (same size): a stat-only verify cannot see it, --read-blobs names it and its images.
    layer = json.loads(shared_body)["layers"][1]["digest"]
    victim = _blob_file(restored, layer)
    raw = bytearray(victim.read_bytes())
    raw[0] ^= 0xFF
    victim.write_bytes(bytes(raw))
    assert _cli("admin", "verify", "--data-dir", str(restored)).exit_code == 0
    bad = _cli("admin", "verify", "--data-dir", str(restored), "--read-blobs", "--rate", "50", "--json")
    assert bad.exit_code == 1
    [problem] = json.loads(bad.stdout)["problems"]
    assert problem["digest"] == layer and problem["problem"] == "digest-mismatch"
    assert problem["images"] == ["app:latest", "app:v1", "other:1.0"]
    human = _cli("admin", "verify", "--data-dir", str(restored), "--read-blobs")
    assert "blobs checked, 1 problem\n" in human.output and layer in human.output and "other:1.0" in human.output

    # --repair --from the backup copies the good bytes back; verify is clean again.
    fixed = _cli("admin", "verify", "--data-dir", str(restored), "--read-blobs", "--repair", "--from", str(dest), "--json")
    assert json.loads(fixed.stdout)["problems"][0]["repaired"] == "restored"
    assert _cli("admin", "verify", "--data-dir", str(restored), "--read-blobs").exit_code == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_repair_without_a_backup_quarantines_a_damaged_blob(tmp_path: Path, backend: str, database_url_for):
    data, url = tmp_path / "data", database_url_for(backend)
    db_args = ["--database-url", url] if url else []
    async with open_registry(data, "filesystem", database_url=url) as reg:
        _, body = await reg.push_image("app", "v1", seed=7)
    layer = json.loads(body)["layers"][0]["digest"]
    victim = _blob_file(data, layer)
    victim.write_bytes(b"x" * victim.stat().st_size)
    fixed = _cli("admin", "verify", "--data-dir", str(data), *db_args, "--read-blobs", "--repair", "--json")
    [problem] = json.loads(fixed.stdout)["problems"]
    assert problem["repaired"] == "quarantined" and problem["images"] == ["app:v1"]
    assert not victim.exists()
    assert (data / "storage" / "quarantine" / victim.relative_to(data / "storage")).read_bytes() == b"x" * 100
    again = _cli("admin", "verify", "--data-dir", str(data), *db_args, "--json")
    [problem] = json.loads(again.stdout)["problems"]
    assert again.exit_code == 1 and problem["problem"] == "quarantined" and "quarantine/blobs/" in problem["detail"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_quarantined_blob_is_absent_until_pushed_again(tmp_path: Path, backend: str, database_url_for):
    """Quarantine takes the blob out of service: HEAD 404 makes a client upload it again, which heals it."""
    data, url = tmp_path / "data", database_url_for(backend)
    db_args = ["--database-url", url] if url else []
    async with open_registry(data, "filesystem", database_url=url) as reg:
        image, body = await reg.push_image("app", "v1", seed=7)
    layer = json.loads(body)["layers"][0]["digest"]
    victim = _blob_file(data, layer)
    victim.write_bytes(b"x" * victim.stat().st_size)
    fixed = _cli("admin", "verify", "--data-dir", str(data), *db_args, "--read-blobs", "--repair", "--json")
    assert json.loads(fixed.stdout)["problems"][0]["repaired"] == "quarantined"
    async with open_registry(data, "filesystem", database_url=url) as reg:
        assert (await reg.client.head(f"/v2/app/blobs/{layer}")).status_code == 404
        assert_error(await reg.client.get(f"/v2/app/blobs/{layer}"), 404, "BLOB_UNKNOWN")
        # A new manifest over the quarantined blob is refused: the client must upload the blob.
        other = dumps(json.loads(body) | {"annotations": {"rebuilt": "yes"}})
        assert_error(await reg.put_manifest("app", "v2", other, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN")
        assert await reg.push_blob("app", pattern(100, seed=7000)) == layer  # what push_image pushed as layer 0
        assert (await reg.client.head(f"/v2/app/blobs/{layer}")).status_code == 200
        await _pull_and_check(reg, "app", "v1", image)
        await reg.push_manifest("app", "v2", other, OCI_MANIFEST)
    clean = _cli("admin", "verify", "--data-dir", str(data), *db_args, "--read-blobs", "--json")
    assert clean.exit_code == 0 and json.loads(clean.stdout)["problems"] == [], clean.output


async def test_repair_from_a_backup_restores_a_quarantined_blob(tmp_path: Path):
    data, dest = tmp_path / "data", tmp_path / "backup"
    async with open_registry(data, "filesystem") as reg:
        image, body = await reg.push_image("app", "v1", seed=7)
    assert _cli("admin", "backup", str(dest), "--data-dir", str(data)).exit_code == 0
    layer = json.loads(body)["layers"][0]["digest"]
    victim = _blob_file(data, layer)
    victim.write_bytes(b"x" * victim.stat().st_size)
    text = _cli("admin", "verify", "--data-dir", str(data), "--read-blobs", "--repair")
    assert f"{layer}: digest-mismatch [quarantined] (content hashes to sha256:" in text.output, text.output
    fixed = _cli("admin", "verify", "--data-dir", str(data), "--repair", "--from", str(dest), "--json")
    [problem] = json.loads(fixed.stdout)["problems"]
    assert problem["problem"] == "quarantined" and problem["repaired"] == "restored"
    async with open_registry(data, "filesystem") as reg:
        await _pull_and_check(reg, "app", "v1", image)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_gc_keeps_what_a_live_backup_lease_protects(tmp_path: Path, backend: str, database_url_for):
    """A blob unreferenced after the lease was taken survives GC while the lease lives, and goes after."""
    async with open_registry(tmp_path / "data", "filesystem", database_url=database_url_for(backend)) as reg:
        services = reg.services
        digest, body = await reg.push_image("app", "v1", seed=3)
        lease = backup_leases.take(services.db, ttl_seconds=7200)
        assert (await reg.client.delete(f"/v2/app/manifests/{digest}")).status_code == 202
        later = lambda: utcnow() + timedelta(hours=1)  # noqa: E731  (past the grace, inside the lease)
        gc = GarbageCollector(services.db, services.storage, grace_seconds=1, clock=later)
        assert gc.run()["deleted"] == 0
        layer = json.loads(body)["layers"][0]["digest"]
        assert reg.count("blobs", "digest = :d", d=layer) == 1
        backup_leases.release(services.db, lease)
        assert gc.run()["deleted"] == 2  # config + layer
        assert reg.count("blobs", "digest = :d", d=layer) == 0


def test_restore_refuses_a_directory_that_is_not_a_backup(tmp_path: Path):
    (tmp_path / "src").mkdir()
    result = _cli("admin", "restore", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert result.exit_code == 1 and "not a complete Dockyard backup" in result.output
    assert not (tmp_path / "dst").exists()


async def test_restore_stops_at_a_damaged_blob_in_the_backup(tmp_path: Path):
    data, dest = tmp_path / "data", tmp_path / "backup"
    async with open_registry(data, "filesystem") as reg:
        _, body = await reg.push_image("app", "v1", seed=9)
    assert _cli("admin", "backup", str(dest), "--data-dir", str(data)).exit_code == 0
    layer = json.loads(body)["layers"][0]["digest"]
    copy = dest / "blobs" / "sha256" / layer.split(":", 1)[1]
    copy.write_bytes(b"y" * copy.stat().st_size)
    result = _cli("admin", "restore", str(dest), str(tmp_path / "restored"))
    assert result.exit_code == 1 and layer in result.output and "expected" in result.output
    assert not (tmp_path / "restored" / "dockyard.db").exists()  # the database goes in last: no half registry


async def test_an_expired_lease_holds_gc_back_no_longer(tmp_path: Path):
    """A killed backup stops renewing: once its lease expires, GC collects as usual."""
    async with open_registry(tmp_path / "data", "filesystem") as reg:
        digest, _ = await reg.push_image("app", "v1", seed=4)
        backup_leases.take(reg.services.db, ttl_seconds=60)
        assert (await reg.client.delete(f"/v2/app/manifests/{digest}")).status_code == 202
        gc = GarbageCollector(reg.services.db, reg.services.storage, grace_seconds=1,
                              clock=lambda: utcnow() + timedelta(hours=1))
        assert gc.run()["deleted"] == 2
        with reg.services.db.write() as conn:  # let the first lease run out for real
            conn.execute(update(backup_leases_table).values(expires_at=utcnow() - timedelta(seconds=1)))
        backup_leases.take(reg.services.db, ttl_seconds=60)  # the next backup clears the dead lease
        assert reg.count("backup_leases") == 1


async def test_backup_leaves_out_collected_garbage_and_refuses_a_missing_referenced_blob(tmp_path: Path):
    import sqlite3

    data = tmp_path / "data"
    async with open_registry(data, "filesystem") as reg:
        _, body = await reg.push_image("app", "v1", seed=5)
        loose = await reg.push_blob("app", b"uploaded, no manifest yet")
    _blob_file(data, loose).unlink()  # as if GC collected it during the copy
    result = _cli("admin", "backup", str(tmp_path / "b1"), "--data-dir", str(data), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dropped"] == [loose]
    with sqlite3.connect(tmp_path / "b1" / "dockyard.db") as conn:
        assert conn.execute("SELECT state FROM blobs WHERE digest = ?", (loose,)).fetchone() == ("deleting",)
    layer = json.loads(body)["layers"][0]["digest"]
    _blob_file(data, layer).unlink()
    refused = _cli("admin", "backup", str(tmp_path / "b2"), "--data-dir", str(data))
    assert refused.exit_code == 1 and layer in refused.output and "admin verify" in refused.output
    assert not (tmp_path / "b2" / "manifest.json").exists()


async def test_restore_writes_owner_only_files_whatever_the_umask(tmp_path: Path):
    """The restored database and key-encryption key hold every secret: never readable by other users, even
    before the first `dockyard serve` tightens the tree (restore used to run with the caller's umask)."""
    import os
    import stat

    data, dest, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    async with open_registry(data, "filesystem") as reg:
        _, body = await reg.push_image("app", "v1", seed=11)
    (data / "secrets").mkdir(mode=0o700, exist_ok=True)
    if not (data / "secrets" / "kek").exists():
        (data / "secrets" / "kek").write_text("k" * 44)
    assert _cli("admin", "backup", str(dest), "--data-dir", str(data)).exit_code == 0
    old = os.umask(0o022)
    try:
        result = _cli("admin", "restore", str(dest), str(restored))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    layer = json.loads(body)["layers"][0]["digest"]
    paths = [restored, restored / "dockyard.db", restored / "secrets", restored / "secrets" / "kek",
             restored / "storage", _blob_file(restored, layer)]
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}
    assert all(int(m, 8) & 0o077 == 0 for m in modes.values()), modes


async def test_restore_refuses_a_tampered_manifest_and_an_oversized_blob(tmp_path: Path):
    """The manifest names only the backup's own files (no `../`, no absolute path read from elsewhere), must
    cover the database, and a blob file larger than its recorded size is refused before any byte is copied."""
    data, dest = tmp_path / "data", tmp_path / "backup"
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of the backup\n")
    async with open_registry(data, "filesystem") as reg:
        _, body = await reg.push_image("app", "v1", seed=12)
    assert _cli("admin", "backup", str(dest), "--data-dir", str(data)).exit_code == 0
    original = (dest / "manifest.json").read_text()
    manifest = json.loads(original)

    for n, files in enumerate([
        {**manifest["files"], "../outside.txt": "sha256:" + hashlib.sha256(outside.read_bytes()).hexdigest()},
        {**manifest["files"], str(outside): "sha256:" + hashlib.sha256(outside.read_bytes()).hexdigest()},
        {k: v for k, v in manifest["files"].items() if k != "dockyard.db"},
    ]):
        (dest / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
        result = _cli("admin", "restore", str(dest), str(tmp_path / f"r{n}"))
        assert result.exit_code == 1, (files, result.output)
        assert "manifest" in result.output
        assert not (tmp_path / f"r{n}" / "dockyard.db").exists()

    (dest / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "counts"}))
    result = _cli("admin", "restore", str(dest), str(tmp_path / "r-nocounts"))  # optional field: restores
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r-nocounts" / "dockyard.db").exists()

    (dest / "manifest.json").write_text(original)
    layer = json.loads(body)["layers"][0]
    copy = dest / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
    with open(copy, "ab") as fh:
        fh.truncate(layer["size"] + (64 << 20))  # sparse: 64 MiB more than the database records
    result = _cli("admin", "restore", str(dest), str(tmp_path / "r-big"))
    assert result.exit_code == 1 and layer["digest"] in result.output
    assert f"expected {layer['size']} bytes" in result.output
    assert not list((tmp_path / "r-big").rglob("*.partial")) and not list((tmp_path / "r-big").rglob(copy.name))


async def test_backup_and_restore_refuse_a_directory_another_user_owns(tmp_path: Path, monkeypatch):
    """An empty directory someone else made (say under /tmp) is theirs to rename files in: they could swap the
    restored database or plant a symlink at a file the backup is about to write. Our own is made owner-only."""
    import os
    import stat

    data = tmp_path / "data"
    async with open_registry(data, "filesystem") as reg:
        await reg.push_image("app", "v1", seed=13)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    assert _cli("admin", "backup", str(shared), "--data-dir", str(data)).exit_code == 0
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700  # the backup holds the database and its key
    theirs, other = tmp_path / "theirs", tmp_path / "other"
    theirs.mkdir()
    other.mkdir()
    real_uid = os.getuid()
    if real_uid == 0:
        for path in (theirs, other):
            os.chown(path, 65534, 65534)  # nobody's
    else:
        monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)  # as if these directories were another user's
    refused = _cli("admin", "backup", str(theirs), "--data-dir", str(data))
    assert refused.exit_code == 1 and "another user" in refused.output
    assert list(theirs.iterdir()) == []
    refused = _cli("admin", "restore", str(shared), str(other))
    assert refused.exit_code == 1 and "another user" in refused.output
    assert list(other.iterdir()) == []


async def test_backup_keeps_a_pending_kek_and_refuses_a_kek_rotated_meanwhile(tmp_path: Path, monkeypatch):
    """An interrupted `rotate-kek` leaves `secrets/kek.new`, and secrets may already be sealed under it: the
    backup must carry it (and restore put it back). A KEK replaced while the snapshot is taken would pair the
    database with a key that cannot open it: refused."""
    data, dest = tmp_path / "data", tmp_path / "backup"
    async with open_registry(data, "filesystem") as reg:
        await reg.push_image("app", "v1", seed=14)
    kek = data / "secrets" / "kek"
    assert kek.is_file()
    pending = kek.with_name("kek.new")
    pending.write_bytes(b"n" * 44)
    result = _cli("admin", "backup", str(dest), "--data-dir", str(data))
    assert result.exit_code == 0, result.output
    assert (dest / "secrets" / "kek.new").read_bytes() == b"n" * 44
    assert (dest / "secrets" / "kek").read_bytes() == kek.read_bytes()
    assert _cli("admin", "restore", str(dest), str(tmp_path / "restored")).exit_code == 0
    assert (tmp_path / "restored" / "secrets" / "kek.new").read_bytes() == b"n" * 44

    real_take = backup_leases.take

    def take_then_rotate(db, ttl_seconds):  # `rotate-kek` finishing while the backup starts
        lease = real_take(db, ttl_seconds)
        kek.write_bytes(b"r" * 44)
        pending.unlink()
        return lease

    monkeypatch.setattr(backup_leases, "take", take_then_rotate)
    refused = _cli("admin", "backup", str(tmp_path / "b2"), "--data-dir", str(data))
    assert refused.exit_code == 1 and "key-encryption key changed" in refused.output
    assert not (tmp_path / "b2" / "manifest.json").exists()


async def test_repair_from_a_backup_does_not_bring_back_a_blob_gc_collected_meanwhile(tmp_path: Path):
    """verify runs beside a live server: a blob found missing because GC was collecting it must not be copied
    back from the backup after GC finished (an object no row owns, which nothing would ever delete)."""
    from sqlalchemy import text

    from dockyard.domain.scrub import verify

    data, dest = tmp_path / "data", tmp_path / "backup"
    async with open_registry(data, "filesystem") as reg:
        _, body = await reg.push_image("app", "v1", seed=15)
        assert _cli("admin", "backup", str(dest), "--data-dir", str(data)).exit_code == 0
        layer = json.loads(body)["layers"][0]["digest"]
        victim = _blob_file(data, layer)
        key = str(victim.relative_to(data / "storage"))
        db, storage = reg.services.db, reg.services.storage

        def gc_collects_it(done: int, total: int) -> None:  # between verify's check and its repair
            with db.write() as conn:
                conn.execute(text("UPDATE blobs SET state = 'deleting' WHERE digest = :d"), {"d": layer})
            victim.unlink(missing_ok=True)

        victim.unlink()
        result = await asyncio.to_thread(verify, db, storage, repair=True, source=dest, progress=gc_collects_it)
        [problem] = [p for p in result["problems"] if p["digest"] == layer]
        assert problem["problem"] == "missing" and problem["repaired"] is None
        assert storage.stat(key) is None


def test_backup_lease_is_bounded(tmp_path: Path):
    """A killed backup holds GC back until its lease expires: an unbounded --lease-seconds (a typo with extra
    zeros) would stop GC for years, with no command to clear the lease."""
    result = _cli("admin", "backup", str(tmp_path / "b"), "--data-dir", str(tmp_path / "data"), "--lease-seconds", "100000000")
    assert result.exit_code == 2 and "lease-seconds" in result.output
    assert not (tmp_path / "b").exists()


def test_a_root_owned_mount_point_is_a_usable_directory_unless_anyone_can_write_it():
    from dockyard.domain.backup import trusted_directory

    assert trusted_directory(1000, 0o40700, 1000)
    assert trusted_directory(0, 0o42775, 1000)  # a volume mounted with an fsGroup
    assert not trusted_directory(0, 0o41777, 1000)  # /tmp-like: anyone may plant files
    assert not trusted_directory(1001, 0o40700, 1000)


async def test_gc_collects_a_quarantined_blob_row_nothing_references_and_keeps_its_bytes(tmp_path: Path):
    data = tmp_path / "data"
    async with open_registry(data, "filesystem") as reg:
        image, body = await reg.push_image("app", "v1", seed=7)
    layer = json.loads(body)["layers"][0]["digest"]
    victim = _blob_file(data, layer)
    victim.write_bytes(b"x" * victim.stat().st_size)
    _cli("admin", "verify", "--data-dir", str(data), "--read-blobs", "--repair")
    async with open_registry(data, "filesystem") as reg:
        assert (await reg.client.delete(f"/v2/app/manifests/{image}")).status_code == 202
        gc = GarbageCollector(reg.services.db, reg.services.storage, grace_seconds=1,
                              clock=lambda: utcnow() + timedelta(hours=1))
        assert gc.run()["deleted"] == 2  # config + the quarantined layer's row
        assert reg.count("blobs") == 0
    assert (data / "storage" / "quarantine" / victim.relative_to(data / "storage")).read_bytes() == b"x" * 100
