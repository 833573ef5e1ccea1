"""skopeo against a real `dockyard serve`: OCI layout / dir -> Dockyard -> fresh layout,
byte-identical manifests and blobs all the way."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support.images import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    big_oci_layout,
    debian_oci_layout,
    docker_v2s2_dir,
    multiarch_oci_layout,
)

pytestmark = pytest.mark.e2e


def _push(clients, registry, image, repo, tag, tmp_path, *extra):
    digestfile = tmp_path / f"{repo.replace('/', '_')}-{tag}.digest"
    clients.skopeo_copy(image.ref, f"docker://{registry.host}/{repo}:{tag}",
                        "--digestfile", str(digestfile), *extra)
    reported = digestfile.read_text().strip()
    assert reported == image.digest, f"skopeo reports {reported} for the push, source is {image.digest}"
    return reported


def test_debian_layout_roundtrip(clients, registry, tmp_path):
    image = debian_oci_layout()
    source = registry.fixture_tree(image)
    assert image.media_type == OCI_MANIFEST
    _push(clients, registry, image, "skopeo/debian", "bookworm", tmp_path)

    registry.assert_tree("skopeo/debian", source, "bookworm")
    assert registry.tags("skopeo/debian") == ["bookworm"]

    out = tmp_path / "pulled"
    clients.skopeo_copy(f"docker://{registry.host}/skopeo/debian:bookworm", f"oci:{out}:bookworm")
    registry.assert_same_tree(registry.verify_layout(out, "bookworm"), source)


def test_multiarch_index_roundtrip(clients, registry, tmp_path):
    image = multiarch_oci_layout()
    source = registry.fixture_tree(image)
    assert image.media_type == OCI_INDEX
    assert len(source.manifests) == 3  # index + two platform manifests
    _push(clients, registry, image, "skopeo/multi", "multi", tmp_path, "--multi-arch", "all")

    registry.assert_tree("skopeo/multi", source, "multi")
    index = json.loads(source.manifests[image.digest][1])
    platforms = {(m["platform"]["architecture"], m["platform"].get("variant")) for m in index["manifests"]}
    assert platforms == {("amd64", None), ("arm64", "v8")}

    out = tmp_path / "pulled"
    clients.skopeo_copy(f"docker://{registry.host}/skopeo/multi:multi", f"oci:{out}:multi", "--all")
    registry.assert_same_tree(registry.verify_layout(out, "multi"), source)


def test_docker_schema2_roundtrip_keeps_media_types(clients, registry, tmp_path):
    image = docker_v2s2_dir()
    source = registry.fixture_tree(image)
    assert image.media_type == DOCKER_MANIFEST
    _push(clients, registry, image, "skopeo/v2s2", "bookworm", tmp_path)

    raw = registry.assert_manifest("skopeo/v2s2", "bookworm", image.digest, DOCKER_MANIFEST)
    assert json.loads(raw)["mediaType"] == DOCKER_MANIFEST
    registry.assert_tree("skopeo/v2s2", source, "bookworm")

    # skopeo sees the same v2s2 manifest, byte for byte.
    inspected = clients.run("skopeo", "inspect", "--raw", "--tls-verify=false",
                            f"docker://{registry.host}/skopeo/v2s2:bookworm").stdout
    assert inspected.encode() == raw

    # dir: -> Dockyard -> dir: keeps everything (no conversion).
    out = tmp_path / "pulled-dir"
    clients.skopeo_copy(f"docker://{registry.host}/skopeo/v2s2:bookworm", f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == raw
    for digest, size in source.blobs.items():
        blob = out / digest[7:]
        assert blob.stat().st_size == size
        assert registry.sha256_file(blob) == digest


def test_big_multilayer_image_roundtrip(clients, registry, tmp_path):
    image = big_oci_layout()
    source = registry.fixture_tree(image)
    layers = image.info["layers"]
    assert len(layers) >= 5 and sum(l["size"] for l in layers) > 350 * 1024 * 1024
    _push(clients, registry, image, "skopeo/big", "big", tmp_path)

    registry.assert_tree("skopeo/big", source, "big")

    out = tmp_path / "pulled"
    try:
        clients.skopeo_copy(f"docker://{registry.host}/skopeo/big:big", f"oci:{out}:big")
        registry.assert_same_tree(registry.verify_layout(out, "big"), source)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_inspect_raw_and_list_tags(clients, registry, tmp_path):
    image = multiarch_oci_layout()
    source = registry.fixture_tree(image)
    repo = "skopeo/inspect"
    _push(clients, registry, image, repo, "v1", tmp_path, "--all")
    # More tags, copied registry -> registry.
    for tag in ("v2", "latest"):
        clients.skopeo_copy(f"docker://{registry.host}/{repo}:v1", f"docker://{registry.host}/{repo}:{tag}", "--all")

    for tag in ("v1", "v2", "latest"):
        raw = clients.run("skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry.host}/{repo}:{tag}").stdout.encode()
        assert raw == source.manifests[image.digest][1], f"inspect --raw {repo}:{tag}"
        registry.assert_manifest(repo, tag, image.digest, OCI_INDEX)

    # A platform manifest by digest.
    child = json.loads(source.manifests[image.digest][1])["manifests"][1]
    raw = clients.run("skopeo", "inspect", "--raw", "--tls-verify=false",
                      f"docker://{registry.host}/{repo}@{child['digest']}").stdout.encode()
    assert registry.sha256_bytes(raw) == child["digest"]

    # Parsed inspect, resolved to the arm64 image: skopeo reports the digest of
    # what the tag points to (the index) and the arm64 image's layers.
    info = json.loads(clients.run("skopeo", "inspect", "--tls-verify=false", "--override-arch", "arm64",
                                  "--override-variant", "v8",
                                  f"docker://{registry.host}/{repo}:v2").stdout)
    assert info["Digest"] == image.digest
    assert info["Architecture"] == "arm64"
    child_doc = json.loads(source.manifests[child["digest"]][1])
    assert info["Layers"] == [l["digest"] for l in child_doc["layers"]]
    assert sorted(info["RepoTags"]) == ["latest", "v1", "v2"]

    listed = json.loads(clients.run("skopeo", "list-tags", "--tls-verify=false",
                                    f"docker://{registry.host}/{repo}").stdout)
    assert listed["Repository"] == f"{registry.host}/{repo}"
    assert sorted(listed["Tags"]) == ["latest", "v1", "v2"]
    assert sorted(registry.tags(repo)) == ["latest", "v1", "v2"]
