"""Tag listing, _catalog and the referrers API."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from .helpers import (
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    dumps,
    sha256,
)

REPO = "org/tools"
TAGS = ["v1", "B", "a", "latest", "1.0", "_x", "v10", "v2", "Z-last", "0"]


def _next_link(r) -> str | None:
    link = r.headers.get("link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"'), link
    assert link.startswith("<")
    return link[1 : link.index(">")]


@pytest.fixture
async def tagged(registry):
    digest, body = await registry.push_image(REPO, "v1", seed=1)
    for tag in TAGS[1:]:
        await registry.push_manifest(REPO, tag, body, OCI_MANIFEST)
    return digest


async def test_tags_list_sorted(registry, tagged):
    r = await registry.client.get(f"/v2/{REPO}/tags/list")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"name": REPO, "tags": sorted(TAGS)}
    assert "link" not in r.headers


async def test_tags_list_n(registry, tagged):
    r = await registry.client.get(f"/v2/{REPO}/tags/list", params={"n": 5})
    assert r.status_code == 200
    assert r.json()["tags"] == sorted(TAGS)[:5]
    link = _next_link(r)
    assert link is not None
    parts = urlsplit(link)
    assert parts.path == f"/v2/{REPO}/tags/list"
    q = parse_qs(parts.query)
    assert q["last"] == [sorted(TAGS)[4]] and q["n"] == ["5"]


async def test_tags_list_follow_links(registry, tagged):
    seen: list[str] = []
    url: str | None = f"/v2/{REPO}/tags/list?n=3"
    pages = 0
    while url:
        r = await registry.client.get(url)
        assert r.status_code == 200
        page = r.json()["tags"]
        assert len(page) <= 3
        seen += page
        url = _next_link(r)
        pages += 1
        assert pages < 10
    assert seen == sorted(TAGS)
    assert pages == 4


async def test_tags_list_last(registry, tagged):
    ordered = sorted(TAGS)
    r = await registry.client.get(f"/v2/{REPO}/tags/list", params={"last": ordered[2]})
    assert r.json()["tags"] == ordered[3:]
    r = await registry.client.get(f"/v2/{REPO}/tags/list", params={"last": ordered[2], "n": 2})
    assert r.json()["tags"] == ordered[3:5]
    # `last` is a value, not necessarily an existing tag
    r = await registry.client.get(f"/v2/{REPO}/tags/list", params={"last": "b"})
    assert r.json()["tags"] == [t for t in ordered if t > "b"]
    r = await registry.client.get(f"/v2/{REPO}/tags/list", params={"last": ordered[-1]})
    assert r.json()["tags"] == []
    assert "link" not in r.headers


async def test_tags_list_n_exact_remaining(registry, tagged):
    r = await registry.client.get(f"/v2/{REPO}/tags/list", params={"n": len(TAGS)})
    assert r.json()["tags"] == sorted(TAGS)
    assert "link" not in r.headers
    r = await registry.client.get(f"/v2/{REPO}/tags/list", params={"n": 1000})
    assert r.json()["tags"] == sorted(TAGS)
    assert "link" not in r.headers


async def test_tags_list_n_zero(registry, tagged):
    r = await registry.client.get(f"/v2/{REPO}/tags/list", params={"n": 0})
    assert r.status_code == 200
    assert r.json() == {"name": REPO, "tags": []}
    assert "link" not in r.headers


@pytest.mark.parametrize("n", ["abc", "-1", "1.5", "0x10", " "])
async def test_tags_list_bad_n(registry, tagged, n):
    r = await registry.client.get(f"/v2/{REPO}/tags/list", params={"n": n})
    assert_error(r, 400, "PAGINATION_NUMBER_INVALID")


async def test_tags_list_unknown_repo(registry):
    r = await registry.client.get("/v2/no/such/repo/tags/list")
    assert_error(r, 404, "NAME_UNKNOWN")


async def test_tags_list_isolated_per_repository(registry, tagged):
    await registry.push_image("org/tools-extra", "only-here", seed=3)
    r = await registry.client.get(f"/v2/{REPO}/tags/list")
    assert "only-here" not in r.json()["tags"]
    r = await registry.client.get("/v2/org/tools-extra/tags/list")
    assert r.json() == {"name": "org/tools-extra", "tags": ["only-here"]}


# -- catalog -----------------------------------------------------------------------------------

REPOS = ["zeta", "alpha/one", "alpha", "alpha-two", "b/c/d", "m.n_o"]


@pytest.fixture
async def repos(registry):
    for i, repo in enumerate(REPOS):
        await registry.push_image(repo, "t", seed=i)
    return sorted(REPOS)


async def test_catalog(registry, repos):
    r = await registry.client.get("/v2/_catalog")
    assert r.status_code == 200
    assert r.json() == {"repositories": repos}
    assert "link" not in r.headers


async def test_catalog_paging(registry, repos):
    seen: list[str] = []
    url: str | None = "/v2/_catalog?n=2"
    pages = 0
    while url:
        r = await registry.client.get(url)
        assert r.status_code == 200
        page = r.json()["repositories"]
        assert len(page) == 2
        seen += page
        url = _next_link(r)
        if url:
            assert urlsplit(url).path == "/v2/_catalog"
        pages += 1
        assert pages < 10
    assert seen == repos
    assert pages == 3


async def test_catalog_last_and_n_zero(registry, repos):
    r = await registry.client.get("/v2/_catalog", params={"last": repos[1], "n": 2})
    assert r.json()["repositories"] == repos[2:4]
    r = await registry.client.get("/v2/_catalog", params={"n": 0})
    assert r.json()["repositories"] == [] and "link" not in r.headers


async def test_catalog_bad_n(registry, repos):
    r = await registry.client.get("/v2/_catalog", params={"n": "many"})
    assert_error(r, 400, "PAGINATION_NUMBER_INVALID")


async def test_catalog_empty_registry(registry):
    r = await registry.client.get("/v2/_catalog")
    assert r.status_code == 200 and r.json() == {"repositories": []}


# -- referrers ---------------------------------------------------------------------------------

SIG = "application/vnd.example.signature"
SBOM = "application/vnd.example.sbom"


def _artifact(subject_digest: str, subject_size: int, artifact_type: str | None, annotation: str, *, config_type=OCI_EMPTY):
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": EMPTY_JSON_DIGEST, "size": 2},
        "layers": [{"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
        "annotations": {"org.example.name": annotation},
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    return dumps(doc)


@pytest.fixture
async def referrer_setup(registry):
    """Referrers pushed *before* their subject, then the subject; one index referrer too."""
    await registry.push_blob(REPO, EMPTY_JSON)
    # the subject's bytes are known up-front, so referrers can point at it before it exists
    config = dumps({"os": "linux", "subject": True})
    await registry.push_blob(REPO, config)
    subject_body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
            "layers": [],
        }
    )
    subject = sha256(subject_body)
    pushed = {}
    for name, art_type, config_type in [
        ("sig-1", SIG, OCI_EMPTY),
        ("sbom-1", SBOM, OCI_EMPTY),
        ("sig-2", SIG, OCI_EMPTY),
        ("cfg-typed", None, "application/vnd.example.config-typed"),
    ]:
        body = _artifact(subject, len(subject_body), art_type, name, config_type=config_type)
        r = await registry.put_manifest(REPO, sha256(body), body, OCI_MANIFEST)
        assert r.status_code == 201, r.text
        assert r.headers["oci-subject"] == subject
        pushed[name] = body
    # an index with a subject
    child_digest, child_body = await registry.push_image(REPO, seed=5)
    index_body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/vnd.example.bundle",
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child_digest, "size": len(child_body)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(subject_body)},
            "annotations": {"org.example.name": "index"},
        }
    )
    r = await registry.put_manifest(REPO, sha256(index_body), index_body, OCI_INDEX)
    assert r.status_code == 201 and r.headers["oci-subject"] == subject
    pushed["index"] = index_body
    # a referrer for something else, which must not show up
    other = _artifact(sha256(b"other subject"), 10, SIG, "other")
    await registry.push_manifest(REPO, sha256(other), other, OCI_MANIFEST)
    # finally the subject itself
    await registry.push_manifest(REPO, "subject", subject_body, OCI_MANIFEST)
    return subject, pushed


async def test_referrers(registry, referrer_setup):
    subject, pushed = referrer_setup
    r = await registry.client.get(f"/v2/{REPO}/referrers/{subject}")
    assert r.status_code == 200
    assert r.headers["content-type"] == OCI_INDEX
    assert "oci-filters-applied" not in r.headers
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert set(by_digest) == {sha256(b) for b in pushed.values()}
    expected_types = {
        "sig-1": SIG,
        "sbom-1": SBOM,
        "sig-2": SIG,
        "cfg-typed": "application/vnd.example.config-typed",
        "index": "application/vnd.example.bundle",
    }
    for name, body in pushed.items():
        d = by_digest[sha256(body)]
        assert d["size"] == len(body)
        assert d["mediaType"] == (OCI_INDEX if name == "index" else OCI_MANIFEST)
        assert d["artifactType"] == expected_types[name]
        assert d["annotations"] == {"org.example.name": name}


async def test_referrers_filtered(registry, referrer_setup):
    subject, pushed = referrer_setup
    r = await registry.client.get(f"/v2/{REPO}/referrers/{subject}", params={"artifactType": SIG})
    assert r.status_code == 200
    assert r.headers["oci-filters-applied"] == "artifactType"
    assert r.headers["content-type"] == OCI_INDEX
    digests = sorted(d["digest"] for d in r.json()["manifests"])
    assert digests == sorted([sha256(pushed["sig-1"]), sha256(pushed["sig-2"])])
    assert all(d["artifactType"] == SIG for d in r.json()["manifests"])
    r = await registry.client.get(f"/v2/{REPO}/referrers/{subject}", params={"artifactType": "application/none"})
    assert r.json()["manifests"] == []
    assert r.headers["oci-filters-applied"] == "artifactType"


async def test_referrers_unknown_subject(registry, referrer_setup):
    r = await registry.client.get(f"/v2/{REPO}/referrers/{sha256(b'nobody')}")
    assert r.status_code == 200
    assert r.headers["content-type"] == OCI_INDEX
    assert r.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


async def test_referrers_unknown_repository(registry):
    r = await registry.client.get(f"/v2/never/pushed/referrers/{sha256(b'x')}")
    assert r.status_code == 200
    assert r.json()["manifests"] == []


async def test_referrers_subject_never_pushed(registry, referrer_setup):
    r = await registry.client.get(f"/v2/{REPO}/referrers/{sha256(b'other subject')}")
    assert [d["annotations"] for d in r.json()["manifests"]] == [{"org.example.name": "other"}]


async def test_referrers_other_repository_not_listed(registry, referrer_setup):
    subject, _ = referrer_setup
    r = await registry.client.get(f"/v2/org/elsewhere/referrers/{subject}")
    assert r.status_code == 200 and r.json()["manifests"] == []


async def test_referrers_drop_deleted(registry, referrer_setup):
    subject, pushed = referrer_setup
    r = await registry.client.delete(f"/v2/{REPO}/manifests/{sha256(pushed['sig-1'])}")
    assert r.status_code == 202
    r = await registry.client.get(f"/v2/{REPO}/referrers/{subject}")
    assert sha256(pushed["sig-1"]) not in json.dumps(r.json())
    assert len(r.json()["manifests"]) == 4


@pytest.mark.parametrize("bad", ["sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:" + "a" * 63])
async def test_referrers_bad_digest(registry, bad):
    r = await registry.client.get(f"/v2/{REPO}/referrers/{bad}")
    assert_error(r, 400, "DIGEST_INVALID")
