"""Version orderings, one per ecosystem, behind one small interface.

OSV ranges are only meaningful in the ecosystem's own ordering: `1:1.2` beats `2.0` in dpkg,
`1.0_rc1` sorts before `1.0` in apk and `2.0.0-rc.1` before `2.0.0` in SemVer. Every ordering
exposes `key(version)` (a comparable, hashable value; parsed once and cached) and
`compare(a, b)` (-1, 0, 1). An unparseable version raises `VersionError`; callers decide
what that means, nothing here guesses.

| ordering | ecosystems                      | implementation                              |
|----------|---------------------------------|---------------------------------------------|
| dpkg     | Debian, Ubuntu                  | ours (deb-version(7))                       |
| apk      | Alpine, Wolfi, Chainguard       | ours (port of apk-tools version.c, extended |
|          |                                 | to multi-letter runs such as `0.9.8zh`)     |
| pep440   | PyPI                            | `packaging.version`                         |
| semver   | npm, crates.io, SEMVER ranges   | `semver` (build metadata ignored)           |
| go       | Go                              | `semver` after Go spelling normalisation    |
| maven    | Maven                           | ours (Maven ComparableVersion)              |
"""

from __future__ import annotations

import functools
import re
from typing import Any

import packaging.version
import semver

from dockyard.scanning.maven_versions import MavenOrdering
from dockyard.scanning.ordering import CACHE_SIZE, Ordering, UnsupportedEcosystem, VersionError, _KeyOrdering

__all__ = ["Ordering", "UnsupportedEcosystem", "VersionError", "MavenOrdering"]


# --- dpkg --------------------------------------------------------------------------------

_DPKG_END = ((0,), 0)  # what a string that has run out compares as: empty text, number 0


def _dpkg_char_weight(c: str) -> int:
    # `~` sorts before everything, even the end of the string; letters before other characters.
    if c == "~":
        return -1
    if c.isalpha() and c.isascii():
        return ord(c)
    return ord(c) + 256


def _dpkg_part_key(part: str) -> tuple:
    """deb-version(7) comparison of one upstream or revision string as a tuple.

    The part alternates a non-digit run and a digit run. Non-digit runs compare char by char
    with the end of the run as weight 0 (hence the 0 terminator), digit runs numerically
    (empty = 0). A trailing sentinel stands for "the string ended here", so `1.0~rc1` sorts
    before `1.0` and `1.0a` after it, as dpkg does."""
    pairs: list[tuple[tuple[int, ...], int]] = []
    i, n = 0, len(part)
    while i < n:
        j = i
        while j < n and not part[j].isdigit():
            j += 1
        text = tuple(_dpkg_char_weight(c) for c in part[i:j]) + (0,)
        k = j
        while k < n and part[k].isdigit():
            k += 1
        number = int(part[j:k]) if k > j else 0
        pairs.append((text, number))
        i = k
    if pairs == [_DPKG_END]:  # "0" == "" (a missing revision equals revision 0)
        pairs = []
    return tuple(pairs) + (_DPKG_END,)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _dpkg_key(version: str) -> tuple:
    v = version.strip()
    if not v:
        raise VersionError("empty dpkg version")
    epoch = 0
    if ":" in v:
        head, v = v.split(":", 1)
        if not head.isdigit():
            raise VersionError(f"dpkg version {version!r}: epoch must be a number")
        epoch = int(head)
    if "-" in v:
        upstream, revision = v.rsplit("-", 1)
        if not revision:
            raise VersionError(f"dpkg version {version!r}: empty revision")
    else:
        upstream, revision = v, ""
    if not upstream:
        raise VersionError(f"dpkg version {version!r}: empty upstream version")
    if re.search(r"[^A-Za-z0-9.+~:-]", upstream) or re.search(r"[^A-Za-z0-9.+~]", revision):
        raise VersionError(f"dpkg version {version!r}: invalid character")
    return (epoch, _dpkg_part_key(upstream), _dpkg_part_key(revision))


class DpkgOrdering(_KeyOrdering):
    name = "dpkg"

    def key(self, version: str) -> tuple:
        return _dpkg_key(version)


# --- apk ---------------------------------------------------------------------------------
# Token types in apk-tools' order; the order itself is part of the comparison.
_T_INVALID, _T_DIGIT_OR_ZERO, _T_DIGIT, _T_LETTER, _T_SUFFIX, _T_SUFFIX_NO, _T_REVISION_NO, _T_END = range(-1, 7)
_APK_PRE = ("alpha", "beta", "pre", "rc")
_APK_POST = ("cvs", "svn", "git", "hg", "p")


