"""Grammar checks: invalid repository names, tags and digests on every endpoint, leaving nothing behind."""

from __future__ import annotations

import pytest

from .helpers import OCI_MANIFEST, assert_error, sha256

BAD_NAMES = [
    "Upper",
    "lib/Upper",
    "a..b",
    "a/%2E%2E/b",  # percent-encoded `..` so the client does not normalise it away
    "%2E%2E",
    "a//b",
    "a/",
    "-lead",
    "trail-",
    "a/_b",
    "a___b",
    "a b".replace(" ", "%20"),
    "x" * 256,
    "/".join(["abcdefghij"] * 23) + "/abcdef",  # 259 chars of valid components
]
BAD_NAME_IDS = ["upper", "upper-2nd", "dotdot-inline", "dotdot-component", "dotdot-only", "double-slash",
                "trailing-slash", "leading-dash", "trailing-dash", "leading-underscore", "triple-underscore",
                "space", "256-chars", "259-chars-components"]

DIGEST = sha256(b"payload")


def _endpoints(name: str) -> list[tuple[str, str, dict]]:
    return [
        ("GET", f"/v2/{name}/tags/list", {}),
        ("GET", f"/v2/{name}/manifests/latest", {}),
        ("HEAD", f"/v2/{name}/manifests/latest", {}),
        ("DELETE", f"/v2/{name}/manifests/latest", {}),
        ("PUT", f"/v2/{name}/manifests/latest", {"content": b"{}", "headers": {"Content-Type": OCI_MANIFEST}}),
        ("GET", f"/v2/{name}/blobs/{DIGEST}", {}),
        ("HEAD", f"/v2/{name}/blobs/{DIGEST}", {}),
        ("DELETE", f"/v2/{name}/blobs/{DIGEST}", {}),
        ("POST", f"/v2/{name}/blobs/uploads/", {}),
        ("POST", f"/v2/{name}/blobs/uploads/", {"params": {"digest": DIGEST}, "content": b"payload"}),
        ("POST", f"/v2/{name}/blobs/uploads/", {"params": {"mount": DIGEST, "from": "good/source"}}),
        ("GET", f"/v2/{name}/blobs/uploads/00000000-0000-0000-0000-000000000000", {}),
        ("PATCH", f"/v2/{name}/blobs/uploads/00000000-0000-0000-0000-000000000000", {"content": b"x"}),
        ("PUT", f"/v2/{name}/blobs/uploads/00000000-0000-0000-0000-000000000000", {"params": {"digest": DIGEST}}),
        ("DELETE", f"/v2/{name}/blobs/uploads/00000000-0000-0000-0000-000000000000", {}),
        ("GET", f"/v2/{name}/referrers/{DIGEST}", {}),
    ]


async def _assert_nothing_stored(registry) -> None:
    assert registry.count("repositories", "name != 'good/source'") == 0
    assert registry.count("manifests") == 0
    assert registry.count("tags") == 0
    assert registry.count("uploads") == 0
    assert registry.upload_objects() == []
    assert registry.blob_objects() == [k for k in registry.blob_objects() if DIGEST.split(":")[1] in k]
    r = await registry.client.get("/v2/_catalog")
    assert r.json()["repositories"] == ["good/source"]


@pytest.fixture
async def source(registry):
    await registry.push_blob("good/source", b"payload")


@pytest.mark.parametrize("name", BAD_NAMES, ids=BAD_NAME_IDS)
async def test_invalid_repository_name(registry, source, name):
    for method, path, kwargs in _endpoints(name):
        r = await registry.client.request(method, path, **kwargs)
        if method == "HEAD":
            assert r.status_code == 400, (method, path, r.status_code)
        else:
            assert_error(r, 400, "NAME_INVALID")
    await _assert_nothing_stored(registry)


async def test_invalid_mount_source_name(registry, source):
    r = await registry.client.post("/v2/good/target/blobs/uploads/", params={"mount": DIGEST, "from": "Bad/Source"})
    assert_error(r, 400, "NAME_INVALID")
    r = await registry.client.get(f"/v2/good/target/blobs/{DIGEST}")
    assert r.status_code == 404


