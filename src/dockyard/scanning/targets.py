"""What can be scanned and gated: container images, and indexes through their images.

Signatures, SBOMs, attestations, Helm charts and other artifacts carry no root filesystem, so
they are neither scanned nor blocked (cosign must be able to pull the signature it verifies).
"""

from __future__ import annotations

import json

from dockyard.domain.manifests import IMAGE_TYPES, INDEX_TYPES

IMAGE_CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
_LAYER_PREFIXES = ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")

IMAGE = "image"
INDEX = "index"
OTHER = "other"


def classify(media_type: str, payload: bytes) -> str:
    """`image` (a root filesystem), `index`, or `other` (any artifact that is not an image)."""
    if media_type in INDEX_TYPES:
        return INDEX
    if media_type not in IMAGE_TYPES:
        return OTHER
    try:
        doc = json.loads(payload)
    except ValueError:
        return OTHER
    if not isinstance(doc, dict) or doc.get("subject") or doc.get("artifactType"):
        return OTHER  # referrers (SBOMs, bundles, attestations) are about an image, not images
    config = doc.get("config") or {}
    if config.get("mediaType") not in IMAGE_CONFIG_TYPES:
        return OTHER
    layers = doc.get("layers") or []
    if not all(isinstance(layer, dict) and str(layer.get("mediaType", "")).startswith(_LAYER_PREFIXES) for layer in layers):
        return OTHER  # cosign `.sig` manifests use an image config but simple-signing layers
    return IMAGE


def index_children(payload: bytes) -> list[str]:
    """Digests of the manifests an index lists (attestation manifests included; classify them)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return []
    return [m["digest"] for m in doc.get("manifests") or [] if isinstance(m, dict) and isinstance(m.get("digest"), str)]
