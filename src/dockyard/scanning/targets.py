"""What can be scanned and gated: container images, and indexes through their images.

Signatures, SBOMs, attestations, Helm charts and other artifacts carry no root filesystem, so
they are neither scanned nor blocked (cosign must be able to pull the signature it verifies).
"""

from __future__ import annotations

import json

from sqlalchemy import select

from dockyard.domain.manifests import IMAGE_CONFIG_TYPES, IMAGE_TYPES, INDEX_TYPES
from dockyard.metadata.db import Database
from dockyard.metadata.models import manifests, repositories
from dockyard.policy.lookups import IMAGE, INDEX, OTHER  # the kinds, named once for the gates too

_LAYER_PREFIXES = ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")



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
    # Decided by what a runtime would run (an image config and filesystem layers), not by `subject` or
    # `artifactType`: runtimes ignore both, so a pusher could otherwise add one to an unsigned image and
    # get it past require-signature and the severity gate. Real referrers have other configs or layers.
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        return OTHER
    config = doc.get("config") or {}
    if config.get("mediaType") not in IMAGE_CONFIG_TYPES:
        return OTHER
    layers = doc.get("layers") or []
    if not all(isinstance(layer, dict) and str(layer.get("mediaType", "")).startswith(_LAYER_PREFIXES) for layer in layers):
        return OTHER  # cosign `.sig` manifests use an image config but simple-signing layers
    return IMAGE


def index_children(payload: bytes) -> list[str]:
    """Digests of the manifests an index lists, each once (attestation manifests included; classify them).

    Once: an index may list one child any number of times, and each would be another syft run."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        return []
    return list(dict.fromkeys(m["digest"] for m in doc["manifests"] if isinstance(m, dict) and isinstance(m.get("digest"), str)))


class TargetReader:
    """Reads a repository's manifests to find what a scan or gate is about (one place for the
    scan service, the pull gate and the promotion gates)."""

    def __init__(self, db: Database):
        self.db = db

    @staticmethod
    def kind(media_type: str, payload: bytes) -> str:
        """`classify`, for the gates (policy.lookups.TargetLookup)."""
        return classify(media_type, payload)

    def manifest(self, repository: str, digest: str) -> tuple[str, bytes] | None:
        """(media type, exact bytes) of `digest` in `repository`, or None."""
        with self.db.read() as conn:
            row = conn.execute(
                select(manifests.c.media_type, manifests.c.payload)
                .join(repositories, repositories.c.id == manifests.c.repository_id)
                .where(repositories.c.name == repository, manifests.c.digest == digest)
            ).first()
        return None if row is None else (row.media_type, bytes(row.payload))

    def images(self, repository: str, digest: str, stored: tuple[str, bytes] | None = None) -> tuple[str, list[str]]:
        """(kind, image digests): the image itself, or the platform images an index lists here."""
        stored = stored or self.manifest(repository, digest)
        if stored is None:
            return OTHER, []
        kind = classify(*stored)
        if kind == IMAGE:
            return kind, [digest]
        if kind != INDEX:
            return kind, []
        children = index_children(stored[1])
        if not children:
            return kind, []
        with self.db.read() as conn:
            rows = conn.execute(
                select(manifests.c.digest, manifests.c.media_type, manifests.c.payload)
                .join(repositories, repositories.c.id == manifests.c.repository_id)
                .where(repositories.c.name == repository, manifests.c.digest.in_(children))
            ).all()
        found = {r.digest: classify(r.media_type, bytes(r.payload)) for r in rows}
        return kind, [c for c in dict.fromkeys(children) if found.get(c) == IMAGE]