@pytest.mark.parametrize(
    "name",
    ["a", "a/b", "a.b", "a_b", "a__b", "a-b", "a---b", "0", "a1/b2/c3/d4", "x" * 255, "/".join(["abcdefghij"] * 23) + "/ab"],
)
async def test_valid_repository_names(registry, name):
    assert len(name) <= 255
    digest, _ = await registry.push_image(name, "t")
    r = await registry.client.get(f"/v2/{name}/manifests/t")
    assert r.status_code == 200
    r = await registry.client.get(f"/v2/{name}/tags/list")
    assert r.json() == {"name": name, "tags": ["t"]}


BAD_TAGS = ["-bad", ".bad", "x" * 129, "bad+tag", "t%C3%A9"]


@pytest.mark.parametrize("tag", BAD_TAGS, ids=["dash", "dot", "129-chars", "plus", "non-ascii"])
async def test_invalid_tag(registry, tag):
    digest, body = await registry.push_image("good/repo", seed=1)  # pushed by digest: no tags
    before = registry.count("manifests")
    r = await registry.put_manifest("good/repo", tag, body, OCI_MANIFEST)
    assert_error(r, 400, "TAG_INVALID")
    # reads/deletes of an invalid tag: no such manifest (404), as for any unknown reference
    for method in ("GET", "DELETE"):
        r = await registry.client.request(method, f"/v2/good/repo/manifests/{tag}")
        assert_error(r, 404, "MANIFEST_UNKNOWN")
    r = await registry.client.head(f"/v2/good/repo/manifests/{tag}")
    assert r.status_code == 404
    # an invalid extra ?tag= on a by-digest PUT is rejected too, atomically
    r = await registry.client.put(
        f"/v2/good/repo/manifests/{digest}",
        params=[("tag", "fine"), ("tag", tag)],
        content=body,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert_error(r, 400, "TAG_INVALID")
    assert registry.count("tags") == 0
    assert registry.count("manifests") == before
    r = await registry.client.get("/v2/good/repo/tags/list")
    assert r.json()["tags"] == []


@pytest.mark.parametrize("tag", ["a", "A", "_", "0", "x" * 128, "v1.2.3-rc_1", "UPPER.case-MiX_9"])
async def test_valid_tags(registry, tag):
    digest, body = await registry.push_image("good/repo", tag)
    r = await registry.client.get(f"/v2/good/repo/manifests/{tag}")
    assert r.status_code == 200 and r.headers["docker-content-digest"] == digest


BAD_DIGESTS = [
    "sha256:xyz",
    "md5:d41d8cd98f00b204e9800998ecf8427e",
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 65,
    "sha256:" + "G" * 64,
    "sha512:" + "a" * 64,
    "SHA256:" + "a" * 64,
    "sha256:",
    ":abc",
]


@pytest.mark.parametrize("bad", BAD_DIGESTS)
async def test_invalid_digest_as_manifest_reference(registry, bad):
    digest, body = await registry.push_image("good/repo", seed=1)
    before = registry.count("manifests")
    r = await registry.put_manifest("good/repo", bad, body, OCI_MANIFEST)
    assert_error(r, 400, "DIGEST_INVALID")
    for method in ("GET", "DELETE"):
        r = await registry.client.request(method, f"/v2/good/repo/manifests/{bad}")
        assert_error(r, 400, "DIGEST_INVALID")
    assert registry.count("manifests") == before
    assert registry.count("tags") == 0


async def test_put_by_digest_with_tag_params(registry):
    digest, body = await registry.push_image("good/repo", seed=1)
    r = await registry.client.put(
        f"/v2/good/repo/manifests/{digest}",
        params=[("tag", "a"), ("tag", "b"), ("tag", "a"), ("tag", "c")],
        content=body,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == digest
    assert sorted(v.strip() for h in r.headers.get_list("oci-tag") for v in h.split(",")) == ["a", "b", "c"]
    r = await registry.client.get("/v2/good/repo/tags/list")
    assert r.json()["tags"] == ["a", "b", "c"]


async def test_put_by_digest_with_too_many_tags(registry):
    digest, body = await registry.push_image("good/repo", seed=1)
    r = await registry.client.put(
        f"/v2/good/repo/manifests/{digest}",
        params=[("tag", f"t{i}") for i in range(150)],
        content=body,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert_error(r, 414, "TAG_INVALID")
    assert registry.count("tags") == 0
