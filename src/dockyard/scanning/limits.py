"""What one image scan may unpack, and the streaming count that enforces it before syft runs.

Anyone who may push controls the bytes syft unpacks: a 2 MB gzip layer can inflate to 2 GB on
disk, a 1 MB layer can hold a 1 GiB dpkg status that syft loads whole, and a million tiny files
cost syft gigabytes of index. So every layer is first read as a stream (decompressed in memory,
never written anywhere) and its bytes, entries and package-database file sizes are counted; the
scan stops at the first cap it crosses, naming the layer and the setting. syft itself then runs
under resource limits (see syft_runner.py) as a second line.
"""

from __future__ import annotations

import fnmatch
import gzip
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import zstandard

GiB = 1 << 30
MiB = 1 << 20
READ_CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Files syft reads whole into memory to list packages: dpkg, apk, rpm, pacman databases and
# the language manifests and lock files. A hostile one can be tiny compressed and huge inside.
PACKAGE_DB_PATHS = (
    "var/lib/dpkg/status",
    "var/lib/dpkg/status.d/*",
    "var/lib/dpkg/info/*",
    "lib/apk/db/installed",
    "var/lib/rpm/*",
    "usr/lib/sysimage/rpm/*",
    "var/lib/pacman/local/*",
    "etc/os-release",
    "usr/lib/os-release",
)
PACKAGE_DB_NAMES = (
    "METADATA", "PKG-INFO", "RECORD", "package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml",
    "composer.lock", "installed.json", "Gemfile.lock", "*.gemspec", "Cargo.lock", "go.mod", "go.sum",
    "requirements*.txt", "poetry.lock", "Pipfile.lock", "uv.lock", "pom.properties", "pom.xml",
    "*.deps.json", "mix.lock", "rebar.lock", "pubspec.lock", "conan.lock", "*.cabal", "stack.yaml.lock",
    "packages.lock.json", "*.nuspec",
)  # fmt: skip


class SbomError(Exception):
    """The image could not be catalogued; the message says why, for the scan report."""


class ScanTimedOut(SbomError):
    """The scan ran past scan_timeout_seconds and was killed."""


class ScanLimitExceeded(SbomError):
    """An image crosses one of the scan caps; the message names the layer and the setting."""


@dataclass(frozen=True)
class ScanLimits:
    """The caps on one image scan. Field names are the settings' names without `scan_`."""

    max_unpacked_bytes: int = 16 * GiB  # all layers' decompressed tar streams together
    max_files: int = 500_000  # tar entries over all layers
    max_package_db_bytes: int = 256 * MiB  # one package-database file (PACKAGE_DB_*)
    max_memory_bytes: int = 4 * GiB  # syft's address space (RLIMIT_AS); the parser's too
    max_packages: int = 50_000  # packages syft may report
    max_sbom_bytes: int = 256 * MiB  # each document syft writes (SPDX and syft-json)

    @property
    def disk_budget(self) -> int:
        """Bytes the job's temp dir may hold while syft runs: its copies of the layers, the
        archives it unpacks from them, and its two output documents."""
        return 2 * self.max_unpacked_bytes + 2 * self.max_sbom_bytes

    @property
    def file_size_limit(self) -> int:
        """RLIMIT_FSIZE for syft: its largest file is one decompressed layer or one document."""
        return max(self.max_unpacked_bytes, self.max_sbom_bytes) + MiB

    def as_dict(self) -> dict:
        return asdict(self)


def human(size: int) -> str:
    """2147483648 -> '2 GiB', 1536 -> '1.5 KiB' (exact sizes keep no decimals)."""
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def is_package_db(path: str) -> bool:
    """Whether syft would read the file at `path` (a tar member name) as a package database."""
    path = path.lstrip("./").lstrip("/")
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path, p) for p in PACKAGE_DB_PATHS) or any(
        fnmatch.fnmatchcase(name, p) for p in PACKAGE_DB_NAMES
    )


class _CountingReader:
    """A read-only stream over a layer's decompressed bytes that stops at the image's byte cap."""

    def __init__(self, raw, digest: str, counter: "LayerCounter"):
        self.raw, self.digest, self.counter = raw, digest, counter

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(READ_CHUNK if n is None or n < 0 else n)
        self.counter.unpacked += len(data)
        if self.counter.unpacked > self.counter.limits.max_unpacked_bytes:
            raise ScanLimitExceeded(
                f"layer {self.digest} unpacks to more than {human(self.counter.limits.max_unpacked_bytes)} "
                "(scan_max_unpacked_bytes, counted over all the image's layers)"
            )
        return data


class LayerCounter:
    """Counts an image's layers one after another against one set of limits."""

    def __init__(self, limits: ScanLimits):
        self.limits = limits
        self.unpacked = 0
        self.files = 0

    def count(self, digest: str, path: Path) -> None:
        """Stream the layer at `path` through decompression and tar parsing, writing nothing.

        Raises ScanLimitExceeded at the first cap crossed; a stream that is not a tar archive
        (or is cut short) is refused too, since syft could read what we could not count."""
        with open(path, "rb") as blob:
            magic = blob.read(4)
            blob.seek(0)
            if magic.startswith(GZIP_MAGIC):
                stream = gzip.GzipFile(fileobj=blob, mode="rb")
            elif magic == ZSTD_MAGIC:
                stream = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
            else:
                stream = blob
            reader = _CountingReader(stream, digest, self)
            try:
                with tarfile.open(fileobj=reader, mode="r|") as tar:
                    for member in tar:
                        self._member(digest, member)
                    while reader.read(READ_CHUNK):
                        pass  # bytes after the end-of-archive marker still reach syft's disk
            except ScanLimitExceeded:
                raise
            except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as exc:
                raise ScanLimitExceeded(f"layer {digest} is not a readable tar stream: {exc}") from None

    def _member(self, digest: str, member: tarfile.TarInfo) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise ScanLimitExceeded(
                f"layer {digest} brings the image to more than {self.limits.max_files} files (scan_max_files)"
            )
        if member.issparse():
            # A sparse member stores only its data blocks; its size is the real size, holes included, and a
            # reader (syft's catalogers, an extractor) gets the holes as zeros. A 10 KiB tar can declare a
            # 1 GiB file, past the count of streamed bytes: count the real size.
            self.unpacked += member.size
            if self.unpacked > self.limits.max_unpacked_bytes:
                raise ScanLimitExceeded(
                    f"layer {digest}: sparse file {member.name} unpacks to {human(member.size)}, more than "
                    f"{human(self.limits.max_unpacked_bytes)} over all the image's layers (scan_max_unpacked_bytes)"
                )
        if member.isfile() and member.size > self.limits.max_package_db_bytes and is_package_db(member.name):
            raise ScanLimitExceeded(
                f"layer {digest}: package database {member.name} is {human(member.size)}, more than "
                f"{human(self.limits.max_package_db_bytes)} (scan_max_package_db_bytes)"
            )
