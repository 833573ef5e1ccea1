"""Small real images for scanner and gate tests: a Java app whose jar is (or is not) Log4Shell.

The jar carries Maven `pom.properties`, which syft catalogues as `org.apache.logging.log4j:log4j-core`;
with the fixture advisory GHSA-jfh8-c2jp-5v3q (CVE-2021-44228, CVSS 10.0) 2.14.1 is Critical and
2.17.1 is clean. Deterministic: the same version always gives the same digests."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .images import OCI_MANIFEST, LayoutWriter, _small_files

VULNERABLE = "2.14.1"
FIXED = "2.17.1"
LOG4SHELL = "CVE-2021-44228"


def _jar(version: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as jar:
        for name, text in (
            ("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n"),
            (
                "META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties",
                f"groupId=org.apache.logging.log4j\nartifactId=log4j-core\nversion={version}\n",
            ),
        ):
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            jar.writestr(info, text)
    return buf.getvalue()


@dataclass(frozen=True)
class BuiltImage:
    layout: Path
    tag: str
    digest: str
    manifest: bytes
    blobs: dict[str, bytes]  # digest -> bytes (config and layers)

    @property
    def oci_ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def java_app(root: Path, log4j_version: str, tag: str = "latest", *, marker: str = "") -> BuiltImage:
    """An OCI layout at `root` with one image: /opt/app/lib/log4j-core-<v>.jar (+ a marker file)."""
    writer = LayoutWriter(root)
    files = {f"opt/app/lib/log4j-core-{log4j_version}.jar": _jar(log4j_version)}
    if marker:
        files["opt/app/MARKER"] = marker.encode()
    layer = writer.layer(_small_files(files))
    descriptor = writer.image([layer])
    writer.tag(descriptor, tag)
    manifest = (root / "blobs" / "sha256" / descriptor["digest"][7:]).read_bytes()
    doc = json.loads(manifest)
    blobs = {d["digest"]: (root / "blobs" / "sha256" / d["digest"][7:]).read_bytes() for d in [doc["config"], *doc["layers"]]}
    assert descriptor["mediaType"] == OCI_MANIFEST
    return BuiltImage(root, tag, descriptor["digest"], manifest, blobs)
