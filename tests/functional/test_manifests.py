"""Manifests: push/pull/delete of every supported type, exact bytes, headers, and bad input."""

from __future__ import annotations

import hashlib
import json

import pytest

from .helpers import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    assert_error,
    descriptor,
    dumps,
    pattern,
    sha256,
)

REPO = "acme/web"


async def _state(registry, repo: str = REPO) -> tuple:
    """Snapshot of everything a manifest PUT could have changed."""
    return (
        registry.sql("SELECT digest, media_type FROM manifests ORDER BY id"),
        registry.sql("SELECT name, manifest_id FROM tags ORDER BY id"),
        registry.sql("SELECT manifest_id, kind, digest FROM manifest_references ORDER BY manifest_id, kind, digest"),
        registry.sql("SELECT digest, ref_count FROM blobs ORDER BY id"),
        registry.blob_objects(),
    )


async def _image_parts(registry, repo: str = REPO, *, docker: bool = False, seed: int = 1):
    config = dumps({"architecture": "arm64", "os": "linux", "seed": seed})
    layer = pattern(1234, seed=seed)
    await registry.push_blob(repo, config)
    await registry.push_blob(repo, layer)
    return (
        descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer),
    )


def _odd_bytes(doc_text: str) -> bytes:
    """JSON with unusual whitespace and key order: the registry must store these bytes verbatim."""
    return doc_text.encode()


async def _check_pull(registry, repo: str, reference: str, body: bytes, media_type: str) -> None:
    digest = sha256(body)
    for ref in (reference, digest):
        r = await registry.client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": media_type})
        assert r.status_code == 200, r.text
        assert r.content == body
        assert r.headers["content-type"] == media_type
        assert r.headers["docker-content-digest"] == digest
        assert r.headers["docker-distribution-api-version"] == "registry/2.0"
        h = await registry.client.head(f"/v2/{repo}/manifests/{ref}", headers={"Accept": media_type})
        assert h.status_code == 200
        assert h.content == b""
        assert h.headers["content-type"] == media_type
        assert h.headers["content-length"] == str(len(body))
        assert h.headers["docker-content-digest"] == digest
    stored = registry.scalar("SELECT payload FROM manifests WHERE digest = :d", d=digest)
    assert bytes(stored) == body


# -- happy paths ----------------------------------------------------------------------------


async def test_oci_manifest_by_tag_exact_bytes(registry):
    config, layer = await _image_parts(registry)
    body = _odd_bytes(
        '{\n  "layers" : [ %s ],\n\t"config":%s ,  "mediaType":"%s",\r\n "schemaVersion":   2,'
        ' "annotations": {"z": "1", "a": "\\u00e9"}   }\n\n'
        % (json.dumps(layer, indent=3), json.dumps(config), OCI_MANIFEST)
    )
    assert json.loads(body)  # valid JSON, just ugly
    r = await registry.put_manifest(REPO, "v1.0", body, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    digest = sha256(body)
    assert r.headers["docker-content-digest"] == digest
    assert r.headers["location"] == f"/v2/{REPO}/manifests/{digest}"
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert "oci-subject" not in r.headers
    await _check_pull(registry, REPO, "v1.0", body, OCI_MANIFEST)


async def test_oci_manifest_by_digest_creates_no_tag(registry):
    config, layer = await _image_parts(registry)
    body = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]})
    digest = sha256(body)
    r = await registry.put_manifest(REPO, digest, body, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == digest
    assert r.headers["location"] == f"/v2/{REPO}/manifests/{digest}"
    await _check_pull(registry, REPO, digest, body, OCI_MANIFEST)
    r = await registry.client.get(f"/v2/{REPO}/tags/list")
    assert r.status_code == 200 and r.json()["tags"] == []


async def test_oci_manifest_without_media_type_field(registry):
    config, layer = await _image_parts(registry)
    body = dumps({"schemaVersion": 2, "config": config, "layers": [layer]})
    await registry.push_manifest(REPO, "nomt", body, OCI_MANIFEST)
    await _check_pull(registry, REPO, "nomt", body, OCI_MANIFEST)


async def test_oci_manifest_with_no_layers(registry):
    await registry.push_blob(REPO, EMPTY_JSON)
    body = dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, EMPTY_JSON), "layers": []}
    )
    await registry.push_manifest(REPO, "empty", body, OCI_MANIFEST)
    await _check_pull(registry, REPO, "empty", body, OCI_MANIFEST)


