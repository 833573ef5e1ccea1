import hashlib
import json

import pytest

from dockyard.domain.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    parse_manifest,
)
from dockyard.errors import ManifestInvalid

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def image(media_type=OCI_MANIFEST, **extra):
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 3}],
    }
    doc.update(extra)
    return json.dumps(doc).encode()


def test_image_manifest_refs_and_digest():
    body = image()
    parsed = parse_manifest(body, OCI_MANIFEST)
    assert parsed.media_type == OCI_MANIFEST
    assert parsed.digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert parsed.blob_refs == [D1, D2]
    assert parsed.artifact_type == "application/vnd.oci.image.config.v1+json"


def test_artifact_type_and_subject():
    parsed = parse_manifest(image(artifactType="application/x-sbom", subject={"mediaType": OCI_MANIFEST, "digest": D3, "size": 5}, annotations={"k": "v"}), None)
    assert parsed.artifact_type == "application/x-sbom"
    assert parsed.subject == D3
    assert parsed.annotations == {"k": "v"}


def test_index_refs():
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": D1, "size": 1}]}).encode()
    parsed = parse_manifest(body, OCI_INDEX)
    assert parsed.is_index and parsed.manifest_refs == [D1] and parsed.blob_refs == []


def test_sniffs_when_media_type_absent():
    doc = json.loads(image())
    del doc["mediaType"]
    assert parse_manifest(json.dumps(doc).encode(), "application/json").media_type == OCI_MANIFEST
    idx = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert parse_manifest(idx, None).media_type == OCI_INDEX


def test_docker_types():
    assert parse_manifest(image(DOCKER_MANIFEST), DOCKER_MANIFEST).media_type == DOCKER_MANIFEST
    lst = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": []}).encode()
    assert parse_manifest(lst, DOCKER_LIST).media_type == DOCKER_LIST


def test_external_layers_are_not_references():
    doc = json.loads(image())
    doc["layers"].append({"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar", "digest": D3, "size": 1})
    doc["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D3, "size": 1, "urls": ["http://x"]})
    assert parse_manifest(json.dumps(doc).encode(), OCI_MANIFEST).blob_refs == [D1, D2]


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"{not json", OCI_MANIFEST),
        (b"[]", OCI_MANIFEST),
        (json.dumps({"schemaVersion": 1}).encode(), OCI_MANIFEST),
        (image(), OCI_INDEX),  # Content-Type does not match body mediaType
        (image(), "application/vnd.example+json"),
        (image(), "application/vnd.docker.distribution.manifest.v1+prettyjws"),
        (image(layers="nope"), OCI_MANIFEST),
        (image(config={"digest": "sha256:bad", "size": 1, "mediaType": "x"}), OCI_MANIFEST),
        (image(config={"digest": D1, "size": -1, "mediaType": "x"}), OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "x"}).encode(), OCI_INDEX),
        (image(annotations={"a": 1}), OCI_MANIFEST),
    ],
)
def test_invalid_manifests(body, content_type):
    with pytest.raises(ManifestInvalid):
        parse_manifest(body, content_type)
