"""A blob DELETE racing a manifest PUT that references the blob, on PostgreSQL (READ COMMITTED).

The two meet on the blob's row (domain/blob_refs.py): the DELETE locks it (`lock_present`) before it
looks for referencing manifests, the PUT writes it (`add_refs`) and re-reads its links after. Each test
holds one side's transaction open, waits (with a deadline) until the other blocks on the row, then
commits the first: the later one must fail, and no manifest may be left referencing an unlinked blob.
SQLite serializes writers, so the two cannot interleave there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard.domain import blob_refs
from dockyard.domain.manifests import parse_manifest
from dockyard.domain.repositories import ensure_repository_id, find_repository_id
from dockyard.errors import BlobReferenced, ManifestBlobUnknown

from .helpers import OCI_MANIFEST, assert_error, pattern
from .test_repo_lifecycle import open_registry
from .test_repo_lifecycle_races import run, wait_for_lock_waiter


@pytest.fixture
async def reg(tmp_path: Path, database_url_for):
    async with open_registry(tmp_path, database_url_for("postgresql")) as registry:
        await registry.client.post("/api/v1/projects", json={"name": "team"})
        yield registry


async def image(reg) -> tuple[bytes, str]:
    """An image's blobs pushed, its manifest not yet: (manifest bytes, layer digest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = pattern(300, seed=7)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": await reg.push_blob("team/app", config),
                      "size": len(config)},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": await reg.push_blob("team/app", layer), "size": len(layer)}]}
    return json.dumps(doc).encode(), doc["layers"][0]["digest"]


def assert_every_reference_linked(db) -> None:
    from sqlalchemy import text

    with db.engine.connect() as conn:
        dangling = conn.execute(text(
            "SELECT m.digest, r.digest FROM manifests m JOIN manifest_references r ON r.manifest_id = m.id"
            " WHERE r.kind = 'blob' AND NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN blobs b ON b.id = rb.blob_id"
            " WHERE rb.repository_id = m.repository_id AND b.digest = r.digest)"
        )).all()
    assert dangling == []


async def test_a_delete_that_meets_an_uncommitted_manifest_put_is_refused(reg):
    payload, layer = await image(reg)
    db, services = reg.services.db, reg.services
    parsed = parse_manifest(payload, OCI_MANIFEST)
    with db.write() as push:
        services.manifests.store(push, ensure_repository_id(push, "team/app"), parsed)  # holds the blob rows
        thread, outcome = run(lambda: services.blobs.unlink("team/app", layer))
        wait_for_lock_waiter(db)  # the DELETE waits on the layer's row
    thread.join(30)
    assert isinstance(outcome.get("error"), BlobReferenced), outcome
    r = await reg.client.get(f"/v2/team/app/blobs/{layer}")
    assert r.status_code == 200
    assert_every_reference_linked(db)


async def test_a_manifest_put_that_meets_an_uncommitted_delete_fails_cleanly(reg):
    payload, layer = await image(reg)
    db, services = reg.services.db, reg.services
    parsed = parse_manifest(payload, OCI_MANIFEST)
    with db.write() as delete:
        repo_id = find_repository_id(delete, "team/app")
        blob_id = blob_refs.lock_present(delete, layer)
        assert blob_refs.unlink(delete, repo_id, blob_id)
        assert blob_refs.referencing_manifest(delete, repo_id, layer) is None

        def put():
            with db.write() as conn:
                return services.manifests.store(conn, ensure_repository_id(conn, "team/app"), parsed)

        thread, outcome = run(put)
        wait_for_lock_waiter(db)  # the PUT waits on the layer's row
    thread.join(30)
    assert isinstance(outcome.get("error"), ManifestBlobUnknown), outcome
    assert_error(await reg.client.get(f"/v2/team/app/manifests/{parsed.digest}", headers={"Accept": OCI_MANIFEST}),
                 404, "MANIFEST_UNKNOWN")
    assert_every_reference_linked(db)