async def test_docker_schema2_manifest(registry):
    config, layer = await _image_parts(registry, docker=True)
    body = _odd_bytes(
        '{"schemaVersion":2,\n"mediaType": "%s",\n"config": %s,\n"layers": [%s]}'
        % (DOCKER_MANIFEST, json.dumps(config, indent=1), json.dumps(layer))
    )
    await registry.push_manifest(REPO, "docker", body, DOCKER_MANIFEST)
    await _check_pull(registry, REPO, "docker", body, DOCKER_MANIFEST)


async def test_oci_index(registry):
    d1, b1 = await registry.push_image(REPO, seed=1)
    d2, b2 = await registry.push_image(REPO, seed=2)
    body = _odd_bytes(
        '{ "manifests":[{"mediaType":"%s","size":%d,"digest":"%s","platform":{"os":"linux","architecture":"amd64"}},'
        '  {"digest":"%s","mediaType":"%s","size":%d}],"schemaVersion":2, "mediaType":"%s" }'
        % (OCI_MANIFEST, len(b1), d1, d2, OCI_MANIFEST, len(b2), OCI_INDEX)
    )
    await registry.push_manifest(REPO, "multi", body, OCI_INDEX)
    await _check_pull(registry, REPO, "multi", body, OCI_INDEX)


async def test_docker_manifest_list(registry):
    d1, b1 = await registry.push_image(REPO, seed=1, media_type=DOCKER_MANIFEST)
    body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {"mediaType": DOCKER_MANIFEST, "size": len(b1), "digest": d1, "platform": {"architecture": "amd64", "os": "linux"}}
            ],
        }
    )
    await registry.push_manifest(REPO, "list", body, DOCKER_LIST)
    await _check_pull(registry, REPO, "list", body, DOCKER_LIST)


async def test_nested_index(registry):
    d1, b1 = await registry.push_image(REPO, seed=1)
    inner = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "size": len(b1), "digest": d1}]})
    di = await registry.push_manifest(REPO, sha256(inner), inner, OCI_INDEX)
    outer = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_INDEX, "size": len(inner), "digest": di}]})
    await registry.push_manifest(REPO, "outer", outer, OCI_INDEX)
    await _check_pull(registry, REPO, "outer", outer, OCI_INDEX)


async def test_artifact_with_artifact_type(registry):
    await registry.push_blob(REPO, EMPTY_JSON)
    payload = b"signature payload"
    await registry.push_blob(REPO, payload)
    body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom+json",
            "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2},
            "layers": [descriptor("application/vnd.example.sbom.layer", payload)],
        }
    )
    await registry.push_manifest(REPO, "sbom", body, OCI_MANIFEST)
    await _check_pull(registry, REPO, "sbom", body, OCI_MANIFEST)


async def test_subject_header_on_put(registry):
    subject_digest, subject_body = await registry.push_image(REPO, "base", seed=1)
    await registry.push_blob(REPO, EMPTY_JSON)
    body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2},
            "layers": [{"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_body)},
        }
    )
    r = await registry.put_manifest(REPO, sha256(body), body, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert r.headers["oci-subject"] == subject_digest


async def test_index_with_subject_header(registry):
    subject_digest, subject_body = await registry.push_image(REPO, "base", seed=1)
    d1, b1 = await registry.push_image(REPO, seed=2)
    body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/vnd.example.bundle",
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": d1, "size": len(b1)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_body)},
        }
    )
    r = await registry.put_manifest(REPO, sha256(body), body, OCI_INDEX)
    assert r.status_code == 201, r.text
    assert r.headers["oci-subject"] == subject_digest


async def test_tag_moves_to_new_manifest(registry):
    d1, b1 = await registry.push_image(REPO, "latest", seed=1)
    d2, b2 = await registry.push_image(REPO, "latest", seed=2)
    r = await registry.client.get(f"/v2/{REPO}/manifests/latest")
    assert r.headers["docker-content-digest"] == d2 and r.content == b2
    r = await registry.client.get(f"/v2/{REPO}/manifests/{d1}")
    assert r.status_code == 200 and r.content == b1


