"""The pattern languages of tag rules, validated once when a rule is written and matched on every tag change.

Immutable rules use ONE glob syntax (wcmatch, GLOBSTAR | BRACE) for both the repository and the tag:
`*` matches within one path segment, `**` as a whole segment matches any number of segments (also
none), `?` one character, `[a-z]` / `[!a-z]` a class, `{a,b}` alternatives. Deny and require rules use
a full-match Python regular expression for the tag (anchored: `latest` matches only `latest`).
Documented in docs/tag-rules.md; a pattern that breaks these rules is refused with INVALID_REQUEST,
so a typo never silently protects nothing.
"""

from __future__ import annotations

import re

from wcmatch import glob

from dockyard.errors import InvalidRequest

GLOB_FLAGS = glob.GLOBSTAR | glob.BRACE
MAX_PATTERN_LENGTH = 255
# Brace expansion is capped so `{1..99999}` cannot blow up matching.
_EXPANSION_LIMIT = 256
_REPO_CHARS = re.compile(r"[a-z0-9._/\-*?\[\]{},!^]+")
_TAG_CHARS = re.compile(r"[A-Za-z0-9._\-*?\[\]{},!^]+")
# Fallback referrer tags (OCI referrers tag schema `sha256-<hex>`, cosign's `sha256-<hex>.sig|.att|.sbom`):
# clients move them whenever a signature or SBOM is added, so rules skip them unless a rule names them.
_REFERRER_TAG = re.compile(r"sha(256|512)-[0-9a-f]{64,128}(\.[a-z]+)?")
_REFERRER_PREFIX = re.compile(r"^sha(256|512)-")


def is_referrer_tag(tag: str) -> bool:
    return _REFERRER_TAG.fullmatch(tag) is not None


def names_referrer_tags(tag_pattern: str) -> bool:
    """A rule "explicitly names" fallback referrer tags when its pattern starts with `sha256-` / `sha512-`."""
    return _REFERRER_PREFIX.match(tag_pattern) is not None


def _balanced(pattern: str) -> bool:
    pairs = {"]": "[", "}": "{"}
    stack: list[str] = []
    for ch in pattern:
        if ch in "[{":
            if stack and stack[-1] == "[":
                continue  # a literal inside a character class
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack[-1] != pairs[ch]:
                return False
            stack.pop()
    return not stack


def _check_glob(pattern: str, what: str, chars: re.Pattern[str]) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRequest(f"{what} must not be empty", detail={"pattern": ""})
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidRequest(f"{what} is longer than {MAX_PATTERN_LENGTH} characters", detail={"pattern": pattern[:300]})
    if not chars.fullmatch(pattern):
        raise InvalidRequest(
            f"{what} {pattern!r} has characters that can never match (allowed: name characters and * ? [ ] {{ }} , ! ^)",
            detail={"pattern": pattern},
        )
    if not _balanced(pattern):
        raise InvalidRequest(f"{what} {pattern!r} has an unbalanced [ ] or {{ }}", detail={"pattern": pattern})
    try:
        glob.translate(pattern, flags=GLOB_FLAGS, limit=_EXPANSION_LIMIT)
    except Exception as exc:  # wcmatch raises its own PatternLimitException, or ValueError
        raise InvalidRequest(f"{what} {pattern!r} is not a valid glob: {exc}", detail={"pattern": pattern}) from exc
    return pattern


def validate_repository_glob(pattern: str) -> str:
    """A repository glob: path segments joined by `/`, no leading/trailing `/`, no empty segment."""
    _check_glob(pattern, "repository pattern", _REPO_CHARS)
    if pattern.startswith("/") or pattern.endswith("/") or "//" in pattern:
        raise InvalidRequest(
            f"repository pattern {pattern!r} must be relative segments joined by single '/' (e.g. ** or app/*)",
            detail={"pattern": pattern},
        )
    return pattern


def validate_tag_glob(pattern: str) -> str:
    return _check_glob(pattern, "tag pattern", _TAG_CHARS)


def validate_tag_regex(pattern: str) -> str:
    """A full-match regular expression for deny/require rules."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRequest("tag pattern must not be empty", detail={"pattern": ""})
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidRequest(f"tag pattern is longer than {MAX_PATTERN_LENGTH} characters", detail={"pattern": pattern[:300]})
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InvalidRequest(f"tag pattern {pattern!r} is not a valid regular expression: {exc}", detail={"pattern": pattern}) from exc
    return pattern


def glob_matches(value: str, pattern: str) -> bool:
    try:
        return glob.globmatch(value, pattern, flags=GLOB_FLAGS, limit=_EXPANSION_LIMIT)
    except Exception:  # a stored pattern that no longer compiles protects nothing rather than failing pushes
        return False


def regex_matches(value: str, pattern: str) -> bool:
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return False
