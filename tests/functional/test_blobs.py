"""Blob HEAD / GET / Range / DELETE."""

from __future__ import annotations

import json

import pytest

from tests.support.invariants import assert_invariants

from .conftest import open_registry
from .helpers import OCI_MANIFEST, assert_error, pattern, sha256, sha512

BLOB = pattern(2048, seed=7)


@pytest.fixture
async def blob(registry):
    digest = await registry.push_blob("lib/app", BLOB)
    return digest


async def test_head_blob(registry, blob):
    r = await registry.client.head(f"/v2/lib/app/blobs/{blob}")
    assert r.status_code == 200
    assert r.headers["content-length"] == "2048"
    assert r.headers["docker-content-digest"] == blob
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert r.content == b""


async def test_get_blob(registry, blob):
    r = await registry.client.get(f"/v2/lib/app/blobs/{blob}")
    assert r.status_code == 200
    assert r.content == BLOB
    assert r.headers["content-length"] == "2048"
    assert r.headers["docker-content-digest"] == blob
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert sha256(r.content) == blob


@pytest.mark.parametrize(
    "header,start,end",
    [
        ("bytes=500-1499", 500, 1499),
        ("bytes=500-", 500, 2047),
        ("bytes=-500", 1548, 2047),
        ("bytes=2000-5000", 2000, 2047),
        ("bytes=0-0", 0, 0),
        ("bytes=2047-2047", 2047, 2047),
        ("bytes=0-2047", 0, 2047),
        ("bytes=-5000", 0, 2047),
    ],
)
async def test_range_206(registry, blob, header, start, end):
    r = await registry.client.get(f"/v2/lib/app/blobs/{blob}", headers={"Range": header})
    assert r.status_code == 206, r.text
    assert r.content == BLOB[start : end + 1]
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.headers["content-range"] in (f"bytes {start}-{end}/2048", f"bytes {start}-{end}/*")
    assert r.headers["docker-content-digest"] == blob


async def test_get_advertises_ranges(registry, blob):
    r = await registry.client.get(f"/v2/lib/app/blobs/{blob}")
    assert r.headers.get("accept-ranges") == "bytes"


@pytest.mark.parametrize("header", ["bytes=500-0", "bytes=5000-10000", "bytes=2048-", "bytes=2048-2048"])
async def test_range_416(registry, blob, header):
    r = await registry.client.get(f"/v2/lib/app/blobs/{blob}", headers={"Range": header})
    assert r.status_code == 416, r.text
    assert r.headers.get("content-range") == "bytes */2048"
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"


async def test_unknown_blob(registry, blob):
    other = sha256(b"not here")
    r = await registry.client.get(f"/v2/lib/app/blobs/{other}")
    assert_error(r, 404, "BLOB_UNKNOWN")
    r = await registry.client.head(f"/v2/lib/app/blobs/{other}")
    assert r.status_code == 404
    assert r.content == b""
    # also unknown in a repository that does not exist
    r = await registry.client.get(f"/v2/nothing/here/blobs/{blob}")
    assert r.status_code == 404
    assert error_code(r) == "BLOB_UNKNOWN"


def error_code(r):
    return r.json()["errors"][0]["code"]


async def test_blob_not_served_from_other_repository(registry, blob):
    r = await registry.client.get(f"/v2/lib/other/blobs/{blob}")
    assert r.status_code == 404
    await registry.push_blob("lib/other", b"unrelated")
    r = await registry.client.get(f"/v2/lib/other/blobs/{blob}")
    assert_error(r, 404, "BLOB_UNKNOWN")


async def test_delete_blob(registry, blob):
    r = await registry.client.delete(f"/v2/lib/app/blobs/{blob}")
    assert r.status_code == 202
    r = await registry.client.get(f"/v2/lib/app/blobs/{blob}")
    assert_error(r, 404, "BLOB_UNKNOWN")
    r = await registry.client.head(f"/v2/lib/app/blobs/{blob}")
    assert r.status_code == 404
    r = await registry.client.delete(f"/v2/lib/app/blobs/{blob}")
    assert_error(r, 404, "BLOB_UNKNOWN")


