"""Concurrent pushes of the same content: all succeed, exactly one object/row is stored."""

from __future__ import annotations

import asyncio

from .helpers import OCI_MANIFEST, pattern, sha256

N = 16
DATA = pattern(50_000, seed=11)
DIGEST = sha256(DATA)


async def _chunked_push(registry, repo: str, data: bytes, chunk: int = 8192) -> int:
    r = await registry.client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["location"]
    for off in range(0, len(data), chunk):
        part = data[off : off + chunk]
        r = await registry.client.patch(location, content=part, headers={"Content-Range": f"{off}-{off + len(part) - 1}"})
        assert r.status_code == 202, r.text
        location = r.headers["location"]
    r = await registry.client.put(location, params={"digest": sha256(data)})
    return r.status_code


async def _monolithic_push(registry, repo: str, data: bytes) -> int:
    r = await registry.client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    r = await registry.client.put(r.headers["location"], params={"digest": sha256(data)}, content=data)
    return r.status_code


async def _assert_single_blob(registry, repos: list[str]) -> None:
    assert len(registry.blob_objects()) == 1, registry.blob_objects()
    assert registry.count("blobs", "digest = :d", d=DIGEST) == 1
    assert registry.count("blobs") == 1
    assert registry.upload_rows() == 0
    assert registry.upload_objects() == []
    for repo in set(repos):
        r = await registry.client.get(f"/v2/{repo}/blobs/{DIGEST}")
        assert r.status_code == 200 and r.content == DATA


async def test_concurrent_same_blob_same_repo(registry):
    results = await asyncio.gather(
        *[(_chunked_push if i % 2 else _monolithic_push)(registry, "race/blob", DATA) for i in range(N)]
    )
    assert results == [201] * N
    await _assert_single_blob(registry, ["race/blob"])


async def test_concurrent_same_blob_many_repos(registry):
    repos = [f"race/repo{i}" for i in range(N)]
    results = await asyncio.gather(*[_chunked_push(registry, repo, DATA) for repo in repos])
    assert results == [201] * N
    await _assert_single_blob(registry, repos)
    assert registry.count("repository_blobs") == N


async def test_concurrent_single_post_same_blob(registry):
    async def push():
        r = await registry.client.post("/v2/race/post/blobs/uploads/", params={"digest": DIGEST}, content=DATA)
        return r.status_code

    results = await asyncio.gather(*[push() for _ in range(N)])
    assert results == [201] * N
    await _assert_single_blob(registry, ["race/post"])


async def test_concurrent_same_manifest(registry):
    digest, body = await registry.push_image("race/manifest", seed=1)  # blobs + first copy by digest
    await registry.client.delete(f"/v2/race/manifest/manifests/{digest}")
    assert registry.count("manifests") == 0

    async def push(i: int):
        ref = "latest" if i % 2 else digest
        r = await registry.put_manifest("race/manifest", ref, body, OCI_MANIFEST)
        return r.status_code, r.headers.get("docker-content-digest")

    results = await asyncio.gather(*[push(i) for i in range(N)])
    assert results == [(201, digest)] * N
    assert registry.count("manifests") == 1
    assert registry.count("manifests", "digest = :d", d=digest) == 1
    assert registry.count("tags") == 1
    # references were recorded once, and each referenced blob counted once
    assert registry.count("manifest_references") == 2
    assert registry.sql("SELECT DISTINCT ref_count FROM blobs") == [(1,)]
    r = await registry.client.get("/v2/race/manifest/manifests/latest")
    assert r.status_code == 200 and r.content == body
    r = await registry.client.get("/v2/race/manifest/tags/list")
    assert r.json()["tags"] == ["latest"]


async def test_concurrent_same_manifest_many_tags(registry):
    digest, body = await registry.push_image("race/tags", seed=2)
    results = await asyncio.gather(
        *[registry.put_manifest("race/tags", f"t{i:02d}", body, OCI_MANIFEST) for i in range(N)]
    )
    assert [r.status_code for r in results] == [201] * N
    assert registry.count("manifests") == 1
    r = await registry.client.get("/v2/race/tags/tags/list")
    assert r.json()["tags"] == [f"t{i:02d}" for i in range(N)]


async def test_concurrent_patches_on_one_session_keep_data_consistent(registry):
    """Two PATCHes race for the same range of one session. The accepted one's (202) bytes are
    the stored ones: finishing with its digest publishes exactly that content; the other gets 416.

    The interleaving is forced deterministically: request A opens its writer and then stalls
    while reading its body; request B runs to completion; then A's body is released."""
    loc = (await registry.client.post("/v2/race/session/blobs/uploads/")).headers["location"]
    a_data, b_data = b"A" * 1000, b"B" * 1000
    a_started, b_done = asyncio.Event(), asyncio.Event()

    async def a_body():
        a_started.set()
        await b_done.wait()
        yield a_data

    async def request_a():
        return await registry.client.patch(
            loc, content=a_body(), headers={"Content-Range": "0-999", "Content-Length": "1000"}
        )

    async def request_b():
        await a_started.wait()
        try:
            return await registry.client.patch(loc, content=b_data, headers={"Content-Range": "0-999"})
        finally:
            b_done.set()

    ra, rb = await asyncio.gather(request_a(), request_b())
    # A holds the session's writer first, so B (which would overwrite the same range) is refused.
    assert (ra.status_code, rb.status_code) == (202, 416), (ra.status_code, ra.text, rb.status_code, rb.text)
    r = await registry.client.put(loc, params={"digest": sha256(a_data)})
    assert r.status_code == 201, r.text
    r = await registry.client.get(f"/v2/race/session/blobs/{sha256(a_data)}")
    assert r.status_code == 200
    assert r.content == a_data, "stored bytes are not the accepted chunk's"
