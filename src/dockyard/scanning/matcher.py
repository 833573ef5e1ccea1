"""Match installed packages against OSV advisories and normalise the findings.

Packages come from the cataloger as (ecosystem, name, version, layer). Debian, Ubuntu and
Alpine advisories name *source* packages, so a binary package is matched under its source
name and version (`Source: glibc (2.36-9+deb12u4)` for `libc6 2.36-9+deb12u4+b1`) and
reported under its own name.

Release-scoped ecosystems (`Debian:12`, `Ubuntu:22.04:LTS`, `Alpine:v3.20`) match only the same
release: a fix in bookworm says nothing about bullseye. An advisory written for the bare
ecosystem (`Debian`) applies to every release. A distro package whose release is unknown only
matches such release-less advisories.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from dockyard.scanning.osv import Advisory, Affected, affected_by, severity_of
from dockyard.scanning.versions import UnsupportedEcosystem, VersionError, ecosystem_base, ordering_for
from dockyard.scanning.vulndb import VulnDB, package_key

log = logging.getLogger(__name__)

RELEASE_SCOPED = ("Debian", "Ubuntu", "Alpine")
SOURCE_NAMED = ("Debian", "Ubuntu", "Alpine")
DEBIAN_CODENAMES = {
    "buster": "10",
    "bullseye": "11",
    "bookworm": "12",
    "trixie": "13",
    "forky": "14",
    "stretch": "9",
    "jessie": "8",
}


@dataclass(frozen=True, slots=True)
class Package:
    ecosystem: str  # OSV spelling: "Debian:12", "Alpine:v3.20", "PyPI", "npm", "Go", "Maven"
    name: str  # the installed (binary) package name
    version: str
    layer: str | None = None  # digest of the layer that introduced it
    source_name: str | None = None  # dpkg/apk source (origin) package
    source_version: str | None = None  # dpkg `Source: name (version)` when it differs

    @property
    def match_name(self) -> str:
        if ecosystem_base(self.ecosystem) in SOURCE_NAMED and self.source_name:
            return self.source_name
        return self.name

    @property
    def match_version(self) -> str:
        if ecosystem_base(self.ecosystem) in SOURCE_NAMED and self.source_version:
            return self.source_version
        return self.version


_SOURCE_FIELD = re.compile(r"^\s*(?P<name>[^\s(]+)\s*(?:\((?P<version>[^)]+)\))?\s*$")


def parse_dpkg_source(field_value: str) -> tuple[str, str | None]:
    """dpkg's `Source:` field: `openssl` or `glibc (2.36-9+deb12u4)` → (name, version or None)."""
    m = _SOURCE_FIELD.match(field_value or "")
    if not m:
        raise ValueError(f"not a dpkg Source field: {field_value!r}")
    return m.group("name"), (m.group("version") or "").strip() or None


def dpkg_package(
    ecosystem: str, name: str, version: str, source: str | None = None, layer: str | None = None
) -> Package:
    """A Package from a dpkg status stanza: `source` is the raw `Source:` field, if any."""
    source_name, source_version = parse_dpkg_source(source) if source else (None, None)
    return Package(ecosystem, name, version, layer, source_name, source_version)


def release_of(ecosystem: str) -> str | None:
    """Comparable release of a distro ecosystem string, or None when it has none.

    Debian `12`, `12.5` and `bookworm` are one release; Alpine `v3.20`, `3.20` and `3.20.3` are
    one; Ubuntu `22.04` and `22.04:LTS` are one (`Pro:` stays distinct: ESM is another feed)."""
    base = ecosystem_base(ecosystem)
    if base not in RELEASE_SCOPED or ":" not in ecosystem:
        return None
    release = ecosystem.split(":", 1)[1].strip()
    if not release:
        return None
    if base == "Debian":
        release = DEBIAN_CODENAMES.get(release.lower(), release)
        return release.split(".", 1)[0]
    if base == "Alpine":
        parts = release.lstrip("v").split(".")
        return "v" + ".".join(parts[:2]) if parts[0] != "edge" else "edge"
    if release.endswith(":LTS"):
        release = release[: -len(":LTS")]
    return release


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    aliases: tuple[str, ...]
    related: tuple[str, ...]  # DSA/DLA/ALPINE records carry their CVEs here or in upstream
    summary: str
    severity: str  # Harbor scale: Unknown, Negligible, Low, Medium, High, Critical
    cvss_score: float | None
    cvss_vector: str | None
    ecosystem: str
    package: str  # installed name
    source_package: str | None
    installed_version: str
    fixed_version: str | None  # None: no fix in the range that matched
    layer: str | None
    severity_source: str | None = None  # another record's id when the severity was borrowed from it

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "aliases": list(self.aliases),
            "related": list(self.related),
            "summary": self.summary,
            "severity": self.severity,
            "cvss_score": self.cvss_score,
            "cvss_vector": self.cvss_vector,
            "ecosystem": self.ecosystem,
            "package": self.package,
            "source_package": self.source_package,
            "installed_version": self.installed_version,
            "fixed_version": self.fixed_version,
            "layer": self.layer,
            "severity_source": self.severity_source,
        }


@dataclass
class MatchResult:
    findings: list[Finding] = field(default_factory=list)
    # Packages or advisories we could not evaluate, with the reason: reported, never dropped.
    errors: list[str] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)  # ecosystems with no ordering


