"""Realistic test images, built once and cached.

Cache: ``${DOCKYARD_FIXTURES:-~/.cache/dockyard-fixtures}/v<FIXTURES_VERSION>/<name>/``
holding the image (``layout/`` for OCI image layouts, ``dir/`` for skopeo
``dir:`` images) and ``info.json`` describing it. Bump FIXTURES_VERSION when a
builder changes. Builds are locked (flock), so parallel test workers build once.

Every builder returns an :class:`ImageFixture`, which is also an
``os.PathLike`` for the image directory. Its ``ref`` is a skopeo/podman
transport reference (``oci:/path:tag`` or ``dir:/path``).

Only the Debian image needs network access (the Debian mirror, via
debootstrap) and root; the others are generated deterministically in Python,
so their digests are stable (given the same zlib).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .server import tool

FIXTURES_VERSION = "1"
FIXTURES_ROOT = Path(os.environ.get("DOCKYARD_FIXTURES") or Path.home() / ".cache" / "dockyard-fixtures")
FIXTURES_DIR = FIXTURES_ROOT / f"v{FIXTURES_VERSION}"
DEBIAN_MIRROR = os.environ.get("DOCKYARD_DEBIAN_MIRROR", "http://deb.debian.org/debian")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"
EPOCH_ISO = "2024-01-01T00:00:00Z"
EPOCH = 1704067200  # the same instant, as a Unix time


@dataclass(frozen=True)
class ImageFixture(os.PathLike):
    """A cached test image: an OCI layout (``transport="oci"``) or a skopeo ``dir:``."""

    path: Path
    transport: str  # "oci" or "dir"
    tag: str | None
    info: dict = field(compare=False, repr=False)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def ref(self) -> str:
        """skopeo/podman source reference, e.g. ``oci:/…/layout:bookworm``."""
        if self.transport == "oci":
            return f"oci:{self.path}:{self.tag}"
        return f"{self.transport}:{self.path}"

    @property
    def digest(self) -> str:
        """Digest of the top-level manifest (or index)."""
        return self.info["digest"]

    @property
    def media_type(self) -> str:
        return self.info["mediaType"]

    @property
    def package_count(self) -> int | None:
        """For the Debian image: packages installed per /var/lib/dpkg/status."""
        return self.info.get("packages")

    def blob_path(self, digest: str) -> Path:
        algo, hexpart = digest.split(":", 1)
        if self.transport == "oci":
            return self.path / "blobs" / algo / hexpart
        return self.path / hexpart


# --- cache -----------------------------------------------------------------------


def _cached(name: str, transport: str, tag: str | None, build: Callable[[Path], dict]) -> ImageFixture:
    """Return the fixture ``name``, building it with ``build(workdir)`` if needed.

    ``build`` creates the image under ``workdir/<transport dir>`` and returns
    the info dict (must include "digest" and "mediaType").
    """
    sub = "layout" if transport == "oci" else "dir"
    final = FIXTURES_DIR / name
    info_path = final / "info.json"
    if not info_path.exists():
        FIXTURES_DIR.mkdir(parents=True, exist_ok=True)
        with open(FIXTURES_DIR / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not info_path.exists():
                work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=FIXTURES_DIR))
                try:
                    info = build(work)
                    info.setdefault("fixtures_version", FIXTURES_VERSION)
                    (work / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
                    for leftover in [p for p in work.iterdir() if p.name not in (sub, "info.json")]:
                        _rmtree(leftover)
                    if final.exists():
                        _rmtree(final)
                    work.rename(final)
                finally:
                    if work.exists():
                        _rmtree(work)
    info = json.loads(info_path.read_text())
    return ImageFixture(path=final / sub, transport=transport, tag=tag, info=info)


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
    except subprocess.CalledProcessError as e:
        out = (e.stdout or b"").decode("utf-8", "replace")[-4000:]
        raise RuntimeError(f"command failed ({e.returncode}): {' '.join(cmd)}\n{out}") from None


# --- OCI layout writing (pure Python, deterministic) --------------------------------


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class _HashingWriter(io.RawIOBase):
    """Write-through wrapper that hashes and counts what passes."""

    def __init__(self, inner):
        self.inner, self.sha, self.size = inner, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        self.inner.write(b)
        return len(b)


class _RandomReader(io.RawIOBase):
    """``size`` deterministic pseudo-random (incompressible) bytes."""

    def __init__(self, seed: int | str, size: int):
        self.rng, self.left = random.Random(seed), size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return self.rng.randbytes(n)


class LayoutWriter:
    """Minimal writer for an OCI image layout."""

    def __init__(self, path: Path):
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        index = path / "index.json"
        self.index = json.loads(index.read_text()) if index.exists() else {
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}

    def blob(self, data: bytes, media_type: str, **extra) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (self.path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def layer(self, entries: Iterable[tuple[tarfile.TarInfo, io.RawIOBase | None]]) -> tuple[dict, str]:
        """Write a gzip'd tar layer streamed from (TarInfo, fileobj) pairs.

        Returns (descriptor, diff_id).
        """
        tmp = self.path / "blobs" / "sha256" / ".incoming"
        with open(tmp, "wb") as f:
            outer = _HashingWriter(f)
            with gzip.GzipFile(fileobj=outer, mode="wb", compresslevel=1, mtime=0) as gz:
                inner = _HashingWriter(gz)
                with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for info, fileobj in entries:
                        tar.addfile(info, fileobj)
        digest = "sha256:" + outer.sha.hexdigest()
        tmp.rename(self.path / "blobs" / "sha256" / digest[7:])
        return ({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": outer.size},
                "sha256:" + inner.sha.hexdigest())

    def image(self, layers: list[tuple[dict, str]], *, os_: str = "linux", arch: str = "amd64",
              variant: str | None = None, cmd: list[str] | None = None,
              annotations: dict | None = None) -> dict:
        """Write config + manifest for ``layers``; return the manifest descriptor."""
        config = {
            "created": EPOCH_ISO,
            "architecture": arch,
            "os": os_,
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "Cmd": cmd or ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
            "history": [{"created": EPOCH_ISO, "created_by": f"dockyard test fixture layer {i}"}
                        for i in range(len(layers))],
        }
        if variant:
            config["variant"] = variant
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(_canonical(config), OCI_CONFIG),
            "layers": [desc for desc, _ in layers],
        }
        if annotations:
            manifest["annotations"] = annotations
        platform = {"architecture": arch, "os": os_, **({"variant": variant} if variant else {})}
        return self.blob(_canonical(manifest), OCI_MANIFEST, platform=platform)

    def image_index(self, manifests: list[dict]) -> dict:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return self.blob(_canonical(index), OCI_INDEX)

    def tag(self, descriptor: dict, tag: str) -> None:
        desc = {k: v for k, v in descriptor.items() if k != "platform"}
        desc["annotations"] = {REF_NAME: tag}
        self.index["manifests"] = [m for m in self.index["manifests"]
                                   if m.get("annotations", {}).get(REF_NAME) != tag] + [desc]
        (self.path / "index.json").write_text(json.dumps(self.index, indent=2) + "\n")


def _tarinfo(name: str, size: int = 0, *, type_: bytes = tarfile.REGTYPE, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = size, type_, EPOCH
    info.mode = 0o755 if type_ == tarfile.DIRTYPE else mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _small_files(files: dict[str, bytes]) -> list[tuple[tarfile.TarInfo, io.BytesIO | None]]:
    """Tar entries (parents first) for a few small files."""
    entries, dirs = [], set()
    for name in sorted(files):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                entries.append((_tarinfo(d, type_=tarfile.DIRTYPE), None))
        entries.append((_tarinfo(name, len(files[name])), io.BytesIO(files[name])))
    return entries


def _layout_info(layout: Path, tag: str, **extra) -> dict:
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) == tag)
    top = json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
    info = {"tag": tag, "digest": desc["digest"], "mediaType": desc["mediaType"], "size": desc["size"]}
    if desc["mediaType"] == OCI_INDEX:
        info["manifests"] = [{"digest": m["digest"], "platform": m.get("platform")} for m in top["manifests"]]
    else:
        info["config"] = top["config"]["digest"]
        info["layers"] = [{"digest": x["digest"], "size": x["size"]} for x in top["layers"]]
        info["total_layer_bytes"] = sum(x["size"] for x in top["layers"])
    info.update(extra)
    return info


# --- fixtures ----------------------------------------------------------------------------


def debian_oci_layout() -> ImageFixture:
    """Minimal Debian bookworm (debootstrap minbase, one layer) as an OCI layout, tag ``bookworm``.

    ``.package_count`` (``info["packages"]``) is the number of packages
    installed according to the image's /var/lib/dpkg/status.
    Needs root, debootstrap, umoci and the Debian mirror; takes ~1 minute once.
    """
    tag = "bookworm"

    def build(work: Path) -> dict:
        layout, bundle = work / "layout", work / "bundle"
        umoci = tool("umoci")
        _run([umoci, "init", "--layout", str(layout)])
        _run([umoci, "new", "--image", f"{layout}:{tag}"])
        _run([umoci, "unpack", "--image", f"{layout}:{tag}", str(bundle)])
        rootfs = bundle / "rootfs"
        _run([tool("debootstrap"), "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR])
        packages = count_dpkg_packages(rootfs / "var/lib/dpkg/status")
        _slim_rootfs(rootfs)
        _run([umoci, "repack", "--image", f"{layout}:{tag}", str(bundle)])
        _run([umoci, "config", "--image", f"{layout}:{tag}",
              "--config.cmd", "bash", "--config.env", "LANG=C.UTF-8",
              "--author", "dockyard tests", "--os", "linux", "--architecture", "amd64"])
        _run([umoci, "gc", "--layout", str(layout)])
        return _layout_info(layout, tag, packages=packages, suite="bookworm", mirror=DEBIAN_MIRROR)

    return _cached("debian-bookworm", "oci", tag, build)


def count_dpkg_packages(status_file: Path) -> int:
    """Packages in state "install ok installed" in a dpkg status file."""
    text = Path(status_file).read_text(encoding="utf-8", errors="replace")
    return sum(1 for stanza in text.split("\n\n")
               if "\nStatus: install ok installed" in "\n" + stanza)


def _slim_rootfs(rootfs: Path) -> None:
    """Drop what Debian's container images drop: apt caches, lists, /dev nodes."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                    "var/lib/apt/lists/*_*", "dev/*", "var/log/bootstrap.log"):
        for p in rootfs.glob(pattern):
            _rmtree(p)


