r"""The pattern language of tag rules, validated once when a rule is written and matched on every tag change.

ONE syntax for every kind of rule (immutable, deny, require) and for repositories: globs (wcmatch,
GLOBSTAR | BRACE): `*` matches within one path segment, `**` as a whole segment matches any number of
segments (also none), `?` one character, `[a-z]` / `[!a-z]` a class, `{a,b}` alternatives. A tag
pattern may instead be a regular expression, but only with the explicit prefix `re:` (RE2 syntax,
full match: `re:latest` matches only `latest`). A glob that looks like a regex (`release-.*`,
`^v`, `\d`, `+`, `(`, `|`, `$`, `]{7}`) and a `re:` pattern that looks like a glob (`re:v*`,
`re:{a,b}`, `re:[!x]`) are refused with a hint, so a typo never silently protects nothing (issue 15).
Matching runs on RE2 only (globs are translated to it), so its time is linear in the tag's length
whatever pattern a project admin saved: `(a+)+b` cannot stall a worker (issue 9, finding 3).
Documented in docs/tag-rules.md; a refused pattern is an INVALID_REQUEST naming it.
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
REGEX_PREFIX = "re:"
# A glob that looks like a regex: regex-only characters, a leading `^`, `.*` where a tag has no dot
# (start, after - _ .), or a `{n}` / `{n,m}` / `{n,}` repetition count after a class, brace or dot.
_REGEX_ONLY_CHARS = set("\\+()|$")
_REGEX_DOT_STAR = re.compile(r"(?:^|[-_.])\.[*+?]")
_REGEX_COUNT = re.compile(r"[\].}*]\{\d+(?:,\d*)?\}|\{\d+\}")
# A `re:` body that looks like a glob: `*` right after a name character (`v*`, `release-*`: as a regex
# that repeats the character), a leading `*`, `**`, `{a,b}` alternatives, or a `[!...]` glob class.
_GLOB_STAR = re.compile(r"(?:^|(?<!\\)[A-Za-z0-9_\-/])\*")
_GLOB_BRACES = re.compile(r"\{[^{}]*[^0-9,{}][^{}]*\}")


def is_referrer_tag(tag: str) -> bool:
    return _REFERRER_TAG.fullmatch(tag) is not None


def names_referrer_tags(tag_pattern: str) -> bool:
    """A rule "explicitly names" fallback referrer tags when its pattern (after `re:`) starts with `sha256-` / `sha512-`."""
    return _REFERRER_PREFIX.match(tag_pattern.removeprefix(REGEX_PREFIX)) is not None


def is_regex(tag_pattern: str) -> bool:
    return tag_pattern.startswith(REGEX_PREFIX)


def validate_tag_pattern(pattern: str) -> str:
    """A tag pattern of any rule kind: a glob, or `re:` + an RE2 regex; either refused if it looks like the other."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRequest("tag pattern must not be empty", detail={"pattern": ""})
    if is_regex(pattern):
        body = pattern[len(REGEX_PREFIX):]
        hint = _glob_hint(body)
        if hint:
            raise InvalidRequest(
                f"tag pattern {pattern!r} looks like a glob, not a regular expression ({hint}); drop the re: prefix to "
                "write a glob, or write the regex you mean (re:v.* for v followed by anything)",
                detail={"pattern": pattern, "hint": "glob"},
            )
        if literal := _impossible_literal(body):
            raise InvalidRequest(
                f"tag pattern {pattern!r} can never match a tag: it needs a literal {literal!r} and tags hold only "
                "letters, digits, '.', '_' and '-' (the pattern is matched against the tag alone)",
                detail={"pattern": pattern, "hint": "literal"},
            )
        validate_tag_regex(body)
        return pattern
    hint = _regex_hint(pattern)
    if hint:
        raise InvalidRequest(
            f"tag pattern {pattern!r} looks like a regular expression ({hint}); tag patterns are globs (v*, "
            f"release-*, v[0-9]*); write re:{pattern} for a regular expression (full match)",
            detail={"pattern": pattern, "hint": "regex"},
        )
    return validate_tag_glob(pattern)


def _regex_hint(pattern: str) -> str | None:
    if found := sorted(set(pattern) & _REGEX_ONLY_CHARS):
        return f"{' '.join(found)} only mean something in a regex"
    if pattern.startswith("^"):
        return "a leading ^ anchors a regex; globs always match the whole tag"
    if m := _REGEX_DOT_STAR.search(pattern):
        return f"{m.group().lstrip('-_')!r} is regex for 'anything'; the glob is *"
    if m := _REGEX_COUNT.search(pattern):
        return f"{m.group()!r} is a regex repetition count"
    return None


def _impossible_literal(body: str) -> str | None:
    """A character no tag holds (whitespace, `/`, `@`) written as a literal outside a class and unescaped: the
    regex then never matches, and the rule would protect nothing."""
    i, in_class = 0, False
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            i += 1
            i += body[i:i + 1] == "^"
            i += body[i:i + 1] == "]"  # a leading ] is a literal
            continue
        elif ch.isspace() or ch in "/@":
            return ch
        i += 1
    return None


def _glob_hint(body: str) -> str | None:
    if m := _GLOB_STAR.search(body):
        return f"{m.group()!r}: in a regex * repeats the character before it; 'anything' is .*"
    if m := _GLOB_BRACES.search(body):
        return f"{m.group()!r} is glob alternation; in a regex write (a|b)"
    if "[!" in body:
        return "[!...] is a glob class; a regex negates with [^...]"
    return None


def tag_matches(tag: str, pattern: str) -> bool:
    """Whether `tag` matches a stored tag pattern (glob, or `re:` regex), matched whole."""
    if is_regex(pattern):
        return regex_matches(tag, pattern[len(REGEX_PREFIX):])
    return glob_matches(tag, pattern)


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


def validate_new_tag_glob(pattern: str) -> str:
    """A glob-only tag pattern being saved (retention `tags`, webhook `tag_pattern`): refused like a tag rule's
    when it looks like a regex, since `release-.*` would select nothing (a keep rule that protects nothing).
    Only when written: policies stored before keep running as they are."""
    if hint := _regex_hint(pattern) if isinstance(pattern, str) else None:
        raise InvalidRequest(
            f"tag pattern {pattern!r} looks like a regular expression ({hint}); tag patterns here are globs "
            "(v*, release-*, v[0-9]*)",
            detail={"pattern": pattern, "hint": "regex"},
        )
    return validate_tag_glob(pattern)


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
