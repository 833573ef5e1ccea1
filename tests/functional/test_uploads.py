"""Blob uploads: monolithic, single POST, chunked, streamed, status, cancel, mount, and bad input."""

from __future__ import annotations

import pytest

from .helpers import assert_error, pattern, sha256

REPO = "team/app"
DATA = pattern(10_000, seed=3)
DIGEST = sha256(DATA)


def _upload_path(location: str) -> str:
    return location.split("?", 1)[0]


async def _assert_blob(registry, repo: str, data: bytes) -> None:
    r = await registry.client.get(f"/v2/{repo}/blobs/{sha256(data)}")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["docker-content-digest"] == sha256(data)


async def _assert_clean(registry) -> None:
    """No upload session or upload file remains."""
    assert registry.upload_rows() == 0
    assert registry.upload_objects() == []


# -- happy paths ----------------------------------------------------------------------------


async def test_post_then_put_monolithic(registry):
    r = await registry.client.post(f"/v2/{REPO}/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["location"]
    assert _upload_path(location).startswith(f"/v2/{REPO}/blobs/uploads/")
    assert r.headers["range"] == "0-0"
    assert r.headers.get("docker-upload-uuid")
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    # nothing visible yet
    await registry.assert_blob_absent(REPO, DIGEST)
    r = await registry.client.put(
        location, params={"digest": DIGEST}, content=DATA, headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v2/{REPO}/blobs/{DIGEST}"
    assert r.headers["docker-content-digest"] == DIGEST
    await _assert_blob(registry, REPO, DATA)
    await _assert_clean(registry)
    assert len(registry.blob_objects()) == 1
    # the session is consumed
    r = await registry.client.get(location)
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_post_without_trailing_slash(registry):
    r = await registry.client.post(f"/v2/{REPO}/blobs/uploads")
    assert r.status_code == 202
    r = await registry.client.put(r.headers["location"], params={"digest": DIGEST}, content=DATA)
    assert r.status_code == 201


async def test_single_post_with_digest(registry):
    r = await registry.client.post(
        f"/v2/{REPO}/blobs/uploads/",
        params={"digest": DIGEST},
        content=DATA,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v2/{REPO}/blobs/{DIGEST}"
    assert r.headers["docker-content-digest"] == DIGEST
    await _assert_blob(registry, REPO, DATA)
    await _assert_clean(registry)


async def test_chunked_upload(registry):
    location = await registry.start_upload(REPO)
    chunks = [DATA[:4000], DATA[4000:8192], DATA[8192:]]
    offset = 0
    for chunk in chunks:
        r = await registry.client.patch(
            location,
            content=chunk,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            },
        )
        assert r.status_code == 202, r.text
        offset += len(chunk)
        assert r.headers["range"] == f"0-{offset - 1}"
        assert _upload_path(r.headers["location"]).startswith(f"/v2/{REPO}/blobs/uploads/")
        location = r.headers["location"]
        # status agrees
        s = await registry.client.get(location)
        assert s.status_code == 204
        assert s.headers["range"] == f"0-{offset - 1}"
        assert s.headers["location"]
    await registry.assert_blob_absent(REPO, DIGEST)
    r = await registry.client.put(location, params={"digest": DIGEST})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v2/{REPO}/blobs/{DIGEST}"
    await _assert_blob(registry, REPO, DATA)
    await _assert_clean(registry)


async def test_chunked_upload_with_final_chunk_on_put(registry):
    location = await registry.start_upload(REPO)
    r = await registry.client.patch(location, content=DATA[:6000], headers={"Content-Range": "0-5999"})
    assert r.status_code == 202
    r = await registry.client.put(
        r.headers["location"],
        params={"digest": DIGEST},
        content=DATA[6000:],
        headers={"Content-Range": f"6000-{len(DATA) - 1}", "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    await _assert_blob(registry, REPO, DATA)
    await _assert_clean(registry)


async def test_content_range_with_bytes_prefix_and_total(registry):
    location = await registry.start_upload(REPO)
    r = await registry.client.patch(location, content=DATA[:100], headers={"Content-Range": "bytes 0-99/*"})
    assert r.status_code == 202, r.text
    assert r.headers["range"] == "0-99"


async def test_streamed_patch_without_content_range(registry):
    location = await registry.start_upload(REPO)

    async def body():
        for i in range(0, len(DATA), 1000):
            yield DATA[i : i + 1000]

    r = await registry.client.patch(location, content=body(), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    assert r.headers["range"] == f"0-{len(DATA) - 1}"
    # a second streamed PATCH appends
    r = await registry.client.patch(r.headers["location"], content=b"tail")
    assert r.status_code == 202
    assert r.headers["range"] == f"0-{len(DATA) + 3}"
    full = DATA + b"tail"
    r = await registry.client.put(r.headers["location"], params={"digest": sha256(full)}, content=b"")
    assert r.status_code == 201, r.text
    await _assert_blob(registry, REPO, full)
    await _assert_clean(registry)


async def test_upload_status(registry):
    location = await registry.start_upload(REPO)
    r = await registry.client.get(location)
    assert r.status_code == 204
    assert r.headers["range"] == "0-0"
    assert _upload_path(r.headers["location"]).startswith(f"/v2/{REPO}/blobs/uploads/")
    assert r.content == b""
    await registry.client.patch(location, content=b"0123456789", headers={"Content-Range": "0-9"})
    r = await registry.client.get(location)
    assert r.status_code == 204
    assert r.headers["range"] == "0-9"


async def test_upload_status_is_scoped_to_repository(registry):
    location = await registry.start_upload(REPO)
    upload_id = _upload_path(location).rsplit("/", 1)[1]
    r = await registry.client.get(f"/v2/team/other/blobs/uploads/{upload_id}")
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_cancel_upload(registry):
    location = await registry.start_upload(REPO)
    r = await registry.client.patch(location, content=DATA[:100], headers={"Content-Range": "0-99"})
    assert r.status_code == 202
    r = await registry.client.delete(location)
    assert r.status_code == 204
    r = await registry.client.get(location)
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    r = await registry.client.patch(location, content=DATA[100:200], headers={"Content-Range": "100-199"})
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    r = await registry.client.put(location, params={"digest": sha256(DATA[:100])})
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    r = await registry.client.delete(location)
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    await _assert_clean(registry)
    assert registry.blob_objects() == []


async def test_unknown_upload_id(registry):
    await registry.push_blob(REPO, b"x")
    r = await registry.client.get(f"/v2/{REPO}/blobs/uploads/00000000-0000-0000-0000-000000000000")
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_out_of_order_chunk_416_keeps_session(registry):
    location = await registry.start_upload(REPO)
    # first PATCH carrying chunk 2's range
    r = await registry.client.patch(location, content=DATA[5000:], headers={"Content-Range": f"5000-{len(DATA) - 1}"})
    assert r.status_code == 416, r.text
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    s = await registry.client.get(location)
    assert s.status_code == 204 and s.headers["range"] == "0-0"
    # chunk 1
    r = await registry.client.patch(location, content=DATA[:5000], headers={"Content-Range": "0-4999"})
    assert r.status_code == 202
    assert r.headers["range"] == "0-4999"
    next_location = r.headers["location"]
    # replay chunk 1 on the old location: 416, session survives
    r = await registry.client.patch(location, content=DATA[:5000], headers={"Content-Range": "0-4999"})
    assert r.status_code == 416
    s = await registry.client.get(next_location)
    assert s.status_code == 204
    assert s.headers["range"] == "0-4999"
    # continue and finish
    r = await registry.client.patch(
        s.headers["location"], content=DATA[5000:], headers={"Content-Range": f"5000-{len(DATA) - 1}"}
    )
    assert r.status_code == 202
    r = await registry.client.put(r.headers["location"], params={"digest": DIGEST})
    assert r.status_code == 201, r.text
    await _assert_blob(registry, REPO, DATA)
    await _assert_clean(registry)


# -- cross-repository mount -------------------------------------------------------------------


async def test_mount_from_repository_holding_blob(registry):
    await registry.push_blob("src/repo", DATA)
    before = registry.blob_objects()
    r = await registry.client.post("/v2/dst/repo/blobs/uploads/", params={"mount": DIGEST, "from": "src/repo"})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v2/dst/repo/blobs/{DIGEST}"
    assert r.headers["docker-content-digest"] == DIGEST
    await _assert_blob(registry, "dst/repo", DATA)
    assert registry.blob_objects() == before  # no bytes copied
    await _assert_clean(registry)


@pytest.mark.parametrize("source", ["src/repo", "src/empty", "never/seen", None])
async def test_mount_miss_returns_usable_upload(registry, source):
    await registry.push_blob("src/repo", b"something else")
    await registry.push_blob("elsewhere", DATA)  # present in the registry, but not in `from`
    if source == "src/empty":
        await registry.start_upload("src/empty")
    params = {"mount": DIGEST}
    if source:
        params["from"] = source
    r = await registry.client.post("/v2/dst/repo/blobs/uploads/", params=params)
    if source is None and r.status_code == 201:
        # automatic content discovery (spec: MAY mount any blob the registry can find)
        assert r.headers["location"] == f"/v2/dst/repo/blobs/{DIGEST}"
        await _assert_blob(registry, "dst/repo", DATA)
        return
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    assert _upload_path(location).startswith("/v2/dst/repo/blobs/uploads/")
    r2 = await registry.client.get(f"/v2/dst/repo/blobs/{DIGEST}")
    assert_error(r2, 404, "BLOB_UNKNOWN")
    r = await registry.client.put(location, params={"digest": DIGEST}, content=DATA)
    assert r.status_code == 201, r.text
    await _assert_blob(registry, "dst/repo", DATA)


# -- bad input --------------------------------------------------------------------------------


async def test_digest_mismatch_on_put(registry):
    location = await registry.start_upload(REPO)
    r = await registry.client.patch(location, content=DATA, headers={"Content-Range": f"0-{len(DATA) - 1}"})
    assert r.status_code == 202
    wrong = sha256(b"something else")
    r = await registry.client.put(r.headers["location"], params={"digest": wrong})
    assert_error(r, 400, "DIGEST_INVALID")
    await registry.assert_blob_absent(REPO, wrong)
    await registry.assert_blob_absent(REPO, DIGEST)
    r = await registry.client.get(location)
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    await _assert_clean(registry)
    assert registry.blob_objects() == []
    await registry.assert_no_content(REPO)


async def test_digest_mismatch_on_monolithic_put(registry):
    location = await registry.start_upload(REPO)
    wrong = sha256(b"other")
    r = await registry.client.put(location, params={"digest": wrong}, content=DATA)
    assert_error(r, 400, "DIGEST_INVALID")
    await registry.assert_blob_absent(REPO, wrong)
    await registry.assert_blob_absent(REPO, DIGEST)
    r = await registry.client.get(location)
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    await _assert_clean(registry)
    assert registry.blob_objects() == []


async def test_digest_mismatch_on_single_post(registry):
    wrong = sha256(b"other")
    r = await registry.client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": wrong}, content=DATA)
    assert_error(r, 400, "DIGEST_INVALID")
    await registry.assert_blob_absent(REPO, wrong)
    await registry.assert_blob_absent(REPO, DIGEST)
    await _assert_clean(registry)
    assert registry.blob_objects() == []
    await registry.assert_no_content(REPO)


BAD_DIGESTS = ["sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:" + "a" * 63, "sha256:" + "A" * 64, "garbage"]


@pytest.mark.parametrize("bad", BAD_DIGESTS)
async def test_bad_digest_on_single_post(registry, bad):
    r = await registry.client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": bad}, content=DATA)
    assert_error(r, 400, "DIGEST_INVALID")
    await _assert_clean(registry)
    assert registry.blob_objects() == []
    await registry.assert_no_content(REPO)


@pytest.mark.parametrize("bad", BAD_DIGESTS)
async def test_bad_digest_on_put(registry, bad):
    location = await registry.start_upload(REPO)
    r = await registry.client.put(location, params={"digest": bad}, content=DATA)
    assert_error(r, 400, "DIGEST_INVALID")
    assert registry.blob_objects() == []
    assert registry.count("blobs") == 0
    await registry.assert_no_content(REPO)


@pytest.mark.parametrize("bad", BAD_DIGESTS)
async def test_bad_digest_on_mount(registry, bad):
    r = await registry.client.post(f"/v2/{REPO}/blobs/uploads/", params={"mount": bad, "from": "other"})
    assert_error(r, 400, "DIGEST_INVALID")
    await _assert_clean(registry)


async def test_put_without_digest(registry):
    location = await registry.start_upload(REPO)
    r = await registry.client.put(location, content=DATA)
    assert_error(r, 400, "DIGEST_INVALID")
    assert registry.blob_objects() == []
    assert registry.count("blobs") == 0


@pytest.mark.parametrize(
    "first_range,label",
    [("200-299", "gap"), ("50-149", "overlap"), ("0-99", "restart-at-zero")],
)
async def test_content_range_gap_or_overlap_is_416(registry, first_range, label):
    location = await registry.start_upload(REPO)
    r = await registry.client.patch(location, content=DATA[:100], headers={"Content-Range": "0-99"})
    assert r.status_code == 202
    location = r.headers["location"]
    start, end = (int(x) for x in first_range.split("-"))
    r = await registry.client.patch(location, content=DATA[start : end + 1], headers={"Content-Range": first_range})
    assert r.status_code == 416, (label, r.status_code, r.text)
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert r.headers.get("range") == "0-99"
    # the session is intact and unchanged
    s = await registry.client.get(location)
    assert s.status_code == 204 and s.headers["range"] == "0-99"
    # a correct continuation still produces the right blob
    r = await registry.client.patch(location, content=DATA[100:], headers={"Content-Range": f"100-{len(DATA) - 1}"})
    assert r.status_code == 202
    r = await registry.client.put(location, params={"digest": DIGEST})
    assert r.status_code == 201, r.text
    await _assert_blob(registry, REPO, DATA)


async def test_first_chunk_not_at_zero_is_416(registry):
    location = await registry.start_upload(REPO)
    r = await registry.client.patch(location, content=DATA[1:101], headers={"Content-Range": "1-100"})
    assert r.status_code == 416
    assert registry.blob_objects() == []


@pytest.mark.parametrize("bad_range", ["abc", "5-", "-5", "10-5"])
async def test_malformed_content_range(registry, bad_range):
    location = await registry.start_upload(REPO)
    r = await registry.client.patch(location, content=DATA[:10], headers={"Content-Range": bad_range})
    assert r.status_code == 416, r.text
    s = await registry.client.get(location)
    assert s.status_code == 204 and s.headers["range"] == "0-0"


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
@pytest.mark.parametrize("declared", [50, 150])
async def test_content_length_not_matching_content_range(registry, method, declared):
    """Content-Range says 100 bytes; Content-Length says otherwise (and the body matches it)."""
    location = await registry.start_upload(REPO)
    body = DATA[:declared]
    params = {"digest": sha256(DATA[:100])} if method == "PUT" else None
    r = await registry.client.request(
        method,
        location,
        params=params,
        content=body,
        headers={"Content-Range": "0-99", "Content-Length": str(declared)},
    )
    assert_error(r, 400, "SIZE_INVALID")
    assert registry.blob_objects() == []
    assert registry.count("blobs") == 0
    await registry.assert_blob_absent(REPO, sha256(DATA[:100]))
    if method == "PATCH":
        # nothing was appended; the session can still be completed
        s = await registry.client.get(location)
        assert s.status_code == 204 and s.headers["range"] == "0-0"


async def test_body_shorter_than_content_length(registry):
    """Content-Length and Content-Range agree, but the body is truncated."""
    location = await registry.start_upload(REPO)
    r = await registry.client.patch(
        location, content=DATA[:60], headers={"Content-Range": "0-99", "Content-Length": "100"}
    )
    assert_error(r, 400, "SIZE_INVALID")
    s = await registry.client.get(location)
    assert s.status_code == 204 and s.headers["range"] == "0-0"
    r = await registry.client.patch(location, content=DATA[:100], headers={"Content-Range": "0-99"})
    assert r.status_code == 202
    r = await registry.client.put(location, params={"digest": sha256(DATA[:100])})
    assert r.status_code == 201
    await _assert_blob(registry, REPO, DATA[:100])


async def test_body_longer_than_declared_is_rejected_and_session_recovers(registry):
    """Body overruns Content-Length mid-stream (after a flush batch hit storage): 400 SIZE_INVALID,
    nothing recorded, and a correct retry of the same range completes the blob."""
    location = await registry.start_upload(REPO)
    r = await registry.client.patch(
        location, content=DATA[:9000], headers={"Content-Range": "0-5999", "Content-Length": "6000"}
    )
    assert_error(r, 400, "SIZE_INVALID")
    s = await registry.client.get(location)
    assert s.status_code == 204 and s.headers["range"] == "0-0"
    r = await registry.client.patch(location, content=DATA[:6000], headers={"Content-Range": "0-5999"})
    assert r.status_code == 202
    r = await registry.client.patch(location, content=DATA[6000:], headers={"Content-Range": f"6000-{len(DATA) - 1}"})
    assert r.status_code == 202
    r = await registry.client.put(location, params={"digest": DIGEST})
    assert r.status_code == 201, r.text
    await _assert_blob(registry, REPO, DATA)


async def test_monolithic_put_body_shorter_than_content_length(registry):
    location = await registry.start_upload(REPO)
    r = await registry.client.put(
        location, params={"digest": DIGEST}, content=DATA[:5000], headers={"Content-Length": str(len(DATA))}
    )
    assert_error(r, 400, "SIZE_INVALID")
    await registry.assert_blob_absent(REPO, DIGEST)
    assert registry.blob_objects() == []


async def test_upload_locations_are_unique(registry):
    locations = {await registry.start_upload(REPO) for _ in range(20)}
    assert len(locations) == 20


async def test_delete_then_repush_blob(registry):
    digest = await registry.push_blob(REPO, DATA)
    r = await registry.client.delete(f"/v2/{REPO}/blobs/{digest}")
    assert r.status_code == 202
    await registry.push_blob(REPO, DATA)
    await _assert_blob(registry, REPO, DATA)
    assert len(registry.blob_objects()) == 1


async def test_mount_after_source_deleted_blob(registry):
    digest = await registry.push_blob("src/repo", DATA)
    r = await registry.client.delete(f"/v2/src/repo/blobs/{digest}")
    assert r.status_code == 202
    r = await registry.client.post("/v2/dst/repo/blobs/uploads/", params={"mount": digest, "from": "src/repo"})
    assert r.status_code == 202
    r = await registry.client.get(f"/v2/dst/repo/blobs/{digest}")
    assert r.status_code == 404


async def test_failed_push_to_new_repository_leaves_no_repository(registry):
    """A push that fails verification must not make an otherwise-unknown repository appear."""
    wrong = sha256(b"other")
    r = await registry.client.post("/v2/ghost/repo/blobs/uploads/", params={"digest": wrong}, content=DATA)
    assert_error(r, 400, "DIGEST_INVALID")
    r = await registry.client.get("/v2/_catalog")
    assert "ghost/repo" not in r.json()["repositories"]
    r = await registry.client.get("/v2/ghost/repo/tags/list")
    assert_error(r, 404, "NAME_UNKNOWN")
