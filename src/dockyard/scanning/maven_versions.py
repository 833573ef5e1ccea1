"""Maven's ComparableVersion ordering (tokens, qualifiers alpha < beta < milestone < rc < snapshot < "" < sp)."""

from __future__ import annotations

import functools

from dockyard.scanning.ordering import CACHE_SIZE, VersionError, _KeyOrdering

# Items: ("i", int) numbers, ("s", qualifier) strings, ("l", [items]) sub-lists after "-".
_MAVEN_QUALIFIERS = ("alpha", "beta", "milestone", "rc", "snapshot", "", "sp")
_MAVEN_ALIASES = {"ga": "", "final": "", "release": "", "cr": "rc"}
_MAVEN_RELEASE = str(_MAVEN_QUALIFIERS.index(""))


def _maven_qualifier(value: str) -> str:
    """Sort key of a qualifier: known ones by rank, unknown ones after all of them, lexically."""
    if value in _MAVEN_QUALIFIERS:
        return str(_MAVEN_QUALIFIERS.index(value))
    return f"{len(_MAVEN_QUALIFIERS)}-{value}"


def _maven_string_item(value: str, followed_by_digit: bool) -> tuple:
    if followed_by_digit and len(value) == 1:
        value = {"a": "alpha", "b": "beta", "m": "milestone"}.get(value, value)
    return ("s", _MAVEN_ALIASES.get(value, value))


def _maven_is_null(item: tuple) -> bool:
    kind, value = item
    if kind == "i":
        return value == 0
    if kind == "s":
        return _maven_qualifier(value) == _MAVEN_RELEASE
    return not value


def _maven_normalize(items: list) -> None:
    for i in range(len(items) - 1, -1, -1):
        if _maven_is_null(items[i]):
            del items[i]
        elif items[i][0] != "l":
            break


@functools.lru_cache(maxsize=CACHE_SIZE)
def _maven_parse(version: str) -> tuple:
    text = version.strip().lower()
    if not text:
        raise VersionError("empty Maven version")
    root: list = []
    current = root
    stack = [root]
    is_digit = False
    start = 0

    def item(digit: bool, buf: str, followed_by_digit: bool = False) -> tuple:
        return ("i", int(buf)) if digit else _maven_string_item(buf, followed_by_digit)

    for i, c in enumerate(text):
        if c in ".-":
            current.append(("i", 0) if i == start else item(is_digit, text[start:i]))
            start = i + 1
            if c == "-":
                sub: list = []
                current.append(("l", sub))
                current = sub
                stack.append(sub)
        elif c.isdigit():
            if not is_digit and i > start:
                current.append(item(False, text[start:i], followed_by_digit=True))
                start = i
                sub = []
                current.append(("l", sub))
                current = sub
                stack.append(sub)
            is_digit = True
        else:
            if is_digit and i > start:
                current.append(item(True, text[start:i]))
                start = i
                sub = []
                current.append(("l", sub))
                current = sub
                stack.append(sub)
            is_digit = False
    if len(text) > start:
        current.append(item(is_digit, text[start:]))
    while stack:
        _maven_normalize(stack.pop())
    return _maven_freeze(("l", root))


def _maven_freeze(item: tuple) -> tuple:
    kind, value = item
    return (kind, tuple(_maven_freeze(x) for x in value)) if kind == "l" else item


def _maven_cmp(a: tuple | None, b: tuple | None) -> int:
    """ComparableVersion Item.compareTo; None is "no item here" (padding)."""
    if a is None:
        return 0 if b is None else -_maven_cmp(b, None)
    kind, value = a
    if kind == "i":
        if b is None:
            return 0 if value == 0 else 1
        if b[0] == "i":
            return (value > b[1]) - (value < b[1])
        return 1  # a number is newer than a qualifier or a sub-list
    if kind == "s":
        mine = _maven_qualifier(value)
        if b is None:
            return (mine > _MAVEN_RELEASE) - (mine < _MAVEN_RELEASE)
        if b[0] == "s":
            other = _maven_qualifier(b[1])
            return (mine > other) - (mine < other)
        return -1
    # list
    if b is None:
        return _maven_cmp(value[0], None) if value else 0
    if b[0] == "i":
        return -1
    if b[0] == "s":
        return 1
    left, right = value, b[1]
    for i in range(max(len(left), len(right))):
        x = left[i] if i < len(left) else None
        y = right[i] if i < len(right) else None
        r = -_maven_cmp(y, x) if x is None else _maven_cmp(x, y)
        if r:
            return r
    return 0


@functools.total_ordering
class _MavenKey:
    __slots__ = ("parsed",)

    def __init__(self, version: str):
        self.parsed = _maven_parse(version)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _MavenKey) and _maven_cmp(self.parsed, other.parsed) == 0

    def __lt__(self, other: _MavenKey) -> bool:
        return _maven_cmp(self.parsed, other.parsed) < 0

    def __hash__(self) -> int:  # normalisation makes equal versions parse identically
        return hash(self.parsed)


class MavenOrdering(_KeyOrdering):
    name = "maven"

    def key(self, version: str) -> _MavenKey:
        return _MavenKey(version)