def multiarch_oci_layout() -> ImageFixture:
    """Image index (tag ``multi``) of two small images: linux/amd64 and linux/arm64/v8.

    Each platform image has two layers: a shared one (same digest in both)
    and a platform-specific one.
    """
    tag = "multi"

    def build(work: Path) -> dict:
        w = LayoutWriter(work / "layout")
        shared = w.layer(_small_files({
            "etc/os-release": b'NAME="Dockyard test"\nID=dockyard-test\n',
            "usr/share/doc/README": b"shared layer of the multi-arch test image\n",
        }))
        manifests = []
        for arch, variant in (("amd64", None), ("arm64", "v8")):
            files = {"etc/arch": f"{arch}\n".encode(),
                     f"opt/{arch}/blob.bin": random.Random(f"multi-{arch}").randbytes(64 * 1024)}
            own = w.layer(_small_files(files))
            manifests.append(w.image([shared, own], arch=arch, variant=variant, cmd=["cat", "/etc/arch"]))
        w.tag(w.image_index(manifests), tag)
        return _layout_info(w.path, tag)

    return _cached("multiarch", "oci", tag, build)


def big_oci_layout(total_mb: int = 380, layers: int = 5) -> ImageFixture:
    """One linux/amd64 image (tag ``big``) of ``layers`` gzip layers holding
    ``total_mb`` MiB of deterministic random (incompressible) data in all,
    largest layer first. Takes ~10 s to build once.
    """
    tag = "big"

    def build(work: Path) -> dict:
        w = LayoutWriter(work / "layout")
        total = total_mb * 1024 * 1024
        weights = list(range(layers, 0, -1))
        sizes = [total * wt // sum(weights) for wt in weights]
        sizes[0] += total - sum(sizes)
        descs = []
        for i, size in enumerate(sizes):
            name = f"data/layer-{i}.bin"
            entries = [(_tarinfo("data", type_=tarfile.DIRTYPE), None),
                       (_tarinfo(name, size), _RandomReader(f"big-{i}", size))]
            descs.append(w.layer(entries))
        w.tag(w.image(descs, cmd=["/bin/true"]), tag)
        return _layout_info(w.path, tag, total_mb=total_mb, layer_count=layers)

    return _cached(f"big-{total_mb}mb-{layers}l", "oci", tag, build)


def docker_v2s2_dir() -> ImageFixture:
    """The Debian image converted by skopeo to a Docker schema 2 manifest, as a
    skopeo ``dir:`` (manifest.json + blobs named by hex digest).

    Push it with e.g. ``skopeo copy --dest-tls-verify=false <fixture.ref> docker://HOST/repo:tag``
    (skopeo keeps the v2s2 manifest byte-for-byte, so the digest is stable).
    """
    source = debian_oci_layout()

    def build(work: Path) -> dict:
        out = work / "dir"
        _run([tool("skopeo"), "copy", "--quiet", "--format", "v2s2", source.ref, f"dir:{out}"])
        raw = (out / "manifest.json").read_bytes()
        manifest = json.loads(raw)
        if manifest.get("mediaType") != DOCKER_MANIFEST:
            raise RuntimeError(f"skopeo did not write a v2s2 manifest: {manifest.get('mediaType')}")
        return {
            "digest": "sha256:" + hashlib.sha256(raw).hexdigest(),
            "mediaType": DOCKER_MANIFEST,
            "size": len(raw),
            "config": manifest["config"]["digest"],
            "layers": [{"digest": x["digest"], "size": x["size"], "mediaType": x["mediaType"]}
                       for x in manifest["layers"]],
            "packages": source.package_count,
            "source": source.digest,
        }

    return _cached("debian-bookworm-v2s2", "dir", None, build)


def skopeo_copy(src: str, dest: str, *extra_args: str, all_images: bool = True) -> None:
    """``skopeo copy`` with TLS verification off (our registries speak plain HTTP)."""
    args = [tool("skopeo"), "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"]
    if all_images:
        args.append("--all")
    _run(args + list(extra_args) + [src, dest])
