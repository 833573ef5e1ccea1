"""OSV records: parse what we use, validate it, tolerate everything else.

The OSV schema (ossf/osv-schema) grows; unknown fields are ignored, never an error. The parts
the matcher relies on (id, modified, affected packages, range events) are checked, and a
record that breaks them raises `OSVError` with the reason.

`affected_by()` is the schema's evaluation algorithm: a version is affected if it is listed in
`versions`, or if any ECOSYSTEM/SEMVER range contains it. GIT ranges name commits, which an
image's package database does not record, so they are skipped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dockyard.scanning.versions import Ordering, ecosystem_base, ordering_for

EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
MATCHED_RANGE_TYPES = ("ECOSYSTEM", "SEMVER")
# Real versions (dpkg, PEP 440, Go pseudo-versions, git commits) are well under this; the matcher quotes an
# unparseable one in every affected image's report, so a longer one makes the record invalid.
MAX_VERSION_CHARS = 256
# Harbor's scale (policies (d)), lowest first; the gate compares positions in this tuple.
SEVERITIES = ("None", "Unknown", "Negligible", "Low", "Medium", "High", "Critical")


class OSVError(ValueError):
    """An OSV record that lacks or mangles a part the matcher depends on."""


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # introduced | fixed | last_affected | limit
    version: str


@dataclass(frozen=True, slots=True)
class Range:
    type: str  # ECOSYSTEM | SEMVER | GIT
    events: tuple[Event, ...]
    repo: str | None = None


@dataclass(frozen=True, slots=True)
class SeverityScore:
    type: str  # CVSS_V2 | CVSS_V3 | CVSS_V4 | Ubuntu
    score: str


@dataclass(frozen=True, slots=True)
class Affected:
    ecosystem: str
    name: str
    purl: str | None = None
    ranges: tuple[Range, ...] = ()
    versions: tuple[str, ...] = ()
    severity: tuple[SeverityScore, ...] = ()
    database_specific: dict = field(default_factory=dict, compare=False, hash=False)
    ecosystem_specific: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def ecosystem_base(self) -> str:
        return ecosystem_base(self.ecosystem)


@dataclass(frozen=True, slots=True)
class Advisory:
    id: str
    modified: datetime
    published: datetime | None = None
    withdrawn: datetime | None = None
    aliases: tuple[str, ...] = ()
    related: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()
    summary: str = ""
    details: str = ""
    severity: tuple[SeverityScore, ...] = ()
    affected: tuple[Affected, ...] = ()
    database_specific: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_withdrawn(self) -> bool:
        return self.withdrawn is not None


# --- parsing -----------------------------------------------------------------------------
_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_timestamp(value: Any, what: str) -> datetime:
    """RFC 3339 as OSV writes it (`Z`, 0–9 fractional digits); always timezone-aware UTC."""
    if not isinstance(value, str) or not value:
        raise OSVError(f"{what}: expected an RFC 3339 timestamp, got {value!r}")
    text = _FRACTION.sub(r"\1", value.strip())
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as exc:
        raise OSVError(f"{what}: invalid timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _strings(data: dict, key: str, where: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise OSVError(f"{where}.{key}: expected a list of strings")
    return tuple(value)


def _dict(data: dict, key: str, where: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise OSVError(f"{where}.{key}: expected an object")
    return value


def _severity(data: dict, where: str) -> tuple[SeverityScore, ...]:
    value = data.get("severity") or []
    if not isinstance(value, list):
        raise OSVError(f"{where}.severity: expected a list")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) or not isinstance(entry.get("score"), str):
            raise OSVError(f"{where}.severity[{i}]: expected {{type, score}} strings")
        out.append(SeverityScore(entry["type"], entry["score"]))
    return tuple(out)


def _range(data: Any, where: str) -> Range:
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise OSVError(f"{where}: a range needs a type")
    events = []
    for i, raw in enumerate(data.get("events") or []):
        if not isinstance(raw, dict):
            raise OSVError(f"{where}.events[{i}]: expected an object")
        kinds = [k for k in EVENT_KINDS if k in raw]
        if len(kinds) != 1 or not isinstance(raw[kinds[0]], str) or not raw[kinds[0]]:
            raise OSVError(f"{where}.events[{i}]: needs exactly one of {', '.join(EVENT_KINDS)}")
        if len(raw[kinds[0]]) > MAX_VERSION_CHARS:
            raise OSVError(f"{where}.events[{i}]: a version longer than {MAX_VERSION_CHARS} characters")
        events.append(Event(kinds[0], raw[kinds[0]]))
    if not any(e.kind == "introduced" for e in events):
        raise OSVError(f"{where}: a range needs at least one introduced event")
    if any(e.kind == "fixed" for e in events) and any(e.kind == "last_affected" for e in events):
        raise OSVError(f"{where}: fixed and last_affected in one range")
    repo = data.get("repo")
    return Range(data["type"], tuple(events), repo if isinstance(repo, str) else None)


def _affected(data: Any, where: str) -> Affected:
    if not isinstance(data, dict):
        raise OSVError(f"{where}: expected an object")
    package = data.get("package")
    if not isinstance(package, dict):
        raise OSVError(f"{where}.package: missing")
    ecosystem, name = package.get("ecosystem"), package.get("name")
    if not isinstance(ecosystem, str) or not ecosystem or not isinstance(name, str) or not name:
        raise OSVError(f"{where}.package: ecosystem and name are required")
    raw_ranges = data.get("ranges") or []
    if not isinstance(raw_ranges, list):
        raise OSVError(f"{where}.ranges: expected a list")
    purl = package.get("purl")
    return Affected(
        ecosystem=ecosystem,
        name=name,
        purl=purl if isinstance(purl, str) else None,
        ranges=tuple(_range(r, f"{where}.ranges[{i}]") for i, r in enumerate(raw_ranges)),
        versions=_strings(data, "versions", where),
        severity=_severity(data, where),
        database_specific=_dict(data, "database_specific", where),
        ecosystem_specific=_dict(data, "ecosystem_specific", where),
    )


def parse_advisory(data: Any) -> Advisory:
    """One OSV record (already decoded JSON) → `Advisory`; raises `OSVError`."""
    if not isinstance(data, dict):
        raise OSVError("an OSV record is a JSON object")
    advisory_id = data.get("id")
    if not isinstance(advisory_id, str) or not advisory_id.strip():
        raise OSVError("id is required")
    where = advisory_id
    affected = data.get("affected") or []
    if not isinstance(affected, list):
        raise OSVError(f"{where}.affected: expected a list")
    return Advisory(
        id=advisory_id.strip(),
        modified=parse_timestamp(data.get("modified"), f"{where}.modified"),
        published=parse_timestamp(data["published"], f"{where}.published") if data.get("published") else None,
        withdrawn=parse_timestamp(data["withdrawn"], f"{where}.withdrawn") if data.get("withdrawn") else None,
        aliases=_strings(data, "aliases", where),
        related=_strings(data, "related", where),
        upstream=_strings(data, "upstream", where),
        summary=data.get("summary") if isinstance(data.get("summary"), str) else "",
        details=data.get("details") if isinstance(data.get("details"), str) else "",
        severity=_severity(data, where),
        affected=tuple(_affected(a, f"{where}.affected[{i}]") for i, a in enumerate(affected)),
        database_specific=_dict(data, "database_specific", where),
    )


def load_advisory(text: str | bytes) -> Advisory:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise OSVError(f"not JSON: {exc}") from exc
    return parse_advisory(data)


# --- evaluation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeHit:
    """Why a version is affected: the range (None for an explicit `versions` entry) and the
    first fixed version above it in that range, if any."""

    range: Range | None
    fixed: str | None


def _sorted_events(events: tuple[Event, ...], ordering: Ordering) -> list[tuple[Any, int, Event]]:
    # `introduced: "0"` is before every version; on equal versions `introduced` goes first,
    # so introduced == fixed describes an empty range, not an open one.
    keyed = []
    for e in events:
        if e.kind == "limit":
            continue
        if e.kind == "introduced" and e.version == "0":
            keyed.append((None, 0, e))
        else:
            keyed.append((ordering.key(e.version), 0 if e.kind == "introduced" else 1, e))
    zero = [k for k in keyed if k[0] is None]
    rest = sorted((k for k in keyed if k[0] is not None), key=lambda k: (k[0], k[1]))
    return zero + rest


def range_hit(rng: Range, version_key: Any, ordering: Ordering) -> RangeHit | None:
    """The schema's algorithm for one range. Raises VersionError on an unparseable event."""
    limits = [e.version for e in rng.events if e.kind == "limit"]
    if limits and not any(v == "*" or version_key < ordering.key(v) for v in limits):
        return None
    affected = False
    events = _sorted_events(rng.events, ordering)
    for key, _, event in events:
        if event.kind == "introduced":
            if key is None or key <= version_key:
                affected = True
        elif event.kind == "fixed":
            if key <= version_key:
                affected = False
        elif event.kind == "last_affected":
            if key < version_key:
                affected = False
    if not affected:
        return None
    fixed = next((e.version for key, _, e in events if e.kind == "fixed" and key > version_key), None)
    return RangeHit(rng, fixed)


