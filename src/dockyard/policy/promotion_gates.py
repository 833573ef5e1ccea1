"""Promotion gates from the destination project's policy: "scanned with nothing at or above
<severity>" and "signed by a key the destination trusts". Both fail closed: an unscanned or
unsigned source is refused with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dockyard.policy.access import project_of
from dockyard.policy.lookups import OK, OTHER, ReportLookup, SecurityLookup, SignatureLookup, TargetLookup
from dockyard.policy.security_policy import BUILTIN_SCANNER, blocking, display_id, list_ids


@dataclass(frozen=True)
class GateVerdict:
    allowed: bool
    reason: str = ""


@runtime_checkable
class PromotionGate(Protocol):
    """A check the source must pass before it is promoted (e.g. no critical vulnerabilities, signed)."""

    name: str

    def check(self, source_repository: str, digest: str, manifest_media_type: str, destination: str) -> GateVerdict: ...


class ScanPromotionGate:
    name = "scan"

    def __init__(self, targets: TargetLookup, security: SecurityLookup, reports: ReportLookup, *, incomplete_policy: str = "block"):
        self.reader = targets
        self.security = security
        self.reports = reports
        self.incomplete_policy = incomplete_policy  # scan_incomplete_policy

    def check(self, source_repository: str, digest: str, manifest_media_type: str, destination: str) -> GateVerdict:
        policy = self.security.policy_for(project_of(destination))
        if policy is None or policy.promotion_max_severity is None:
            return GateVerdict(True)
        kind, images = self.reader.images(source_repository, digest)
        if kind == OTHER:
            return GateVerdict(True)
        allowlist = self.security.active_allowlist(policy.project)
        found, problems = [], []  # every image's problem, not just the first (issue 15): one round-trip to fix them all
        for image in images:
            report = self.reports.get(image, policy.scanner) or self.reports.get(image, BUILTIN_SCANNER)
            if report is None or report.status != OK:
                problems.append(f"image {image} has no successful scan; scan it before promoting into {policy.project}")
                continue
            if report.incomplete and self.incomplete_policy == "block":
                problems.append(
                    f"the scan of image {image} is incomplete ({report.match_error_count} package(s) or advisories could "
                    f"not be evaluated; see its scan report); scan_incomplete_policy is block"
                )
                continue
            found.extend(blocking(report.findings, policy.promotion_max_severity, allowlist))
        if found:
            ids = sorted({display_id(f) for f in found})
            shown = list_ids(ids)
            problems.append(
                f"{len(ids)} finding(s) at or above {policy.promotion_max_severity} ({shown}); "
                f"project {policy.project} admits nothing at or above {policy.promotion_max_severity}"
            )
        return GateVerdict(False, "; ".join(problems)) if problems else GateVerdict(True)


class SignaturePromotionGate:
    name = "signature"

    def __init__(self, security: SecurityLookup, signatures: SignatureLookup):
        self.security = security
        self.signatures = signatures

    def check(self, source_repository: str, digest: str, manifest_media_type: str, destination: str) -> GateVerdict:
        policy = self.security.policy_for(project_of(destination))
        if policy is None or not policy.promotion_require_signature:
            return GateVerdict(True)
        keys = self.signatures.public_keys(policy.project)
        if not keys:
            return GateVerdict(False, f"project {policy.project} requires signatures but trusts no public key")
        verified, own = self.signatures.covered(source_repository, digest, keys)
        if verified:
            return GateVerdict(True)
        return GateVerdict(False, f"{self.signatures.describe(own)}; project {policy.project} requires a signature by a key it trusts")
