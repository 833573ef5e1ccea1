"""Grammar of repository names, tags and digests (OCI distribution-spec §Pulling)."""

from __future__ import annotations

import re

from dockyard.errors import DigestInvalid, NameInvalid, TagInvalid

NAME_MAX_LENGTH = 255
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
# Algorithms we can verify, with the exact shape of their encoded part.
_ALGORITHMS = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}


def validate_name(name: str) -> str:
    if len(name) > NAME_MAX_LENGTH:
        raise NameInvalid(f"repository name is longer than {NAME_MAX_LENGTH} characters", detail={"name": name[:300]})
    if not _NAME_RE.fullmatch(name):
        raise NameInvalid(
            "repository name must be lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-'",
            detail={"name": name},
        )
    return name


def is_tag(reference: str) -> bool:
    return _TAG_RE.fullmatch(reference) is not None


def validate_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag):
        raise TagInvalid("tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", detail={"tag": tag[:300]})
    return tag


def looks_like_digest(reference: str) -> bool:
    return ":" in reference


def validate_digest(digest: str) -> str:
    """Accept only well-formed digests of algorithms we can verify."""
    if not _DIGEST_RE.fullmatch(digest):
        raise DigestInvalid("malformed digest", detail={"digest": digest[:300]})
    algorithm, _, encoded = digest.partition(":")
    pattern = _ALGORITHMS.get(algorithm)
    if pattern is None:
        raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}", detail={"digest": digest[:300]})
    if not pattern.fullmatch(encoded):
        raise DigestInvalid(f"malformed {algorithm} digest", detail={"digest": digest[:300]})
    return digest


def validate_reference(reference: str) -> tuple[str | None, str | None]:
    """Split a manifest reference into (tag, digest); exactly one is set."""
    if looks_like_digest(reference):
        return None, validate_digest(reference)
    return validate_tag(reference), None