def _apk_next_type(t: int, s: str, i: int) -> tuple[int, int]:
    """apk-tools next_token(): the type of the token starting at s[i] and where it starts."""
    n = _T_INVALID
    if i >= len(s):
        return _T_END, i
    c = s[i]
    if t in (_T_DIGIT, _T_DIGIT_OR_ZERO) and c.islower():
        n = _T_LETTER
    elif t == _T_LETTER and c.isdigit():
        n = _T_DIGIT
    elif t == _T_SUFFIX and c.isdigit():
        n = _T_SUFFIX_NO
    else:
        if c == ".":
            n = _T_DIGIT_OR_ZERO
        elif c == "_":
            n = _T_SUFFIX
        elif c == "-":
            if i + 1 < len(s) and s[i + 1] == "r":
                n = _T_REVISION_NO
                i += 1
            else:
                n = _T_INVALID
        i += 1
    if n < t and not (
        (n == _T_DIGIT_OR_ZERO and t == _T_DIGIT)
        or (n == _T_SUFFIX and t == _T_SUFFIX_NO)
        or (n == _T_DIGIT and t == _T_LETTER)
    ):
        n = _T_INVALID
    return n, i


@functools.lru_cache(maxsize=CACHE_SIZE)
def _apk_tokens(version: str) -> tuple[tuple[Any, int], ...]:
    """The (value, type of the following token) pairs apk-tools' get_token() yields.

    Two deliberate deviations (see the comment at the leading-zero case, and this one): a letter token takes the whole run of lower-case letters, so
    OpenSSL's `0.9.8zh` orders after `0.9.8z` and `0.9.8y` (apk-tools stops at one letter and
    calls the rest invalid, which makes `0.9.8zg` equal `0.9.8zh`)."""
    s = version.strip()
    out: list[tuple[Any, int]] = []
    t, i = _T_DIGIT, 0
    while t not in (_T_END, _T_INVALID):
        if i >= len(s):
            out.append((0, _T_END))
            break
        v: Any = 0
        nt = _T_INVALID
        j = i
        if t == _T_DIGIT_OR_ZERO and s[j] == "0":
            while j < len(s) and s[j] == "0":
                j += 1
            v = -(j - i)  # leading zeros: "1.01" < "1.1", as apk-tools does
            # apk-tools then reads an empty number token when no digit follows the zeros, so
            # "1.0_rc1" would sort after "1.0"; we skip it and keep `_rc < (none)` true.
            nt = _T_DIGIT if j < len(s) and s[j].isdigit() else _T_INVALID
            if nt == _T_INVALID and j < len(s):
                t, j = _apk_next_type(_T_DIGIT, s, j)
                out.append((v, t))
                i = j
                continue
        elif t in (_T_DIGIT, _T_DIGIT_OR_ZERO, _T_SUFFIX_NO, _T_REVISION_NO):
            while j < len(s) and s[j].isdigit():
                j += 1
            v = int(s[i:j]) if j > i else 0
        elif t == _T_LETTER:
            while j < len(s) and s[j].islower():
                j += 1
            v = s[i:j]
        elif t == _T_SUFFIX:
            rest = s[i:]
            pre = next((p for p in _APK_PRE if rest.startswith(p)), None)
            if pre is not None:
                v, j = _APK_PRE.index(pre) - len(_APK_PRE), i + len(pre)
            else:
                post = next((p for p in _APK_POST if rest.startswith(p)), None)
                if post is None:
                    raise VersionError(f"apk version {version!r}: unknown suffix at {rest!r}")
                v, j = _APK_POST.index(post), i + len(post)
        i = j
        if i >= len(s):
            t = _T_END
        elif nt != _T_INVALID:
            t = nt
        else:
            t, i = _apk_next_type(t, s, i)
        out.append((v, t))
    if t == _T_INVALID or not s or not s[0].isdigit():
        raise VersionError(f"invalid apk version {version!r}")
    return tuple(out)


def _apk_compare(a: str, b: str) -> int:
    """Port of apk_version_compare_blob_fuzzy(fuzzy=False) over cached tokens."""
    ta, tb = _apk_tokens(a), _apk_tokens(b)
    at = bt = _T_DIGIT
    av: Any = 0
    bv: Any = 0
    k = 0
    while at == bt and at not in (_T_END, _T_INVALID) and av == bv:
        av, at = ta[k]
        bv, bt = tb[k]
        k += 1
    if av < bv:
        return -1
    if av > bv:
        return 1
    if at == bt:
        return 0
    # Equal so far; the longer one is newer unless what follows is a pre-release suffix.
    if at == _T_SUFFIX and ta[k][0] < 0:
        return -1
    if bt == _T_SUFFIX and tb[k][0] < 0:
        return 1
    if at > bt:
        return -1
    if bt > at:
        return 1
    return 0


