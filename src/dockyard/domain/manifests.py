"""Parse and validate manifest bodies; the bytes themselves are stored untouched."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from dockyard.domain.names import validate_digest
from dockyard.errors import DigestInvalid, ManifestInvalid

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_IMAGE_CONFIG = "application/vnd.docker.container.image.v1+json"
IMAGE_CONFIG_TYPES = frozenset({OCI_IMAGE_CONFIG, DOCKER_IMAGE_CONFIG})
OCI_EMPTY = "application/vnd.oci.empty.v1+json"  # the empty descriptor of artifacts with no config
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json", "application/vnd.docker.distribution.manifest.v1+prettyjws")
IMAGE_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES
# Content-Types that say nothing about the manifest kind; the body decides.
_GENERIC_TYPES = {"", "application/json", "application/octet-stream"}
# Layers the registry does not hold: foreign / non-distributable, or fetched from `urls`.
_EXTERNAL_LAYER_MARKERS = ("nondistributable", "foreign")


@dataclass
class ParsedManifest:
    media_type: str
    digest: str
    payload: bytes
    blob_refs: list[str] = field(default_factory=list)
    manifest_refs: list[str] = field(default_factory=list)
    subject: str | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def bare_media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_manifest(payload: bytes, content_type: str | None, algorithm: str = "sha256") -> ParsedManifest:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ManifestInvalid("manifest JSON is nested too deeply") from exc
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("only schemaVersion 2 manifests are supported (Docker schema1 is not)")
    media_type = _resolve_media_type(doc, bare_media_type(content_type))
    digest = f"{algorithm}:{hashlib.new(algorithm, payload).hexdigest()}"
    parsed = ParsedManifest(media_type=media_type, digest=digest, payload=payload)
    if media_type in INDEX_TYPES:
        _parse_index(doc, parsed)
    else:
        _parse_image(doc, parsed)
    subject = doc.get("subject")
    if subject is not None:
        parsed.subject = _descriptor(subject, "subject")["digest"]
    annotations = doc.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise ManifestInvalid("annotations must be a map of strings")
        parsed.annotations = annotations
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid("artifactType must be a string")
    if artifact_type is None and media_type in IMAGE_TYPES:
        artifact_type = doc["config"].get("mediaType")
    parsed.artifact_type = artifact_type
    return parsed


def _resolve_media_type(doc: dict[str, Any], header_type: str) -> str:
    body_type = doc.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise ManifestInvalid("mediaType must be a string")
    if header_type in DOCKER_SCHEMA1 or body_type in DOCKER_SCHEMA1:
        raise ManifestInvalid("Docker schema1 manifests are not supported")
    if header_type not in _GENERIC_TYPES:
        if header_type not in MANIFEST_TYPES:
            raise ManifestInvalid(f"unsupported manifest media type {header_type!r}", detail={"mediaType": header_type})
        if body_type is not None and body_type != header_type:
            raise ManifestInvalid(
                f"Content-Type {header_type} does not match the manifest's mediaType {body_type}",
                detail={"contentType": header_type, "mediaType": body_type},
            )
        resolved = header_type
    elif body_type is not None:
        resolved = body_type
    else:
        resolved = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if resolved not in MANIFEST_TYPES:
        raise ManifestInvalid(f"unsupported manifest media type {resolved!r}", detail={"mediaType": resolved})
    if resolved in {DOCKER_MANIFEST, DOCKER_LIST} and body_type is None:
        raise ManifestInvalid("Docker manifests must carry their mediaType")
    return resolved


def _descriptor(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where} must be a descriptor object")
    digest, size, media_type = value.get("digest"), value.get("size"), value.get("mediaType")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where} has no digest")
    try:
        validate_digest(digest)
    except DigestInvalid as exc:
        raise ManifestInvalid(f"{where} has an invalid digest: {exc.message}", detail={"digest": digest}) from exc
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where} must have a non-negative integer size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where} must have a mediaType")
    # Checked like the top-level ones: signature verification, referrers listings and clients read
    # descriptor annotations, and a number or a list where a string belongs must not reach them.
    annotations = value.get("annotations")
    if annotations is not None and (not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values())):
        raise ManifestInvalid(f"{where}.annotations must be a map of strings")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(f"{where}.artifactType must be a string")
    return value


def _parse_image(doc: dict[str, Any], parsed: ParsedManifest) -> None:
    if "manifests" in doc:
        raise ManifestInvalid("an image manifest must not have a manifests list")
    config = _descriptor(doc.get("config"), "config")
    parsed.blob_refs.append(config["digest"])
    layers = doc.get("layers", [])
    if not isinstance(layers, list):
        raise ManifestInvalid("layers must be a list")
    for i, layer in enumerate(layers):
        layer = _descriptor(layer, f"layers[{i}]")
        external = layer.get("urls") or any(m in layer["mediaType"] for m in _EXTERNAL_LAYER_MARKERS)
        if not external:
            parsed.blob_refs.append(layer["digest"])


def _parse_index(doc: dict[str, Any], parsed: ParsedManifest) -> None:
    if "layers" in doc or "config" in doc:
        raise ManifestInvalid("an index must not have config or layers")
    children = doc.get("manifests")
    if not isinstance(children, list):
        raise ManifestInvalid("an index must have a manifests list")
    for i, child in enumerate(children):
        parsed.manifest_refs.append(_descriptor(child, f"manifests[{i}]")["digest"])
