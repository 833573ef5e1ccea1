"""The scan promotion gate names every image's problem at once, not only the first (issue 15, §5)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dockyard.policy.lookups import OK
from dockyard.policy.promotion_gates import ScanPromotionGate
from dockyard.policy.security_policy import SecurityPolicy

IMAGES = ["sha256:" + c * 64 for c in "abc"]


@dataclass
class FakeReport:
    status: str = OK
    findings: list[dict] = field(default_factory=list)
    match_error_count: int = 0
    reason: str | None = None

    @property
    def incomplete(self) -> bool:
        return self.match_error_count > 0


class Lookups:
    def __init__(self, reports: dict[str, FakeReport]):
        self._reports = reports

    def images(self, repository, digest, manifest=None):
        return "index", IMAGES

    def policy_for(self, project):
        return SecurityPolicy(project_id=1, project=project, promotion_max_severity="High")

    def active_allowlist(self, project):
        return frozenset()

    def get(self, digest, scanner):
        return self._reports.get(digest)


def test_every_image_problem_is_in_the_reason():
    critical = {"id": "CVE-2024-0001", "severity": "Critical"}
    lookups = Lookups({IMAGES[1]: FakeReport(match_error_count=2), IMAGES[2]: FakeReport(findings=[critical])})
    verdict = ScanPromotionGate(lookups, lookups, lookups).check("dev/app", "sha256:" + "f" * 64, "index", "prod/app")
    assert not verdict.allowed
    assert verdict.reason == (
        f"image {IMAGES[0]} has no successful scan; scan it before promoting into prod; "
        f"the scan of image {IMAGES[1]} is incomplete (2 package(s) or advisories could not be evaluated; see its scan "
        "report); scan_incomplete_policy is block; "
        "1 finding(s) at or above High (CVE-2024-0001); project prod admits nothing at or above High"
    )


def test_a_clean_index_passes():
    lookups = Lookups({image: FakeReport() for image in IMAGES})
    assert ScanPromotionGate(lookups, lookups, lookups).check("dev/app", "sha256:" + "f" * 64, "index", "prod/app").allowed