def affected_by(affected: Affected, version: str, ordering: Ordering | None = None) -> RangeHit | None:
    """Is `version` of this package affected? The hit names the fixed version to report:
    the lowest fix above the installed version among the ranges that contain it."""
    hits: list[RangeHit] = []
    orderings: dict[str, Ordering] = {}
    for rng in affected.ranges:
        if rng.type not in MATCHED_RANGE_TYPES:
            continue
        order = ordering if ordering is not None and rng.type == "ECOSYSTEM" else None
        if order is None:
            order = orderings.setdefault(rng.type, ordering_for(affected.ecosystem, rng.type))
        hit = range_hit(rng, order.key(version), order)
        if hit is not None:
            hits.append(hit)
    if not hits and affected.versions:
        order = ordering or ordering_for(affected.ecosystem)
        if version in affected.versions or any(_same_version(order, version, v) for v in affected.versions):
            return RangeHit(None, None)
    if not hits:
        return None
    fixes = [h for h in hits if h.fixed is not None]
    if not fixes:
        return hits[0]
    order = ordering or ordering_for(affected.ecosystem)
    return min(fixes, key=lambda h: order.key(h.fixed))


def _same_version(ordering: Ordering, a: str, b: str) -> bool:
    try:
        return ordering.compare(a, b) == 0
    except ValueError:  # an unparseable listed version cannot equal a parseable one
        return False