class Matcher:
    """In-memory index of live advisories by (ecosystem base, package key)."""

    def __init__(self, advisories: Iterable[Advisory]):
        self._index: dict[tuple[str, str], list[tuple[Advisory, Affected]]] = {}
        for advisory in advisories:
            if advisory.is_withdrawn:
                continue
            for affected in advisory.affected:
                key = (affected.ecosystem_base, package_key(affected.ecosystem, affected.name))
                self._index.setdefault(key, []).append((advisory, affected))

    @classmethod
    def from_vulndb(cls, vulndb: VulnDB, packages: Iterable[Package]) -> Matcher:
        """Load only the advisories that can concern these packages."""
        keys = {_key(p) for p in packages}
        return cls(vulndb.advisories_for(keys))

    def match(self, packages: Iterable[Package]) -> MatchResult:
        """Findings, plus what could not be evaluated: a package whose version does not parse, an
        advisory range that does not, or advisories in an ecosystem we cannot order. Those are
        `errors` (the verdict is incomplete); an ecosystem with no ordering and no advisories for
        the package is only `unsupported` (there was nothing to miss)."""
        result = MatchResult()
        seen: set[tuple[str, str, str, str]] = set()
        for package in packages:
            base = ecosystem_base(package.ecosystem)
            candidates = self._index.get(_key(package), ())
            try:
                ordering = ordering_for(package.ecosystem)
            except UnsupportedEcosystem:
                if candidates:
                    result.errors.append(
                        f"{package.ecosystem}/{package.name} {package.version}: {len(candidates)} advisories not "
                        f"evaluated (no version ordering for ecosystem {base})"
                    )
                else:
                    result.unsupported.add(base)
                continue
            if not candidates:
                continue
            release = release_of(package.ecosystem)
            try:
                ordering.key(package.match_version)
            except VersionError as exc:
                result.errors.append(
                    f"{package.ecosystem}/{package.name} {package.version}: {len(candidates)} advisories not evaluated ({exc})"
                )
                continue
            for advisory, affected in candidates:
                if not _same_release(base, release, affected.ecosystem):
                    continue
                try:
                    hit = affected_by(affected, package.match_version, ordering)
                except VersionError as exc:
                    result.errors.append(f"{advisory.id} ({affected.ecosystem}/{affected.name}) not evaluated for "
                                         f"{package.name} {package.version}: {exc}")
                    log.warning("matcher: %s: %s", advisory.id, exc)
                    continue
                if hit is None:
                    continue
                dedupe = (advisory.id, package.ecosystem, package.name, package.version)
                if dedupe in seen:
                    continue
                seen.add(dedupe)
                result.findings.append(_finding(advisory, affected, package, hit.fixed))
        result.findings.sort(key=lambda f: (f.package, f.id))
        result.errors = list(dict.fromkeys(result.errors))
        return result


def _key(package: Package) -> tuple[str, str]:
    return ecosystem_base(package.ecosystem), package_key(package.ecosystem, package.match_name)


def _same_release(base: str, package_release: str | None, advisory_ecosystem: str) -> bool:
    if base not in RELEASE_SCOPED:
        return True
    advisory_release = release_of(advisory_ecosystem)
    if advisory_release is None:
        return True
    return package_release == advisory_release


def _finding(advisory: Advisory, affected: Affected, package: Package, fixed: str | None) -> Finding:
    severity = severity_of(advisory, affected)
    related = tuple(dict.fromkeys(advisory.related + advisory.upstream))
    return Finding(
        id=advisory.id,
        aliases=advisory.aliases,
        related=related,
        summary=advisory.summary,
        severity=severity.level,
        cvss_score=severity.score,
        cvss_vector=severity.vector,
        ecosystem=package.ecosystem,
        package=package.name,
        source_package=package.source_name,
        installed_version=package.version,
        fixed_version=fixed,
        layer=package.layer,
    )


def enrich_severity(findings: list[Finding], vulndb: VulnDB) -> list[Finding]:
    """Give findings whose own record has no severity the CVSS of another record for the same CVE.

    Debian (DSA/DLA/DEBIAN-CVE) and Alpine records carry no severity; Ubuntu's and GitHub's
    records for the same CVE usually carry a CVSS vector. The highest score wins (the
    conservative choice), and `severity_source` names the record it came from."""
    unknown = [f for f in findings if f.severity == "Unknown"]
    cves = {n for f in unknown for n in (f.id, *f.aliases, *f.related) if n.startswith("CVE-")}
    if not cves:
        return findings
    best: dict[str, tuple[float, str, object]] = {}
    for advisory in vulndb.records_named(cves):
        scored = [severity_of(advisory)] + [severity_of(advisory, a) for a in advisory.affected]
        scored = [s for s in scored if s.score is not None]
        if not scored:
            continue
        top = max(scored, key=lambda s: s.score)
        for name in {advisory.id, *advisory.aliases, *advisory.upstream} & cves:
            if name not in best or top.score > best[name][0]:
                best[name] = (top.score, advisory.id, top)
    out = []
    for f in findings:
        if f.severity == "Unknown":
            candidates = [best[n] for n in (f.id, *f.aliases, *f.related) if n in best]
            if candidates:
                score, source, severity = max(candidates, key=lambda c: c[0])
                f = replace(f, severity=severity.level, cvss_score=score, cvss_vector=severity.vector, severity_source=source)
        out.append(f)
    return out
