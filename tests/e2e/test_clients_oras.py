"""oras against a real `dockyard serve`: artifacts with their own artifactType,
referrers (attach / discover) and byte-identical pulls."""

from __future__ import annotations

import json
import random

import pytest

from tests.support.images import OCI_MANIFEST

pytestmark = pytest.mark.e2e

BUNDLE_TYPE = "application/vnd.dockyard.test.bundle.v1"
SIGNATURE_TYPE = "application/vnd.dockyard.test.signature.v1"
SBOM_TYPE = "application/vnd.dockyard.test.sbom.v1"


def _files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(random.Random("oras-model").randbytes(3 * 1024 * 1024 + 17))
    (src / "README.txt").write_text("dockyard oras e2e artifact\n")
    return src


def _push(clients, registry, src, repo, tag):
    # oras stores the file names (relative paths) as titles: run from src.
    out = clients.run("oras", "push", "--plain-http", "--artifact-type", BUNDLE_TYPE, "--format", "json",
                      f"{registry.host}/{repo}:{tag}",
                      "model.bin:application/octet-stream", "README.txt:text/plain", cwd=src).stdout
    return json.loads(out)


def test_push_pull_artifact(clients, registry, tmp_path):
    src = _files(tmp_path)
    pushed = _push(clients, registry, src, "oras/bundle", "v1")
    digest = pushed["digest"]
    assert pushed["artifactType"] == BUNDLE_TYPE
    assert pushed["mediaType"] == OCI_MANIFEST

    raw = registry.assert_manifest("oras/bundle", "v1", digest, OCI_MANIFEST)
    manifest = json.loads(raw)
    assert manifest["artifactType"] == BUNDLE_TYPE
    layers = {l["annotations"]["org.opencontainers.image.title"]: l for l in manifest["layers"]}
    assert set(layers) == {"model.bin", "README.txt"}
    for title, layer in layers.items():
        local = src / title
        assert layer["digest"] == registry.sha256_file(local)
        assert layer["size"] == local.stat().st_size
    registry.assert_tree("oras/bundle", registry.walk_tree(lambda d: raw, digest), "v1")

    fetched = clients.run("oras", "manifest", "fetch", "--plain-http", f"{registry.host}/oras/bundle:v1").stdout
    assert fetched.encode() == raw
    resolved = clients.run("oras", "resolve", "--plain-http", f"{registry.host}/oras/bundle:v1").stdout.strip()
    assert resolved == digest

    out = tmp_path / "out"
    clients.run("oras", "pull", "--plain-http", "-o", str(out), f"{registry.host}/oras/bundle@{digest}")
    pulled = {str(p.relative_to(out)): p for p in out.rglob("*") if p.is_file()}
    assert set(pulled) == {"model.bin", "README.txt"}, pulled
    for name, path in pulled.items():
        assert path.read_bytes() == (src / name).read_bytes(), f"{name} differs after pull"


def test_attach_discover_referrers(clients, registry, tmp_path):
    src = _files(tmp_path)
    subject = _push(clients, registry, src, "oras/signed", "v1")["digest"]

    sig = tmp_path / "signature.json"
    sig.write_text(json.dumps({"signed": subject, "by": "dockyard-e2e"}))
    sbom = tmp_path / "sbom.spdx.json"
    sbom.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "name": "bundle"}))
    attached = {}
    for art_type, path, mt in ((SIGNATURE_TYPE, sig, "application/json"),
                               (SBOM_TYPE, sbom, "application/spdx+json")):
        out = clients.run("oras", "attach", "--plain-http", "--artifact-type", art_type, "--format", "json",
                          f"{registry.host}/oras/signed:v1", f"{path.name}:{mt}", cwd=tmp_path).stdout
        info = json.loads(out)
        assert info["artifactType"] == art_type
        attached[art_type] = info["digest"]
        raw = registry.assert_manifest("oras/signed", info["digest"], info["digest"], OCI_MANIFEST)
        doc = json.loads(raw)
        assert doc["subject"]["digest"] == subject
        assert doc["artifactType"] == art_type

    # oras discover lists both referrers, with their types.
    discovered = json.loads(clients.run("oras", "discover", "--plain-http", "--format", "json",
                                        f"{registry.host}/oras/signed:v1").stdout)
    assert discovered["digest"] == subject
    found = {r["artifactType"]: r["digest"] for r in discovered["referrers"]}
    assert found == attached

    filtered = json.loads(clients.run("oras", "discover", "--plain-http", "--format", "json",
                                      "--artifact-type", SIGNATURE_TYPE,
                                      f"{registry.host}/oras/signed:v1").stdout)
    assert [r["digest"] for r in filtered["referrers"]] == [attached[SIGNATURE_TYPE]]

    # Served by the referrers API itself, not the tag-schema fallback.
    index = registry.referrers("oras/signed", subject)
    assert {m["artifactType"]: m["digest"] for m in index["manifests"]} == attached
    only_sbom = registry.referrers("oras/signed", subject, SBOM_TYPE)
    assert [m["digest"] for m in only_sbom["manifests"]] == [attached[SBOM_TYPE]]
    fallback_tag = subject.replace(":", "-")
    assert fallback_tag not in registry.tags("oras/signed"), "oras fell back to the referrers tag schema"
    assert registry.tags("oras/signed") == ["v1"]

    # The signature pulls back byte-identical.
    out = tmp_path / "sig-out"
    clients.run("oras", "pull", "--plain-http", "-o", str(out),
                f"{registry.host}/oras/signed@{attached[SIGNATURE_TYPE]}")
    pulled = [p for p in out.rglob("*") if p.is_file()]
    assert [p.name for p in pulled] == [sig.name]
    assert pulled[0].read_bytes() == sig.read_bytes()