async def test_delete_blob_only_affects_its_repository(registry, blob):
    await registry.push_blob("lib/other", BLOB)
    r = await registry.client.delete(f"/v2/lib/app/blobs/{blob}")
    assert r.status_code == 202
    r = await registry.client.get(f"/v2/lib/other/blobs/{blob}")
    assert r.status_code == 200 and r.content == BLOB


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_delete_blob_refused_while_a_manifest_of_the_repository_references_it(backend, tmp_path, database_url_for):
    """Unlinking a referenced blob would break pulls of the manifest and drop its bytes from the
    quota usage: 405 UNSUPPORTED naming the manifest, until no manifest of the repository uses it.
    (405, not 409: the OCI conformance suite deletes a still-referenced layer in a teardown and
    accepts 2xx or 405 there.)"""
    async with open_registry(tmp_path / "data", "filesystem", database_url=database_url_for(backend)) as reg:
        first, body = await reg.push_image("lib/app", "v1", seed=1)
        doc = json.loads(body)
        config, layer = doc["config"]["digest"], doc["layers"][0]["digest"]
        # A second manifest over the same blobs: deleting the first must not free them yet.
        second = await reg.push_manifest("lib/app", "v2", json.dumps({**doc, "annotations": {"n": "2"}}).encode(), OCI_MANIFEST)
        for manifest in (first, second):
            for blob in (config, layer):
                r = await reg.client.delete(f"/v2/lib/app/blobs/{blob}")
                err = assert_error(r, 405, "UNSUPPORTED")
                assert err["errors"][0]["detail"] == {"digest": blob, "manifest": manifest}
                assert r.headers["allow"] == "GET, HEAD"
                assert f"manifest {manifest}" in err["errors"][0]["message"]
                r = await reg.client.get(f"/v2/lib/app/blobs/{blob}")
                assert r.status_code == 200
            r = await reg.client.get(f"/v2/lib/app/manifests/{manifest}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200
            assert_invariants(reg.services.db.engine, reg.services.storage)
            r = await reg.client.delete(f"/v2/lib/app/manifests/{manifest}")
            assert r.status_code == 202
        # No manifest of the repository references them any more: the deletes go through.
        for blob in (config, layer):
            r = await reg.client.delete(f"/v2/lib/app/blobs/{blob}")
            assert r.status_code == 202
            r = await reg.client.get(f"/v2/lib/app/blobs/{blob}")
            assert_error(r, 404, "BLOB_UNKNOWN")
        assert_invariants(reg.services.db.engine, reg.services.storage)


async def test_delete_blob_referenced_only_in_another_repository(registry):
    """Only manifests of the repository itself hold its link: the same blob goes from a
    repository whose manifests do not use it, and the image elsewhere still pulls."""
    digest, body = await registry.push_image("lib/app", "v1", seed=2)
    layer = json.loads(body)["layers"][0]["digest"]
    r = await registry.client.post("/v2/lib/other/blobs/uploads/", params={"mount": layer, "from": "lib/app"})
    assert r.status_code == 201, r.text
    r = await registry.client.delete(f"/v2/lib/other/blobs/{layer}")
    assert r.status_code == 202
    r = await registry.client.get(f"/v2/lib/other/blobs/{layer}")
    assert_error(r, 404, "BLOB_UNKNOWN")
    r = await registry.client.get(f"/v2/lib/app/blobs/{layer}")
    assert r.status_code == 200
    r = await registry.client.delete(f"/v2/lib/app/blobs/{layer}")
    assert_error(r, 405, "UNSUPPORTED")
    assert_invariants(registry.services.db.engine, registry.services.storage)


async def test_delete_unknown_blob(registry, blob):
    r = await registry.client.delete(f"/v2/lib/app/blobs/{sha256(b'nope')}")
    assert_error(r, 404, "BLOB_UNKNOWN")


@pytest.mark.parametrize(
    "bad",
    ["sha256:xyz", "md5:" + "0" * 32, "sha256:" + "a" * 63, "sha256:" + "A" * 64, "sha256", "sha512:" + "a" * 64, "notadigest"],
)
async def test_blob_endpoints_reject_bad_digest(registry, blob, bad):
    for method in ("GET", "DELETE"):
        r = await registry.client.request(method, f"/v2/lib/app/blobs/{bad}")
        assert_error(r, 400, "DIGEST_INVALID")
    r = await registry.client.head(f"/v2/lib/app/blobs/{bad}")
    assert r.status_code == 400
    # nothing was deleted
    r = await registry.client.get(f"/v2/lib/app/blobs/{blob}")
    assert r.status_code == 200


async def test_sha512_blob(registry):
    data = pattern(3000, seed=9)
    digest = sha512(data)
    location = await registry.start_upload("lib/app")
    r = await registry.client.put(location, params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == digest
    r = await registry.client.get(f"/v2/lib/app/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["docker-content-digest"] == digest


async def test_empty_blob(registry):
    digest = await registry.push_blob("lib/app", b"")
    r = await registry.client.get(f"/v2/lib/app/blobs/{digest}")
    assert r.status_code == 200 and r.content == b""
    r = await registry.client.head(f"/v2/lib/app/blobs/{digest}")
    assert r.headers["content-length"] == "0"


@pytest.mark.parametrize("ranged", [False, True])
async def test_a_blob_whose_stored_object_is_gone_is_unknown_not_a_server_error(registry, blob, ranged):
    """The row says present but the object was removed behind the registry's back: 404 BLOB_UNKNOWN
    (so a client pushes it again), never a 500."""
    registry.services.storage.delete(registry.scalar("SELECT storage_key FROM blobs WHERE digest = :d", d=blob))
    headers = {"Range": "bytes=0-9"} if ranged else {}
    r = await registry.client.get(f"/v2/lib/app/blobs/{blob}", headers=headers)
    assert_error(r, 404, "BLOB_UNKNOWN")
