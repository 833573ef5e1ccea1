"""podman (root, no daemon, vfs storage in tmp) against a real `dockyard serve`:
pull an image pushed by skopeo, push it back to another repository. No containers run."""

from __future__ import annotations

import json

import pytest

from tests.support.images import OCI_MANIFEST, debian_oci_layout

pytestmark = pytest.mark.e2e


def test_pull_and_push_back(clients, registry, tmp_path):
    image = debian_oci_layout()
    source = registry.fixture_tree(image)
    src = f"{registry.host}/podman/src:bookworm"
    clients.skopeo_copy(image.ref, f"docker://{src}")
    registry.assert_manifest("podman/src", "bookworm", image.digest, OCI_MANIFEST)

    # Pull.
    clients.run("podman", "pull", "--quiet", "--tls-verify=false", src)
    info = json.loads(clients.run("podman", "image", "inspect", src).stdout)
    assert len(info) == 1
    info = info[0]
    assert info["Digest"] == image.digest
    assert f"{registry.host}/podman/src@{image.digest}" in info["RepoDigests"]
    assert src in info["RepoTags"]
    # The image ID is the config digest; the layer's diff ID matches the config.
    config = json.loads(image.blob_path(image.info["config"]).read_bytes())
    assert "sha256:" + info["Id"] == image.info["config"]
    assert info["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
    # Really in the private vfs store, not the system one.
    listed = clients.run("podman", "images", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}").stdout.split("\n")
    assert f"{registry.host}/podman/src:bookworm {image.digest}" in listed
    assert any((clients.podman_root / "vfs" / "dir").iterdir())

    # Push back to another repository.
    dst = f"{registry.host}/podman/pushed:v1"
    digestfile = tmp_path / "digest"
    clients.run("podman", "push", "--quiet", "--tls-verify=false", "--digestfile", str(digestfile),
                src, f"docker://{dst}")
    pushed = digestfile.read_text().strip()
    assert pushed.startswith("sha256:") and len(pushed) == 71
    # podman writes an OCI manifest without a mediaType field: the registry must
    # serve it with the Content-Type podman pushed it with.
    raw = registry.assert_manifest("podman/pushed", "v1", pushed, OCI_MANIFEST)
    manifest = json.loads(raw)
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["config"]["digest"] == image.info["config"]
    assert len(manifest["layers"]) == len(image.info["layers"])
    registry.assert_tree("podman/pushed", registry.walk_tree(lambda d: raw, pushed, OCI_MANIFEST), "v1")

    # What podman pushed is the same image: pull it to a layout with skopeo and
    # compare the uncompressed layers with the config's diff IDs.
    out = tmp_path / "pushed-layout"
    clients.skopeo_copy(f"docker://{dst}", f"oci:{out}:v1")
    tree = registry.verify_layout(out, "v1")
    assert tree.top == pushed
    assert registry.sha256_file(out / "blobs" / "sha256" / image.info["config"][7:]) == image.info["config"]
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
        assert registry.gunzip_digest(out / "blobs" / "sha256" / layer["digest"][7:]) == diff_id

    # podman can pull its own push back: same image, the new repo digest recorded.
    clients.run("podman", "pull", "--quiet", "--tls-verify=false", dst)
    info2 = json.loads(clients.run("podman", "image", "inspect", dst).stdout)[0]
    assert info2["Id"] == info["Id"]
    assert f"{registry.host}/podman/pushed@{pushed}" in info2["RepoDigests"]

    # The original repository is untouched.
    registry.assert_tree("podman/src", source, "bookworm")