@functools.total_ordering
class _ApkKey:
    __slots__ = ("version",)

    def __init__(self, version: str):
        _apk_tokens(version)  # validate now, not at the first comparison
        self.version = version

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ApkKey) and _apk_compare(self.version, other.version) == 0

    def __lt__(self, other: _ApkKey) -> bool:
        return _apk_compare(self.version, other.version) < 0

    def __hash__(self) -> int:  # equal keys must hash alike: hash the token values only
        return hash(tuple(v for v, _ in _apk_tokens(self.version)))

    def __repr__(self) -> str:
        return f"apk({self.version})"


class ApkOrdering(_KeyOrdering):
    name = "apk"

    def key(self, version: str) -> _ApkKey:
        return _ApkKey(version)

    def compare(self, a: str, b: str) -> int:
        return _apk_compare(a, b)


# --- PEP 440 -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=CACHE_SIZE)
def _pep440_key(version: str) -> packaging.version.Version:
    try:
        return packaging.version.Version(version)
    except packaging.version.InvalidVersion as exc:
        raise VersionError(f"invalid PEP 440 version {version!r}") from exc


class Pep440Ordering(_KeyOrdering):
    name = "pep440"

    def key(self, version: str) -> packaging.version.Version:
        return _pep440_key(version)


# --- SemVer and Go -----------------------------------------------------------------------
_SEMVER_SHORT = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)$")


def _coerce_semver(version: str) -> str:
    v = version.strip()
    if v.startswith(("v", "=")):
        v = v[1:]
    v = v.split("+", 1)[0]  # build metadata never affects precedence
    m = _SEMVER_SHORT.match(v)
    if m and (m.group(2) is None or m.group(3) is None) and (not m.group(4) or m.group(4)[0] in "-"):
        v = f"{m.group(1)}.{m.group(2) or 0}.{m.group(3) or 0}{m.group(4)}"
    return v


@functools.lru_cache(maxsize=CACHE_SIZE)
def _semver_key(version: str) -> semver.Version:
    try:
        return semver.Version.parse(_coerce_semver(version))
    except (ValueError, TypeError) as exc:
        raise VersionError(f"invalid SemVer version {version!r}") from exc


class SemverOrdering(_KeyOrdering):
    name = "semver"

    def key(self, version: str) -> semver.Version:
        return _semver_key(version)


_GO_TOOLCHAIN = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:(rc|beta)(\d+))?$")


def _normalize_go(version: str) -> str:
    """Go writes `v1.2.3`, the toolchain `go1.21rc2`; OSV writes `1.2.3` and `1.21.0-rc.2`."""
    v = version.strip()
    if v.startswith("go"):
        v = v[2:]
    m = _GO_TOOLCHAIN.match(v)
    if m:
        major, minor, patch, pre, pre_n = m.groups()
        v = f"{major}.{minor}.{patch or 0}" + (f"-{pre}.{pre_n}" if pre else "")
    return v


@functools.lru_cache(maxsize=CACHE_SIZE)
def _go_key(version: str) -> semver.Version:
    return _semver_key(_normalize_go(version))


class GoOrdering(_KeyOrdering):
    name = "go"

    def key(self, version: str) -> semver.Version:
        return _go_key(version)


# --- ecosystems --------------------------------------------------------------------------
DPKG, APK, PEP440, SEMVER, GO, MAVEN = (
    DpkgOrdering(),
    ApkOrdering(),
    Pep440Ordering(),
    SemverOrdering(),
    GoOrdering(),
    MavenOrdering(),
)

_BY_ECOSYSTEM: dict[str, Ordering] = {
    "Debian": DPKG,
    "Ubuntu": DPKG,
    "Alpine": APK,
    "Wolfi": APK,
    "Chainguard": APK,
    "PyPI": PEP440,
    "npm": SEMVER,
    "crates.io": SEMVER,
    "Go": GO,
    "Maven": MAVEN,
}
SUPPORTED_ECOSYSTEMS = tuple(_BY_ECOSYSTEM)


def ecosystem_base(ecosystem: str) -> str:
    """`Debian:12` → `Debian`, `Ubuntu:Pro:18.04:LTS` → `Ubuntu`, `PyPI` → `PyPI`."""
    return ecosystem.split(":", 1)[0].strip()


def ordering_for(ecosystem: str, range_type: str = "ECOSYSTEM") -> Ordering:
    """The ordering for an OSV ecosystem string; SEMVER ranges are SemVer in every ecosystem
    except Go, whose SemVer spelling (`v` prefix, toolchain names) is normalised first."""
    base = ecosystem_base(ecosystem)
    if range_type == "SEMVER":
        return GO if base == "Go" else SEMVER
    try:
        return _BY_ECOSYSTEM[base]
    except KeyError:
        raise UnsupportedEcosystem(ecosystem) from None


def compare(ecosystem: str, a: str, b: str) -> int:
    return ordering_for(ecosystem).compare(a, b)
