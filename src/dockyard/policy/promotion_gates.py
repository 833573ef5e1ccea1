"""Promotion gates from the destination project's policy: "scanned with nothing at or above
<severity>" and "signed by a key the destination trusts". Both fail closed: an unscanned or
unsigned source is refused with the reason."""

from __future__ import annotations

from sqlalchemy import select

from dockyard.domain.promotion import GateVerdict
from dockyard.domain.security_settings import BUILTIN_SCANNER, SecuritySettings
from dockyard.metadata.db import Database
from dockyard.metadata.models import manifests, repositories
from dockyard.scanning.reports import OK, ReportStore, blocking, display_id
from dockyard.scanning.targets import IMAGE, INDEX, OTHER, classify, index_children
from dockyard.signing.in_registry import SignatureChecker, describe


def _project(repository: str) -> str:
    return repository.split("/", 1)[0]


class _SourceReader:
    def __init__(self, db: Database):
        self.db = db

    def manifest(self, repository: str, digest: str) -> tuple[str, bytes] | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(manifests.c.media_type, manifests.c.payload)
                .join(repositories, repositories.c.id == manifests.c.repository_id)
                .where(repositories.c.name == repository, manifests.c.digest == digest)
            ).first()
        return None if row is None else (row.media_type, bytes(row.payload))

    def images(self, repository: str, digest: str) -> tuple[str, list[str]]:
        """(kind, image digests): the image itself, or the images an index lists."""
        stored = self.manifest(repository, digest)
        if stored is None:
            return OTHER, []
        kind = classify(*stored)
        if kind == IMAGE:
            return kind, [digest]
        if kind != INDEX:
            return kind, []
        out = []
        for child in index_children(stored[1]):
            child_stored = self.manifest(repository, child)
            if child_stored is not None and classify(*child_stored) == IMAGE:
                out.append(child)
        return kind, out


class ScanPromotionGate:
    name = "scan"

    def __init__(self, db: Database, security: SecuritySettings, reports: ReportStore):
        self.reader = _SourceReader(db)
        self.security = security
        self.reports = reports

    def check(self, source_repository: str, digest: str, manifest_media_type: str, destination: str) -> GateVerdict:
        policy = self.security.policy_for(_project(destination))
        if policy is None or policy.promotion_max_severity is None:
            return GateVerdict(True)
        kind, images = self.reader.images(source_repository, digest)
        if kind == OTHER:
            return GateVerdict(True)
        allowlist = self.security.active_allowlist(policy.project)
        found = []
        for image in images:
            report = self.reports.get(image, policy.scanner) or self.reports.get(image, BUILTIN_SCANNER)
            if report is None or report.status != OK:
                return GateVerdict(False, f"image {image} has no successful scan; scan it before promoting into {policy.project}")
            found.extend(blocking(report.findings, policy.promotion_max_severity, allowlist))
        if found:
            ids = sorted({display_id(f) for f in found})
            shown = ", ".join(ids[:5]) + (f", and {len(ids) - 5} more" if len(ids) > 5 else "")
            return GateVerdict(
                False,
                f"{len(ids)} finding(s) at or above {policy.promotion_max_severity} ({shown}); "
                f"project {policy.project} admits nothing at or above {policy.promotion_max_severity}",
            )
        return GateVerdict(True)


class SignaturePromotionGate:
    name = "signature"

    def __init__(self, db: Database, security: SecuritySettings, signatures: SignatureChecker):
        self.reader = _SourceReader(db)
        self.security = security
        self.signatures = signatures

    def check(self, source_repository: str, digest: str, manifest_media_type: str, destination: str) -> GateVerdict:
        policy = self.security.policy_for(_project(destination))
        if policy is None or not policy.promotion_require_signature:
            return GateVerdict(True)
        keys = self.security.public_keys(policy.project)
        if not keys:
            return GateVerdict(False, f"project {policy.project} requires signatures but trusts no public key")
        verified, own = self.signatures.covered(source_repository, digest, keys)
        if verified:
            return GateVerdict(True)
        return GateVerdict(False, f"{describe(own)}; project {policy.project} requires a signature by a key it trusts")