# --- severity ----------------------------------------------------------------------------
_CVSS3_WEIGHTS = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_CVSS3_PR = {"U": {"N": 0.85, "L": 0.62, "H": 0.27}, "C": {"N": 0.85, "L": 0.68, "H": 0.5}}


def _roundup(value: float) -> float:
    """CVSS v3.1 Roundup: the smallest one-decimal number ≥ value, immune to float noise."""
    scaled = round(value * 100000)
    if scaled % 10000 == 0:
        return scaled / 100000.0
    return (math.floor(scaled / 10000) + 1) / 10.0


def cvss3_base_score(vector: str) -> float:
    """Base score of a CVSS v3.0/v3.1 vector (FIRST specification, section 7.1)."""
    parts = vector.strip().split("/")
    if not parts or not parts[0].startswith("CVSS:3"):
        raise ValueError(f"not a CVSS v3 vector: {vector!r}")
    metrics = dict(p.split(":", 1) for p in parts[1:] if ":" in p)
    try:
        scope = metrics["S"]
        pr = _CVSS3_PR[scope][metrics["PR"]]
        w = {m: _CVSS3_WEIGHTS[m][metrics[m]] for m in _CVSS3_WEIGHTS}
    except KeyError as exc:
        raise ValueError(f"incomplete CVSS v3 vector {vector!r}: {exc}") from None
    iss = 1 - (1 - w["C"]) * (1 - w["I"]) * (1 - w["A"])
    if scope == "U":
        impact = 6.42 * iss
    else:
        impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15
    exploitability = 8.22 * w["AV"] * w["AC"] * pr * w["UI"]
    if impact <= 0:
        return 0.0
    if scope == "U":
        return _roundup(min(impact + exploitability, 10))
    return _roundup(min(1.08 * (impact + exploitability), 10))


def severity_from_score(score: float) -> str:
    """CVSS qualitative rating, spelt on Harbor's scale."""
    if score == 0:
        return "None"
    if score < 4.0:
        return "Low"
    if score < 7.0:
        return "Medium"
    if score < 9.0:
        return "High"
    return "Critical"


_TEXT_SEVERITY = {
    "critical": "Critical",
    "high": "High",
    "important": "High",
    "moderate": "Medium",
    "medium": "Medium",
    "low": "Low",
    "negligible": "Negligible",
    "unimportant": "Negligible",
    "none": "None",
}


@dataclass(frozen=True, slots=True)
class Severity:
    level: str  # one of SEVERITIES
    score: float | None = None  # CVSS base score when a v3 vector is known
    vector: str | None = None  # the CVSS vector we scored or kept (v4 is kept, not scored)
    source: str = ""  # where the level came from: CVSS_V3, CVSS_V4, database_specific, Ubuntu, …


def severity_of(advisory: Advisory, affected: Affected | None = None) -> Severity:
    """Package-level severity first (OSV allows it), then the record's: a CVSS v3 vector is
    scored; a v4 vector is kept as it is; otherwise the database's own word; else Unknown."""
    scores = list(affected.severity if affected else ()) + list(advisory.severity)
    for s in scores:
        if s.type == "CVSS_V3":
            try:
                value = cvss3_base_score(s.score)
            except ValueError:
                continue
            return Severity(severity_from_score(value), value, s.score, "CVSS_V3")
    v4 = next((s.score for s in scores if s.type == "CVSS_V4"), None)
    texts = [
        (advisory.database_specific.get("severity"), "database_specific"),
        (affected.database_specific.get("severity") if affected else None, "database_specific"),
        (affected.ecosystem_specific.get("severity") if affected else None, "ecosystem_specific"),
    ] + [(s.score, s.type) for s in scores if s.type == "Ubuntu"]
    for text, source in texts:
        if isinstance(text, str) and text.strip().lower() in _TEXT_SEVERITY:
            return Severity(_TEXT_SEVERITY[text.strip().lower()], None, v4, source)
    if v4:
        return Severity("Unknown", None, v4, "CVSS_V4")
    return Severity("Unknown")