async def test_same_manifest_pushed_twice_is_idempotent(registry):
    d1, b1 = await registry.push_image(REPO, "a", seed=1)
    await registry.push_manifest(REPO, "a", b1, OCI_MANIFEST)
    await registry.push_manifest(REPO, "b", b1, OCI_MANIFEST)
    assert registry.count("manifests", "digest = :d", d=d1) == 1
    r = await registry.client.get(f"/v2/{REPO}/tags/list")
    assert r.json()["tags"] == ["a", "b"]


async def test_sha512_manifest_by_digest(registry):
    config, layer = await _image_parts(registry)
    body = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]})
    digest = "sha512:" + hashlib.sha512(body).hexdigest()
    r = await registry.put_manifest(REPO, digest, body, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == digest
    r = await registry.client.get(f"/v2/{REPO}/manifests/{digest}")
    assert r.status_code == 200 and r.content == body
    assert r.headers["docker-content-digest"] == digest


# -- deletes -----------------------------------------------------------------------------------


async def test_delete_tag_keeps_manifest(registry):
    digest, body = await registry.push_image(REPO, "v1", seed=1)
    await registry.push_manifest(REPO, "v1-alias", body, OCI_MANIFEST)
    r = await registry.client.delete(f"/v2/{REPO}/manifests/v1")
    assert r.status_code == 202
    r = await registry.client.get(f"/v2/{REPO}/manifests/v1")
    assert_error(r, 404, "MANIFEST_UNKNOWN")
    r = await registry.client.head(f"/v2/{REPO}/manifests/v1")
    assert r.status_code == 404
    r = await registry.client.get(f"/v2/{REPO}/manifests/{digest}")
    assert r.status_code == 200 and r.content == body
    r = await registry.client.get(f"/v2/{REPO}/manifests/v1-alias")
    assert r.status_code == 200
    r = await registry.client.get(f"/v2/{REPO}/tags/list")
    assert r.json()["tags"] == ["v1-alias"]
    r = await registry.client.delete(f"/v2/{REPO}/manifests/v1")
    assert_error(r, 404, "MANIFEST_UNKNOWN")


async def test_delete_manifest_removes_tags(registry):
    digest, body = await registry.push_image(REPO, "one", seed=1)
    await registry.push_manifest(REPO, "two", body, OCI_MANIFEST)
    other, _ = await registry.push_image(REPO, "keep", seed=2)
    r = await registry.client.delete(f"/v2/{REPO}/manifests/{digest}")
    assert r.status_code == 202
    for ref in (digest, "one", "two"):
        r = await registry.client.get(f"/v2/{REPO}/manifests/{ref}")
        assert_error(r, 404, "MANIFEST_UNKNOWN")
    r = await registry.client.get(f"/v2/{REPO}/tags/list")
    assert r.json()["tags"] == ["keep"]
    r = await registry.client.get(f"/v2/{REPO}/manifests/keep")
    assert r.status_code == 200
    assert registry.count("manifests", "digest = :d", d=digest) == 0
    r = await registry.client.delete(f"/v2/{REPO}/manifests/{digest}")
    assert_error(r, 404, "MANIFEST_UNKNOWN")


async def test_delete_manifest_unknown_repo(registry):
    r = await registry.client.delete(f"/v2/nope/manifests/{sha256(b'x')}")
    assert_error(r, 404, "NAME_UNKNOWN")


# -- pull errors --------------------------------------------------------------------------------


async def test_unknown_manifest(registry):
    await registry.push_image(REPO, "v1")
    for ref in ("missing", sha256(b"nope")):
        r = await registry.client.get(f"/v2/{REPO}/manifests/{ref}")
        assert_error(r, 404, "MANIFEST_UNKNOWN")
        r = await registry.client.head(f"/v2/{REPO}/manifests/{ref}")
        assert r.status_code == 404 and r.content == b""


async def test_unknown_repository_manifest(registry):
    r = await registry.client.get("/v2/does/not/exist/manifests/latest")
    assert_error(r, 404, "NAME_UNKNOWN")


async def test_totally_wrong_digest_reference(registry):
    await registry.push_image(REPO, "v1")
    r = await registry.client.get(f"/v2/{REPO}/manifests/sha256:totallywrong")
    assert_error(r, 400, "DIGEST_INVALID")


# -- push errors: each leaves nothing behind ---------------------------------------------------


@pytest.fixture
async def baseline(registry):
    """An existing image in REPO so 'nothing changed' is checked against a non-empty state."""
    await registry.push_image(REPO, "existing", seed=99)
    return await _state(registry)


async def _assert_unchanged(registry, baseline, *refs: str) -> None:
    assert await _state(registry) == baseline
    for ref in refs:
        r = await registry.client.get(f"/v2/{REPO}/manifests/{ref}")
        assert_error(r, 404, "MANIFEST_UNKNOWN")
    r = await registry.client.get(f"/v2/{REPO}/tags/list")
    assert r.json()["tags"] == ["existing"]


async def test_manifest_blob_unknown(registry, baseline):
    config, layer = await _image_parts(registry, seed=5)
    baseline = await _state(registry)
    missing = sha256(b"never uploaded layer")
    body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [layer, {"mediaType": OCI_LAYER, "digest": missing, "size": 20}],
        }
    )
    r = await registry.put_manifest(REPO, "broken", body, OCI_MANIFEST)
    err = assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert {e["code"] for e in err["errors"]} == {"MANIFEST_BLOB_UNKNOWN"}
    assert missing in json.dumps([e.get("detail") for e in err["errors"]])
    await _assert_unchanged(registry, baseline, "broken", sha256(body))


