"""What the pull and promotion gates ask of the rest of the registry, as Protocols.

The gates are policy: they must not import the services that answer them (domain/, scanning/,
signing/ sit above policy; see tests/unit/test_layers.py). app.py hands them the real ones:
SecuritySettings, ReportStore, TargetReader and signing.in_registry.GateSignatures. The
vocabulary both sides share (target kinds, report statuses) is defined here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from dockyard.policy.security_policy import SecurityPolicy

# What a manifest is to the gates (scanning.targets.classify): one image, an index of images, or
# anything else (signatures, SBOMs, charts), which no gate holds back.
IMAGE, INDEX, OTHER = "image", "index", "other"
# A stored scan report's status.
OK, FAILED = "ok", "failed"


class SecurityLookup(Protocol):
    """A project's security policy and CVE allowlist (domain.security_settings.SecuritySettings)."""

    generation: int  # moves on every change on this node

    def cached_policy(self, project: str) -> Any: ...  # the policy, None, or security_policy.MISSING

    def policy_for(self, project: str) -> SecurityPolicy | None: ...

    def active_allowlist(self, project: str) -> frozenset[str]: ...


class Report(Protocol):
    """One scan's verdict on one image (scanning.reports.ScanReport)."""

    status: str  # OK | FAILED
    reason: str | None
    findings: list[dict]
    match_error_count: int

    @property
    def incomplete(self) -> bool: ...


class ReportLookup(Protocol):
    """Stored scan reports (scanning.reports.ReportStore)."""

    generation: int  # moves whenever a report is saved on this node

    def get(self, digest: str, scanner: str) -> Report | None: ...


class TargetLookup(Protocol):
    """Which images a manifest stands for (scanning.targets.TargetReader)."""

    def kind(self, media_type: str, payload: bytes) -> str: ...  # IMAGE | INDEX | OTHER

    def images(self, repository: str, digest: str, manifest: tuple[str, bytes] | None = None) -> tuple[str, list[str]]: ...


class SignatureLookup(Protocol):
    """A project's trusted keys and whether they signed an image (signing.in_registry.GateSignatures)."""

    def public_keys(self, project: str) -> Sequence[Any]: ...

    def covered(self, repository: str, digest: str, keys: Sequence[Any]) -> tuple[bool, Any]: ...

    def describe(self, verdict: Any) -> str: ...  # why `verdict` does not verify, as one clause

    def invalidate(self, repository: str) -> None: ...
