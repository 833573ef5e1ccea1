"""The pattern languages of tag rules, validated once when a rule is written and matched on every tag change.

Immutable rules use ONE glob syntax (wcmatch, GLOBSTAR | BRACE) for both the repository and the tag:
`*` matches within one path segment, `**` as a whole segment matches any number of segments (also
none), `?` one character, `[a-z]` / `[!a-z]` a class, `{a,b}` alternatives. Deny and require rules use
a full-match RE2 regular expression for the tag (anchored: `latest` matches only `latest`). Matching
runs on RE2 only (globs are translated to it), so its time is linear in the tag's length whatever
pattern a project admin saved: `(a+)+b` cannot stall a worker (issue 9, finding 3).
Documented in docs/tag-rules.md; a pattern that breaks these rules is refused with INVALID_REQUEST,
so a typo never silently protects nothing.
"""

from __future__ import annotations

import functools
import re

import bracex
import re2
from wcmatch import glob

from dockyard.errors import InvalidRequest

GLOB_FLAGS = glob.GLOBSTAR | glob.BRACE
MAX_PATTERN_LENGTH = 255
# Brace expansion is capped so `{1..99999}` cannot blow up matching.
_EXPANSION_LIMIT = 256
_RE2_MAX_MEM = 8 << 20  # per compiled pattern; a 255-character pattern needs far less
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
    if _compiled_glob(pattern) is None:
        raise InvalidRequest(f"{what} {pattern!r} expands to too much to match", detail={"pattern": pattern})
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
    """A full-match regular expression for deny/require rules, in RE2 syntax (no backreferences or lookaround)."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRequest("tag pattern must not be empty", detail={"pattern": ""})
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidRequest(f"tag pattern is longer than {MAX_PATTERN_LENGTH} characters", detail={"pattern": pattern[:300]})
    if _compiled_regex(pattern) is None:
        reason = _re2_error(pattern)
        raise InvalidRequest(
            f"tag pattern {pattern!r} is not a valid RE2 regular expression: {reason} (RE2 matches in linear time, "
            "so it has no backreferences or lookaround; repetition counts are at most 1000)",
            detail={"pattern": pattern, "reason": reason},
        )
    return pattern


def _re2_error(pattern: str) -> str:
    """RE2's own reason (`invalid character class range: z-a`): the fix is rarely the lookaround hint."""
    try:
        re2.compile(pattern, _re2_options())
    except re2.error as exc:
        raw = exc.args[0] if exc.args else ""
        return (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)) or "refused by RE2"
    return "refused by RE2"


# -- matching: RE2 only, so the time is linear in the tag's length whatever pattern was saved ---------


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is an INVALID_REQUEST, not a line on stderr
    options.max_mem = _RE2_MAX_MEM
    return options


@functools.lru_cache(maxsize=1024)
def _compiled_regex(pattern: str):
    try:
        return re2.compile(pattern, _re2_options())
    except re2.error:
        return None


@functools.lru_cache(maxsize=1024)
def _compiled_glob(pattern: str):
    try:
        alternatives = bracex.expand(pattern, limit=_EXPANSION_LIMIT)
        return re2.compile("|".join(f"(?:{glob_to_regex(alt)})" for alt in alternatives), _re2_options())
    except Exception:  # bracex's expansion limit, or a pattern RE2 cannot hold in max_mem
        return None


def glob_to_regex(pattern: str) -> str:
    """One brace-free glob as an RE2 regex (matched whole) with wcmatch's GLOBSTAR meaning.

    `*` / `?` / `[...]` stay within a segment; `**` as a whole segment is any number of segments
    (`a/**/b` matches `a/b`, `**/x` matches `x`, `a/**` matches `a/` and below, `**` alone anything);
    a segment of only `*` needs at least one character. Names never start with `.`, so wcmatch's
    hidden-file rule has nothing to act on."""
    segments = [s if s != "**" or i == 0 or segs[i - 1] != "**" else None for segs in [pattern.split("/")] for i, s in enumerate(segs)]
    segments = [s for s in segments if s is not None]
    if segments == ["**"]:
        return ".*"
    out = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
            continue
        out.append(_segment_regex(segment))
        if not last:
            out.append("/")
    return "".join(out)


def _segment_regex(segment: str) -> str:
    if segment and set(segment) == {"*"}:
        return "[^/]+"
    out, i = [], 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[" and (end := _class_end(segment, i)) is not None:
            out.append(_class_regex(segment[i + 1 : end]))
            i = end
        else:
            out.append(re2.escape(ch))
        i += 1
    return "".join(out)


def _class_end(segment: str, start: int) -> int | None:
    i = start + 1
    if i < len(segment) and segment[i] in "!^":
        i += 1
    if i < len(segment) and segment[i] == "]":
        i += 1  # a leading ] is a literal
    end = segment.find("]", i)
    return end if end != -1 else None


def _class_regex(body: str) -> str:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    escaped = "".join(ch if ch == "-" else "\\" + ch if ch in "\\]^[" else ch for ch in body)
    return f"[^/{escaped}]" if negate else f"[{escaped}]"


def glob_matches(value: str, pattern: str) -> bool:
    compiled = _compiled_glob(pattern)
    # A stored pattern that no longer compiles protects nothing rather than failing pushes.
    return compiled is not None and compiled.fullmatch(value) is not None


def regex_matches(value: str, pattern: str) -> bool:
    compiled = _compiled_regex(pattern)
    return compiled is not None and compiled.fullmatch(value) is not None
