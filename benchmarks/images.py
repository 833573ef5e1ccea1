"""Deterministic OCI image layouts for the benchmarks, cached under ~/.cache/dockyard-bench.

Each layer is a real (uncompressed) tar holding one file of deterministic random, incompressible bytes, so the
layout is a valid image that skopeo can copy, and two images built from different seeds share no blob.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("DOCKYARD_BENCH_CACHE", Path.home() / ".cache" / "dockyard-bench"))
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
FORMAT_VERSION = 1  # bump when the layout recipe changes, so stale caches are rebuilt


@dataclass(frozen=True)
class Layout:
    path: Path
    ref: str
    manifest_digest: str
    layer_digests: tuple[str, ...]
    total_bytes: int  # every blob plus the manifest: what a push or pull moves

    @property
    def oci_ref(self) -> str:
        return f"oci:{self.path}:{self.ref}"


def _write_blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / digest.split(":", 1)[1]).write_bytes(data)
    return digest, len(data)


def _layer_tar(blobs: Path, seed: str, index: int, size: int) -> tuple[str, int]:
    data = random.Random(f"{seed}/{index}").randbytes(size)
    info = tarfile.TarInfo(f"bench/{seed}/layer{index}.bin")
    info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
    tmp = blobs / f".tmp-layer{index}"
    with open(tmp, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    del data
    h = hashlib.sha256()
    with open(tmp, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    length = tmp.stat().st_size
    tmp.rename(blobs / digest.split(":", 1)[1])
    return digest, length


def build_layout(seed: str, layers: int, layer_bytes: int, ref: str = "latest") -> Layout:
    """Build (or reuse from the cache) an OCI layout with `layers` tar layers of `layer_bytes` random bytes."""
    path = CACHE_ROOT / f"{seed}-{layers}x{layer_bytes}-v{FORMAT_VERSION}"
    marker = path / "bench-layout.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta.get("ref") == ref:
            return Layout(path, ref, meta["manifest"], tuple(meta["layers"]), meta["total_bytes"])
    shutil.rmtree(path, ignore_errors=True)
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_descs = []
    for i in range(layers):
        digest, size = _layer_tar(blobs, seed, i, layer_bytes)
        layer_descs.append({"mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": size})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"dockyard.bench.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layer_descs]},  # uncompressed: same digest
    }
    config_digest, config_size = _write_blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    }
    manifest_digest, manifest_size = _write_blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    total = sum(d["size"] for d in layer_descs) + config_size + manifest_size
    layer_digests = tuple(d["digest"] for d in layer_descs)
    marker.write_text(
        json.dumps({"ref": ref, "manifest": manifest_digest, "layers": list(layer_digests), "total_bytes": total})
    )
    return Layout(path, ref, manifest_digest, layer_digests, total)
