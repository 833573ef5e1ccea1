"""regctl against a real `dockyard serve` (registry configured with `--tls disabled`):
image copy between repos, tag ls, artifacts with a subject and referrers listing."""

from __future__ import annotations

import json

import pytest

from tests.support.images import OCI_INDEX, OCI_MANIFEST, multiarch_oci_layout

pytestmark = pytest.mark.e2e

SBOM_TYPE = "application/vnd.dockyard.test.sbom.v1"
SIG_TYPE = "application/vnd.dockyard.test.signature.v1"


def _digest(clients, ref):
    return clients.run("regctl", "image", "digest", ref).stdout.strip()


def test_config_is_private(clients, registry):
    clients.run("regctl", "registry", "config", registry.host)
    config = json.loads((clients.root / "regctl" / "config.json").read_text())
    assert config["hosts"][registry.host]["tls"] == "disabled"


def test_image_copy_between_repos_and_tag_ls(clients, registry, tmp_path):
    image = multiarch_oci_layout()
    source = registry.fixture_tree(image)
    src = f"{registry.host}/regctl/src"
    # OCI layout -> Dockyard with regctl itself.
    clients.run("regctl", "image", "copy", f"ocidir://{image.path}:{image.tag}", f"{src}:v1")
    registry.assert_tree("regctl/src", source, "v1")
    assert _digest(clients, f"{src}:v1") == image.digest

    # Between repositories, then more tags.
    dst = f"{registry.host}/regctl/dst"
    clients.run("regctl", "image", "copy", f"{src}:v1", f"{dst}:v1")
    clients.run("regctl", "image", "copy", f"{dst}:v1", f"{dst}:v2")
    clients.run("regctl", "image", "copy", f"{src}:v1", f"{dst}:latest")
    registry.assert_tree("regctl/dst", source, "v1")
    for tag in ("v1", "v2", "latest"):
        assert _digest(clients, f"{dst}:{tag}") == image.digest
        registry.assert_manifest("regctl/dst", tag, image.digest, OCI_INDEX)
    raw = clients.run("regctl", "manifest", "get", "--format", "raw-body", f"{dst}:v2").stdout.encode()
    assert raw == source.manifests[image.digest][1]

    assert sorted(clients.run("regctl", "tag", "ls", dst).stdout.split()) == ["latest", "v1", "v2"]
    assert clients.run("regctl", "tag", "ls", src).stdout.split() == ["v1"]
    assert sorted(registry.tags("regctl/dst")) == ["latest", "v1", "v2"]

    # And back into a fresh layout.
    out = tmp_path / "out"
    clients.run("regctl", "image", "copy", f"{dst}:v2", f"ocidir://{out}:v2")
    registry.assert_same_tree(registry.verify_layout(out, "v2"), source)


def test_artifact_put_with_subject_and_list(clients, registry, tmp_path):
    image = multiarch_oci_layout()
    subject = f"{registry.host}/regctl/subject:v1"
    clients.run("regctl", "image", "copy", f"ocidir://{image.path}:{image.tag}", subject)
    assert _digest(clients, subject) == image.digest

    sbom = tmp_path / "sbom.json"
    sbom.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "name": "multi"}))
    clients.run("regctl", "artifact", "put", "--subject", subject, "--artifact-type", SBOM_TYPE,
                "--file", str(sbom), "--file-media-type", "application/spdx+json",
                "--annotation", "org.example.kind=sbom")
    sig = tmp_path / "sig.txt"
    sig.write_text("signature over the index\n")
    clients.run("regctl", "artifact", "put", "--subject", subject, "--artifact-type", SIG_TYPE,
                "--file", str(sig), "--file-media-type", "text/plain")

    body = json.loads(clients.run("regctl", "artifact", "list", subject, "--format", "body").stdout)
    assert body["mediaType"] == OCI_INDEX
    listed = {m["artifactType"]: m for m in body["manifests"]}
    assert set(listed) == {SBOM_TYPE, SIG_TYPE}
    assert listed[SBOM_TYPE]["annotations"]["org.example.kind"] == "sbom"

    # Same answer straight from the referrers API.
    api = registry.referrers("regctl/subject", image.digest)
    assert sorted(m["digest"] for m in api["manifests"]) == sorted(m["digest"] for m in listed.values())
    for art_type, m in listed.items():
        raw = registry.assert_manifest("regctl/subject", m["digest"], m["digest"], OCI_MANIFEST)
        doc = json.loads(raw)
        assert doc["subject"]["digest"] == image.digest
        assert doc["artifactType"] == art_type
    # No referrers-tag-schema fallback tag was created.
    assert registry.tags("regctl/subject") == ["v1"]

    filtered = json.loads(clients.run("regctl", "artifact", "list", subject, "--format", "body",
                                      "--filter-artifact-type", SIG_TYPE).stdout)
    assert [m["digest"] for m in filtered["manifests"]] == [listed[SIG_TYPE]["digest"]]

    # The artifact content comes back byte-identical.
    got = clients.run("regctl", "artifact", "get",
                      f"{registry.host}/regctl/subject@{listed[SBOM_TYPE]['digest']}").stdout
    assert got.encode() == sbom.read_bytes()

    # Copying with --referrers carries the referrers to another repository.
    copy = f"{registry.host}/regctl/subject-copy:v1"
    clients.run("regctl", "image", "copy", "--referrers", subject, copy)
    copied = json.loads(clients.run("regctl", "artifact", "list", copy, "--format", "body").stdout)
    assert sorted(m["digest"] for m in copied["manifests"]) == sorted(m["digest"] for m in listed.values())
    registry.assert_tree("regctl/subject-copy", registry.fixture_tree(image), "v1")
