"""Hostile images for the scan limits, built in the test: a gzip bomb, a layer of many tiny
files, a huge dpkg status, many dpkg packages, and tar entries that point outside the layer.

Each is an OCI layout written with LayoutWriter; `Built.blob_path` reads its blobs back."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .images import LayoutWriter, _small_files, _tarinfo

DEBIAN_OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'


@dataclass(frozen=True)
class Built:
    root: Path
    digest: str
    manifest: bytes
    layers: list[str]
    blobs: dict[str, bytes]

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.split(":", 1)[1]


class _Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


class _Repeat(io.RawIOBase):
    """`unit` repeated until `size` bytes."""

    def __init__(self, unit: bytes, size: int):
        self.unit, self.left, self.pos = unit, size, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        reps = (n + self.pos) // len(self.unit) + 2
        out = (self.unit * reps)[self.pos : self.pos + n]
        self.pos = (self.pos + n) % len(self.unit)
        return out


def _image(root: Path, layer_entries: list[list]) -> Built:
    writer = LayoutWriter(root)
    layers = [writer.layer(entries) for entries in layer_entries]
    descriptor = writer.image(layers)
    writer.tag(descriptor, "latest")
    manifest = (root / "blobs" / "sha256" / descriptor["digest"][7:]).read_bytes()
    doc = json.loads(manifest)
    blobs = {d["digest"]: (root / "blobs" / "sha256" / d["digest"][7:]).read_bytes() for d in [doc["config"], *doc["layers"]]}
    return Built(root, descriptor["digest"], manifest, [d["digest"] for d, _ in layers], blobs)


def gzip_bomb(root: Path, unpacked: int) -> Built:
    """One layer: a single file of `unpacked` zero bytes (gzip makes it about 1/1000 the size)."""
    return _image(root, [[(_tarinfo("var/tmp/zeros", unpacked), _Zeros(unpacked))]])


def many_files(root: Path, count: int) -> Built:
    """One layer of `count` empty files in 100 directories."""
    entries = []
    for d in range(100):
        entries.append((_tarinfo(f"f/{d:02d}", type_=tarfile.DIRTYPE), None))
        entries += [(_tarinfo(f"f/{d:02d}/{i}"), None) for i in range(d, count, 100)]
    return _image(root, [entries])


def stanza(name: str, version: str = "1.0-1") -> str:
    return (
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: libs\nInstalled-Size: 10\n"
        f"Maintainer: Nobody <nobody@example.com>\nArchitecture: amd64\nVersion: {version}\n"
        f"Description: test package {name}\n\n"
    )


def huge_dpkg_status(root: Path, size: int) -> Built:
    """A Debian image whose /var/lib/dpkg/status is `size` bytes of one stanza repeated."""
    unit = stanza("bloat").encode()
    entries = _small_files({"etc/os-release": DEBIAN_OS_RELEASE, "var/lib/dpkg/.keep": b""})
    entries.append((_tarinfo("var/lib/dpkg/status", size), _Repeat(unit, size)))
    return _image(root, [entries])


def many_packages(root: Path, count: int) -> Built:
    """A Debian image whose dpkg status lists `count` distinct packages."""
    status = "".join(stanza(f"pkg{i:06d}") for i in range(count)).encode()
    return _image(root, [_small_files({"etc/os-release": DEBIAN_OS_RELEASE, "var/lib/dpkg/status": status})])


def escaping_entries(root: Path, host_dir: Path) -> Built:
    """A Debian image whose tar entries try to leave the layer: `../` and absolute names, and a
    symlink and a hardlink to a dpkg status on the host (in `host_dir`, listing `host-only`)."""
    host_status = host_dir / "status"
    entries = _small_files({"etc/os-release": DEBIAN_OS_RELEASE, "var/lib/dpkg/status.d/in-image": stanza("in-image").encode()})
    for name in (f"../../../../../../..{host_dir}/dotdot-escape", f"{host_dir}/absolute-escape"):
        entries.append((_tarinfo(name, 4), io.BytesIO(b"pwnd")))
    link = _tarinfo("var/lib/dpkg/status", type_=tarfile.SYMTYPE)
    link.linkname = str(host_status)
    hard = _tarinfo("var/lib/dpkg/status.d/hardlinked", type_=tarfile.LNKTYPE)
    hard.linkname = str(host_status)
    dotdot = _tarinfo("var/lib/dpkg/status.d/dotdot", type_=tarfile.SYMTYPE)
    dotdot.linkname = f"../../../../../../../..{host_status}"
    entries += [(link, None), (hard, None), (dotdot, None)]
    return _image(root, [entries])


# --- issue 19 items 3 and 5: hostile package text and versions the matcher cannot parse ----------

CLEAR_SCREEN = "\x1b[2J\x1b[H"
WINDOW_TITLE = "\x1b]0;pwned\x07"
OSC8_LINK = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
C1_CSI = "\x9b2J"
HOSTILE_PACKAGE = "hostilepkg"  # the source package the test advisory (hostile_advisory) names
UNPARSEABLE = "1.0-1!"


def dpkg_stanza(name: str, version: str, source: str | None = None, description: str = "test package") -> str:
    source_line = f"Source: {source}\n" if source else ""
    return (
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: libs\nInstalled-Size: 10\n"
        f"Maintainer: Nobody <nobody@example.com>\nArchitecture: amd64\n{source_line}Version: {version}\n"
        f"Description: {description}\n\n"
    )


def debian_with_packages(root: Path, stanzas: list[str]) -> Built:
    status = "".join(stanzas).encode()
    return _image(root, [_small_files({"etc/os-release": DEBIAN_OS_RELEASE, "var/lib/dpkg/status": status})])


def escape_sequences(root: Path) -> Built:
    """A Debian image whose dpkg status puts terminal escapes where they reach output:
    - a binary package of the advisory's source (a finding) with a window-title name and a
      clear-screen version;
    - a package with an OSC 8 link in its name and a C1 CSI in a version that does not parse (a
      matcher error); descriptions with the escapes too."""
    return debian_with_packages(root, [
        dpkg_stanza(f"evil{WINDOW_TITLE}pkg", f"1.0-1{CLEAR_SCREEN}", source=f"{HOSTILE_PACKAGE} (1.0-1)",
                    description=f"title{WINDOW_TITLE}{CLEAR_SCREEN}"),
        dpkg_stanza(f"link{OSC8_LINK}", f"0.9{C1_CSI}", source=HOSTILE_PACKAGE, description=f"link {OSC8_LINK}"),
    ])  # fmt: skip


def unparseable_version(root: Path) -> Built:
    """A Debian image with one package whose version (`1.0-1!`) no dpkg ordering accepts, and
    which a Critical advisory (hostile_advisory) covers."""
    return debian_with_packages(root, [dpkg_stanza(HOSTILE_PACKAGE, UNPARSEABLE)])


def hostile_advisory(directory: Path) -> Path:
    """An OSV record (Critical, CVSS 9.8) for Debian 12 `hostilepkg` before 2.0-1, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "schema_version": "1.6.0",
        "id": "DSA-9999-1",
        "summary": "hostilepkg - security update",
        "published": "2024-01-01T00:00:00Z",
        "modified": "2024-01-01T00:00:00Z",
        "aliases": ["CVE-2099-0001"],
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
        "affected": [{
            "package": {"ecosystem": "Debian:12", "name": HOSTILE_PACKAGE},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0-1"}]}],
        }],
    }  # fmt: skip
    path = directory / "DSA-9999-1.json"
    path.write_text(json.dumps(record))
    return path
