"""crane against a real `dockyard serve`: push (layout and tarball), pull, copy, tag, ls,
catalog, digest, manifest and delete."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.images import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, debian_oci_layout, multiarch_oci_layout

pytestmark = pytest.mark.e2e


def _crane(clients, *args):
    return clients.run("crane", "--insecure", *args)


def _pushed_digest(stdout: str, ref_prefix: str) -> str:
    """crane push prints ``host/repo@sha256:…`` on stdout."""
    m = re.search(re.escape(ref_prefix) + r"@(sha256:[0-9a-f]{64})", stdout)
    assert m, f"no pushed digest for {ref_prefix} in crane output: {stdout!r}"
    return m.group(1)


@pytest.fixture(scope="module")
def _debian_push_cache():
    return {}


@pytest.fixture
def debian_pushed(clients, registry, _debian_push_cache):
    """The Debian OCI layout pushed with `crane push <layout>` to crane/debian:v1,
    once per module. Returns a function so that a failing push fails the test
    (rather than erroring in setup)."""

    def push():
        if "result" not in _debian_push_cache:
            image = debian_oci_layout()
            ref = f"{registry.host}/crane/debian"
            out = _crane(clients, "push", str(image.path), f"{ref}:v1").stdout
            _debian_push_cache["result"] = (image, _pushed_digest(out, ref))
        return _debian_push_cache["result"]

    return push


def test_push_layout(clients, registry, debian_pushed):
    image, digest = debian_pushed()
    assert digest == image.digest
    registry.assert_tree("crane/debian", registry.fixture_tree(image), "v1")
    assert _crane(clients, "digest", f"{registry.host}/crane/debian:v1").stdout.strip() == image.digest


def test_push_layout_as_index(clients, registry):
    """`crane push --index` pushes the layout's index.json itself (here: an index
    holding the multi-arch index), byte for byte."""
    image = multiarch_oci_layout()
    ref = f"{registry.host}/crane/multi"
    digest = _pushed_digest(_crane(clients, "push", "--index", str(image.path), f"{ref}:v1").stdout, ref)
    index_json = (image.path / "index.json").read_bytes()
    assert digest == registry.sha256_bytes(index_json)
    registry.assert_manifest("crane/multi", "v1", digest, OCI_INDEX, index_json)
    # The nested multi-arch index and everything below it, byte-identical.
    registry.assert_tree("crane/multi", registry.fixture_tree(image))
    assert _crane(clients, "manifest", f"{ref}:v1").stdout.encode() == index_json


def test_push_tarball(clients, registry, debian_pushed, tmp_path):
    """Pull to a docker-style tarball, push the tarball elsewhere: crane builds a
    Docker schema 2 manifest around the very same config and layer blobs."""
    image, _ = debian_pushed()
    tarball = tmp_path / "debian.tar"
    _crane(clients, "pull", f"{registry.host}/crane/debian:v1", str(tarball))
    ref = f"{registry.host}/crane/from-tarball"
    digest = _pushed_digest(_crane(clients, "push", str(tarball), f"{ref}:v1").stdout, ref)
    raw = registry.assert_manifest("crane/from-tarball", "v1", digest, DOCKER_MANIFEST)
    manifest = json.loads(raw)
    assert manifest["config"]["digest"] == image.info["config"]
    assert [l["digest"] for l in manifest["layers"]] == [l["digest"] for l in image.info["layers"]]
    registry.assert_tree("crane/from-tarball", registry.walk_tree(lambda d: raw, digest), "v1")
    assert _crane(clients, "digest", f"{ref}:v1").stdout.strip() == digest


def test_pull_oci_layout(clients, registry, debian_pushed, tmp_path):
    image, _ = debian_pushed()
    out = tmp_path / "pulled"
    _crane(clients, "pull", "--format", "oci", f"{registry.host}/crane/debian:v1", str(out))
    registry.assert_same_tree(registry.verify_layout(out), registry.fixture_tree(image))


def test_copy_tag_ls_catalog(clients, registry, debian_pushed):
    image, _ = debian_pushed()
    src, dst = f"{registry.host}/crane/debian:v1", f"{registry.host}/crane/copied:v1"
    _crane(clients, "copy", src, dst)
    registry.assert_tree("crane/copied", registry.fixture_tree(image), "v1")
    assert _crane(clients, "digest", dst).stdout.strip() == image.digest

    _crane(clients, "tag", dst, "stable")
    _crane(clients, "tag", dst, "2024.01")
    registry.assert_manifest("crane/copied", "stable", image.digest, OCI_MANIFEST)
    registry.assert_manifest("crane/copied", "2024.01", image.digest, OCI_MANIFEST)
    assert _crane(clients, "digest", f"{registry.host}/crane/copied:stable").stdout.strip() == image.digest

    listed = _crane(clients, "ls", f"{registry.host}/crane/copied").stdout.split()
    assert sorted(listed) == ["2024.01", "stable", "v1"]
    assert sorted(registry.tags("crane/copied")) == ["2024.01", "stable", "v1"]
    # The source repository is unchanged.
    assert _crane(clients, "ls", f"{registry.host}/crane/debian").stdout.split() == ["v1"]

    catalog = _crane(clients, "catalog", registry.host).stdout.split()
    assert {"crane/debian", "crane/copied"} <= set(catalog), catalog
    assert len(catalog) == len(set(catalog))


def test_digest_and_manifest(clients, registry, debian_pushed):
    image, _ = debian_pushed()
    ref = f"{registry.host}/crane/debian:v1"
    raw = _crane(clients, "manifest", ref).stdout.encode()
    assert raw == image.blob_path(image.digest).read_bytes()
    assert _crane(clients, "digest", ref).stdout.strip() == image.digest
    assert _crane(clients, "digest", f"{registry.host}/crane/debian@{image.digest}").stdout.strip() == image.digest
    config = _crane(clients, "config", ref).stdout.encode()
    assert registry.sha256_bytes(config) == image.info["config"]


def test_delete(clients, registry, debian_pushed):
    image, _ = debian_pushed()
    repo = "crane/doomed"
    ref = f"{registry.host}/{repo}"
    _crane(clients, "copy", f"{registry.host}/crane/debian:v1", f"{ref}:v1")
    registry.assert_manifest(repo, "v1", image.digest, OCI_MANIFEST)

    _crane(clients, "delete", f"{ref}@{image.digest}")

    registry.assert_manifest_gone(repo, image.digest)
    # The tag pointed at the deleted manifest: it must not serve it any more.
    registry.assert_manifest_gone(repo, "v1")
    failed = clients.run("crane", "--insecure", "manifest", f"{ref}@{image.digest}", check=False)
    assert failed.returncode != 0
    assert f"MANIFEST_UNKNOWN: manifest {image.digest} is not in repository" in failed.stderr, failed.stderr
    # Other repositories holding the same manifest are untouched.
    registry.assert_manifest("crane/debian", "v1", image.digest, OCI_MANIFEST)
    registry.assert_blob("crane/debian", image.info["layers"][0]["digest"], content=False)