async def test_manifest_blob_unknown_config(registry, baseline):
    _, layer = await _image_parts(registry, seed=5)
    baseline = await _state(registry)
    missing_cfg = sha256(b"missing config")
    body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": missing_cfg, "size": 14},
            "layers": [layer],
        }
    )
    r = await registry.put_manifest(REPO, sha256(body), body, OCI_MANIFEST)
    err = assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert missing_cfg in json.dumps([e.get("detail") for e in err["errors"]])
    await _assert_unchanged(registry, baseline, sha256(body))


async def test_manifest_blob_only_in_other_repository(registry, baseline):
    config = dumps({"os": "linux", "other": True})
    layer = pattern(500, seed=42)
    await registry.push_blob("acme/other", config)
    await registry.push_blob("acme/other", layer)
    baseline = await _state(registry)
    body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, layer)],
        }
    )
    r = await registry.put_manifest(REPO, "stolen", body, OCI_MANIFEST)
    err = assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    details = json.dumps([e.get("detail") for e in err["errors"]])
    assert sha256(config) in details and sha256(layer) in details
    await _assert_unchanged(registry, baseline, "stolen", sha256(body))
    # and into a brand-new repository
    r = await registry.put_manifest("acme/fresh", "stolen", body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    await registry.assert_no_content("acme/fresh")


async def test_index_with_unknown_child(registry, baseline):
    d1, b1 = await registry.push_image(REPO, seed=1)
    baseline = await _state(registry)
    missing = sha256(b"no such child manifest")
    body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d1, "size": len(b1)},
                {"mediaType": OCI_MANIFEST, "digest": missing, "size": 100},
            ],
        }
    )
    r = await registry.put_manifest(REPO, "idx", body, OCI_INDEX)
    err = assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert missing in json.dumps([e.get("detail") for e in err["errors"]])
    assert d1 not in json.dumps([e.get("detail") for e in err["errors"]])
    await _assert_unchanged(registry, baseline, "idx", sha256(body))


async def test_index_child_only_in_other_repository(registry, baseline):
    d1, b1 = await registry.push_image("acme/other", seed=1)
    baseline = await _state(registry)
    body = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": d1, "size": len(b1)}]})
    r = await registry.put_manifest(REPO, "idx", body, OCI_INDEX)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    await _assert_unchanged(registry, baseline, "idx")


async def test_manifest_digest_mismatch(registry, baseline):
    config, layer = await _image_parts(registry)
    baseline = await _state(registry)
    body = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]})
    wrong = sha256(body + b" ")
    r = await registry.put_manifest(REPO, wrong, body, OCI_MANIFEST)
    assert_error(r, 400, "DIGEST_INVALID")
    await _assert_unchanged(registry, baseline, wrong, sha256(body))


