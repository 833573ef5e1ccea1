"""The events of manifest and tag writers, so a push, a promotion and a retag describe themselves alike.

Every function here takes the writer's open transaction (domain/events.py `record`): the events
commit or roll back with the change. Signature classification lives here rather than in signing/
because domain must not import signing; it only reads media types, never verifies anything.
"""

from __future__ import annotations

import json
import re

from sqlalchemy import Connection

from dockyard.domain.events import record

# Media types that mark a manifest as a signature (signing/formats.py has the same constants).
_NOTATION = "application/vnd.cncf.notary.signature"
_COSIGN_SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
_COSIGN_ARTIFACT_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
_SIGSTORE_BUNDLE = re.compile(r"^application/vnd\.dev\.sigstore\.bundle(\.v0\.\d+\+json|\+json;version=0\.\d+)$")
_COSIGN_SIG_TAG = re.compile(r"^(sha256)-([0-9a-f]{64})\.sig$")


def signature_kind(media_type: str, artifact_type: str | None, payload: bytes, subject: str | None,
                   tags: list[str]) -> tuple[str, str] | None:
    """(format, signed digest) when the manifest is a cosign, cosign bundle or Notation signature."""
    if artifact_type == _NOTATION and subject:
        return "notation", subject
    if artifact_type and _SIGSTORE_BUNDLE.match(artifact_type) and subject:
        return "cosign-bundle", subject
    if artifact_type == _COSIGN_ARTIFACT_SIG and subject:
        return "cosign", subject
    for tag in tags:
        match = _COSIGN_SIG_TAG.match(tag)
        if match and _has_layer(payload, _COSIGN_SIMPLE_SIGNING):
            return "cosign", f"{match.group(1)}:{match.group(2)}"
    if subject and _has_layer(payload, None, bundle=True):
        return "cosign-bundle", subject
    return None


def _has_layer(payload: bytes, media_type: str | None, *, bundle: bool = False) -> bool:
    try:
        layers = json.loads(payload).get("layers") or []
    except (ValueError, AttributeError):
        return False
    for layer in layers:
        kind = layer.get("mediaType") if isinstance(layer, dict) else None
        if not isinstance(kind, str):
            continue
        if (bundle and _SIGSTORE_BUNDLE.match(kind)) or kind == media_type:
            return True
    return False


def manifest_written(
    conn: Connection,
    repository: str,
    *,
    digest: str,
    media_type: str,
    size: int,
    via: str,
    tags: dict[str, str | None],
    payload: bytes = b"",
    artifact_type: str | None = None,
    subject: str | None = None,
    new: bool = True,
    extra: dict | None = None,
) -> None:
    """artifact.pushed, a tag.updated per tag that now points elsewhere (`tags`: tag -> digest it
    pointed at before, None when new), and signature.attached when the manifest is a signature."""
    data = {"media_type": media_type, "size": size, "via": via, "tags": sorted(tags), "new": new}
    if extra:
        data.update(extra)
    # The event's own `tag` is set when the write named exactly one tag (a push by tag, the common
    # case) so tag filters and payload subjects see it; data.tags always lists every tag.
    only_tag = next(iter(tags)) if len(tags) == 1 else None
    record(conn, "artifact.pushed", repository=repository, digest=digest, tag=only_tag, data=data)
    for tag, previous in tags.items():
        if previous == digest:
            continue  # the tag already pointed here: nothing moved
        tag_data = {"via": via}
        if previous is not None:
            tag_data["previous_digest"] = previous
        record(conn, "tag.updated", repository=repository, digest=digest, tag=tag, data=tag_data)
    if new or tags:
        kind = signature_kind(media_type, artifact_type, payload, subject, list(tags))
        if kind is not None:
            record(conn, "signature.attached", repository=repository, digest=digest,
                   data={"format": kind[0], "subject": kind[1], "via": via})


def tag_deleted(conn: Connection, repository: str, tag: str, digest: str, *, via: str = "api") -> None:
    record(conn, "tag.deleted", repository=repository, tag=tag, digest=digest, data={"via": via})


def manifest_deleted(conn: Connection, repository: str, digest: str, media_type: str, tags: list[str], *,
                     via: str = "api", reason: dict | None = None) -> None:
    data = {"media_type": media_type, "tags": sorted(tags), "via": via}
    if reason:
        data.update(reason)
    record(conn, "artifact.deleted", repository=repository, digest=digest, data=data)
