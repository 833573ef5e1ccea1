"""A project's supply-chain security policy as values, and the one reading of findings against it.

The policy (`SecurityPolicy`) is stored and cached by domain/security_settings.py; scans produce
findings (scanning/); the pull and promotion gates (policy/pull_gate.py, promotion_gates.py) and
the CLI judge findings here, so "at or above the threshold, not allowlisted" means one thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.errors import InvalidRequest

# Harbor's scale, lowest first. Gates take one of the last four as a threshold.
SEVERITIES = ("Unknown", "Negligible", "Low", "Medium", "High", "Critical")
THRESHOLDS = ("low", "medium", "high", "critical")
UNSCANNED_POLICIES = ("allow", "block", "wait")
MAX_WAIT_SECONDS = 600
BUILTIN_SCANNER = "builtin"
MISSING = object()  # "not cached", distinct from a cached None (no such project)


def severity_rank(severity: str) -> int:
    """Rank on the Harbor scale; anything unrecognised ranks as Unknown."""
    name = (severity or "").capitalize()
    return SEVERITIES.index(name) if name in SEVERITIES else 0


def validate_threshold(value: str | None, field: str) -> str | None:
    if value is None or value == "":
        return None
    value = value.lower()
    if value not in THRESHOLDS:
        raise InvalidRequest(f"{field} must be one of {', '.join(THRESHOLDS)} (or null for none)", detail={field: value})
    return value


UNSCANNED_HINT = (
    "turning on the vulnerability gate (block_severity) needs an explicit choice for images without a verdict: "
    "send unscanned (block, wait or allow) in the same change, e.g. "
    "`dockyard security set PROJECT --block-severity critical --unscanned block`"
)


def require_unscanned_choice(current: "SecurityPolicy", changes: dict) -> None:
    """Nothing passes silently: a change that turns the vulnerability gate on (block_severity from
    null to a threshold) must also say what happens to images that have no verdict yet, even `allow`.
    Later threshold changes keep the choice made then."""
    turning_on = changes.get("block_severity") is not None and current.block_severity is None
    if turning_on and changes.get("unscanned") is None:
        raise InvalidRequest(UNSCANNED_HINT, detail={"missing": "unscanned", "allowed": list(UNSCANNED_POLICIES)})


@dataclass(frozen=True)
class SecurityPolicy:
    project_id: int
    project: str
    auto_scan: bool = False  # like Harbor and ECR: scanning every push is opted into per project
    scanner: str = BUILTIN_SCANNER  # "builtin" or a registered scanner's name
    block_severity: str | None = None  # pull gate threshold; None: no vulnerability gate
    unscanned: str = "allow"  # allow | block | wait (only with a vulnerability gate, which must choose it)
    unscanned_wait_seconds: int = 0
    require_signature: bool = False
    promotion_max_severity: str | None = None  # promotion into this project: refuse findings at/above
    promotion_require_signature: bool = False

    @property
    def gates_pulls(self) -> bool:
        return self.block_severity is not None or self.require_signature

    def as_dict(self) -> dict:
        return {
            "project": self.project,
            "auto_scan": self.auto_scan,
            "scanner": self.scanner,
            "block_severity": self.block_severity,
            "unscanned": self.unscanned,
            "unscanned_wait_seconds": self.unscanned_wait_seconds,
            "require_signature": self.require_signature,
            "promotion_max_severity": self.promotion_max_severity,
            "promotion_require_signature": self.promotion_require_signature,
        }


def display_id(finding: dict) -> str:
    """The id people search for: the CVE when the advisory (DSA-…, GHSA-…) names one."""
    if finding["id"].startswith("CVE-"):
        return finding["id"]
    for alias in list(finding.get("aliases") or ()) + list(finding.get("related") or ()):
        if alias.startswith("CVE-"):
            return alias
    return finding["id"]


def list_ids(ids: list[str], limit: int = 5) -> str:
    """`CVE-1, CVE-2, and 3 more`: what a refusal message names."""
    return ", ".join(ids[:limit]) + (f", and {len(ids) - limit} more" if len(ids) > limit else "")


def blocking(findings: list[dict], threshold: str, allowlist: frozenset[str]) -> list[dict]:
    """Findings at or above `threshold` that no active allowlist entry covers (by id or alias)."""
    floor = severity_rank(threshold)
    out = []
    for f in findings:
        if severity_rank(f.get("severity") or "Unknown") < floor:
            continue
        names = {f["id"].upper(), *(a.upper() for a in f.get("aliases") or ()), *(r.upper() for r in f.get("related") or ())}
        if names & allowlist:
            continue
        out.append(f)
    return out