MALFORMED = [
    b"",
    b"{",
    b"not json at all",
    b"[]",
    b'"string"',
    b"\xff\xfe\x00garbage",
    b'{"schemaVersion": 2, "mediaType": "%s", "config": "nope", "layers": []}' % OCI_MANIFEST.encode(),
    b'{"schemaVersion": 2, "mediaType": "%s", "layers": []}' % OCI_MANIFEST.encode(),
    b'{"schemaVersion": 2, "mediaType": "%s", "config": {"mediaType": "x", "digest": "sha256:abc", "size": 1}}'
    % OCI_MANIFEST.encode(),
    b'{"schemaVersion": 2, "mediaType": "%s", "config": {"mediaType": "x", "digest": "%s", "size": -1}}'
    % (OCI_MANIFEST.encode(), EMPTY_JSON_DIGEST.encode()),
    b'{"schemaVersion": 2, "mediaType": "%s", "manifests": {}}' % OCI_INDEX.encode(),
    b'{"schemaVersion": 3, "mediaType": "%s", "manifests": []}' % OCI_INDEX.encode(),
    b'{"mediaType": "%s", "manifests": []}' % OCI_INDEX.encode(),
]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
async def test_malformed_manifest(registry, baseline, body):
    media_type = OCI_INDEX if b"manifests" in body else OCI_MANIFEST
    r = await registry.put_manifest(REPO, "bad", body, media_type)
    assert_error(r, 400, "MANIFEST_INVALID")
    await _assert_unchanged(registry, baseline, "bad")


async def test_deeply_nested_json_manifest(registry, baseline):
    """A pathological (but small) JSON body must be a 400, not a server error."""
    depth = 100_000
    body = b'{"schemaVersion":2,"x":' + b"[" * depth + b"]" * depth + b"}"
    assert len(body) < 4 * 1024 * 1024
    r = await registry.put_manifest(REPO, "deep", body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")
    await _assert_unchanged(registry, baseline, "deep")


async def test_oversize_manifest(registry, baseline):
    filler = "x" * (4 * 1024 * 1024)
    body = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": [], "annotations": {"f": filler}})
    r = await registry.put_manifest(REPO, "huge", body, OCI_MANIFEST)
    assert_error(r, 413, "MANIFEST_INVALID")
    await _assert_unchanged(registry, baseline, "huge")


async def test_oversize_manifest_streamed_without_content_length(registry, baseline):
    chunk = b" " * 65536

    async def body():
        yield b'{"schemaVersion": 2, "padding": "'
        for _ in range(70):  # > 4 MiB
            yield chunk
        yield b'"}'

    r = await registry.client.put(
        f"/v2/{REPO}/manifests/huge", content=body(), headers={"Content-Type": OCI_MANIFEST}
    )
    assert_error(r, 413, "MANIFEST_INVALID")
    await _assert_unchanged(registry, baseline, "huge")


async def test_manifest_at_limit_is_accepted(registry):
    await registry.push_blob(REPO, EMPTY_JSON)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2},
        "layers": [],
        "annotations": {"pad": ""},
    }
    base = len(dumps(doc))
    doc["annotations"]["pad"] = "p" * (4 * 1024 * 1024 - base)
    body = dumps(doc)
    assert len(body) == 4 * 1024 * 1024
    await registry.push_manifest(REPO, "big", body, OCI_MANIFEST)
    r = await registry.client.get(f"/v2/{REPO}/manifests/big")
    assert r.content == body


@pytest.mark.parametrize(
    "content_type,body_type",
    [
        (OCI_INDEX, OCI_MANIFEST),
        (DOCKER_MANIFEST, OCI_MANIFEST),
        (OCI_MANIFEST, DOCKER_MANIFEST),
        (DOCKER_LIST, OCI_MANIFEST),
    ],
)
async def test_content_type_mismatch(registry, baseline, content_type, body_type):
    config, layer = await _image_parts(registry)
    baseline = await _state(registry)
    body = dumps({"schemaVersion": 2, "mediaType": body_type, "config": config, "layers": [layer]})
    r = await registry.put_manifest(REPO, "mismatch", body, content_type)
    assert_error(r, 400, "MANIFEST_INVALID")
    await _assert_unchanged(registry, baseline, "mismatch", sha256(body))


@pytest.mark.parametrize("content_type", ["application/vnd.example.unknown+json", "text/plain", "image/png"])
async def test_unknown_content_type(registry, baseline, content_type):
    config, layer = await _image_parts(registry)
    baseline = await _state(registry)
    body = dumps({"schemaVersion": 2, "config": config, "layers": [layer]})
    r = await registry.put_manifest(REPO, "weird", body, content_type)
    assert_error(r, 400, "MANIFEST_INVALID")
    await _assert_unchanged(registry, baseline, "weird", sha256(body))


async def test_unknown_media_type_in_body(registry, baseline):
    config, layer = await _image_parts(registry)
    baseline = await _state(registry)
    body = dumps({"schemaVersion": 2, "mediaType": "application/vnd.example+json", "config": config, "layers": [layer]})
    r = await registry.put_manifest(REPO, "weird", body, None)
    assert_error(r, 400, "MANIFEST_INVALID")
    await _assert_unchanged(registry, baseline, "weird")


@pytest.mark.parametrize("content_type", [DOCKER_SCHEMA1, "application/vnd.docker.distribution.manifest.v1+json", None])
async def test_schema1_rejected(registry, baseline, content_type):
    body = dumps(
        {
            "schemaVersion": 1,
            "name": REPO,
            "tag": "old",
            "architecture": "amd64",
            "fsLayers": [{"blobSum": sha256(b"x")}],
            "history": [{"v1Compatibility": "{}"}],
            "signatures": [],
        }
    )
    r = await registry.put_manifest(REPO, "old", body, content_type)
    assert_error(r, 400, "MANIFEST_INVALID")
    await _assert_unchanged(registry, baseline, "old")


async def test_docker_manifest_requires_media_type(registry, baseline):
    config, layer = await _image_parts(registry, docker=True)
    baseline = await _state(registry)
    body = dumps({"schemaVersion": 2, "config": config, "layers": [layer]})
    r = await registry.put_manifest(REPO, "nomt", body, DOCKER_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")
    await _assert_unchanged(registry, baseline, "nomt")


async def test_manifest_referencing_deleted_blob(registry, baseline):
    config, layer = await _image_parts(registry, seed=8)
    r = await registry.client.delete(f"/v2/{REPO}/blobs/{layer['digest']}")
    assert r.status_code == 202
    baseline = await _state(registry)
    body = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]})
    r = await registry.put_manifest(REPO, "gone", body, OCI_MANIFEST)
    err = assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert layer["digest"] in json.dumps([e.get("detail") for e in err["errors"]])
    await _assert_unchanged(registry, baseline, "gone")


async def test_index_child_that_is_a_blob_not_a_manifest(registry, baseline):
    blob = b"just a blob"
    await registry.push_blob(REPO, blob)
    baseline = await _state(registry)
    body = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, blob)]})
    r = await registry.put_manifest(REPO, "idx", body, OCI_INDEX)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    await _assert_unchanged(registry, baseline, "idx")


async def test_deletes_disabled(registry_factory, storage_driver):
    async with registry_factory(storage_driver, delete_enabled=False) as reg:
        digest, body = await reg.push_image(REPO, "v1")
        blob = json.loads(body)["layers"][0]["digest"]
        for path in (f"/v2/{REPO}/manifests/v1", f"/v2/{REPO}/manifests/{digest}", f"/v2/{REPO}/blobs/{blob}"):
            r = await reg.client.delete(path)
            assert_error(r, 405, "UNSUPPORTED")
        r = await reg.client.get(f"/v2/{REPO}/manifests/v1")
        assert r.status_code == 200
        r = await reg.client.get(f"/v2/{REPO}/blobs/{blob}")
        assert r.status_code == 200
        # cancelling an upload is not a content delete
        location = await reg.start_upload(REPO)
        r = await reg.client.delete(location)
        assert r.status_code == 204


async def test_configured_manifest_limit(registry_factory, storage_driver):
    async with registry_factory(storage_driver, max_manifest_bytes=2048) as reg:
        await reg.push_blob(REPO, EMPTY_JSON)
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2},
            "layers": [],
            "annotations": {"pad": "p" * 2100},
        }
        r = await reg.put_manifest(REPO, "big", dumps(doc), OCI_MANIFEST)
        assert_error(r, 413, "MANIFEST_INVALID")
        assert reg.count("manifests") == 0
        doc["annotations"]["pad"] = "p" * 100
        await reg.push_manifest(REPO, "small", dumps(doc), OCI_MANIFEST)
