"""Stored scan results, one per (manifest digest, scanner), and the verdict a policy draws from them.

A report is replaced only when a new scan completes, so a rescan never leaves an image without
a verdict (the gap that makes Harbor block clean images during rescans, goharbor/harbor#19486).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select

from dockyard.domain.events import record
from dockyard.policy.lookups import FAILED, OK  # noqa: F401 (the statuses, named once for the gates too)
from dockyard.policy.security_policy import SEVERITIES, severity_rank
from dockyard.metadata.db import Database, aware, upsert, utcnow
from dockyard.metadata.models import scan_reports

MAX_MATCH_ERRORS = 200  # kept per report (each up to 500 characters); the count is kept beyond that


@dataclass(frozen=True)
class ScanReport:
    digest: str
    scanner: str
    status: str  # ok | failed
    generated_at: datetime
    vulndb_updated_at: datetime | None
    package_count: int
    summary: dict[str, int]
    findings: list[dict]
    sbom_digest: str | None
    error: str | None
    reason: str | None = None  # a failed scan's short reason (no paths, no scanner internals)
    match_errors: list[str] = field(default_factory=list)  # packages/advisories the matcher could not evaluate
    match_error_count: int = 0
    unsupported: list[str] = field(default_factory=list)  # ecosystems with no version ordering (nothing to match)

    @property
    def incomplete(self) -> bool:
        """An ok scan whose matcher skipped advisories: its findings may be missing some."""
        return self.status == OK and self.match_error_count > 0

    def as_dict(self, *, with_findings: bool = True) -> dict:
        out = {
            "digest": self.digest,
            "scanner": self.scanner,
            "status": self.status,
            "generated_at": self.generated_at,
            "vulndb_updated_at": self.vulndb_updated_at,
            "package_count": self.package_count,
            "summary": self.summary,
            "sbom_digest": self.sbom_digest,
            "error": self.error,
            "reason": self.reason,
            "incomplete": self.incomplete,
            "match_error_count": self.match_error_count,
            "match_errors": self.match_errors,
            "unsupported": self.unsupported,
        }
        if with_findings:
            out["findings"] = self.findings
        return out


def verdict_of(status: str | None, summary: dict[str, int] | None) -> str:
    """A report's verdict for scan.verdict_changed: "unscanned" (no report), "failed", or the highest
    severity found ("critical" … "unknown"), or "none" for a clean image. The pull gate judges it
    against each project's threshold; when this value changes, a gate's answer may change."""
    if status is None:
        return "unscanned"
    if status == FAILED:
        return "failed"
    found = [s for s, n in (summary or {}).items() if n]
    return max(found, key=severity_rank).lower() if found else "none"


def summarize(findings: list[dict]) -> dict[str, int]:
    counts = Counter(f.get("severity") or "Unknown" for f in findings)
    return {s: counts.get(s, 0) for s in reversed(SEVERITIES)}


class ReportStore:
    def __init__(self, db: Database):
        self.db = db
        self.generation = 0  # bumped on every save on this node: verdict caches compare it

    def save(
        self,
        digest: str,
        scanner: str,
        *,
        status: str,
        findings: list[dict],
        package_count: int = 0,
        packages: list[dict] | None = None,
        sbom_digest: str | None = None,
        vulndb_updated_at: datetime | None = None,
        error: str | None = None,
        reason: str | None = None,
        match_errors: list[str] | None = None,
        unsupported: list[str] | None = None,
        repository: str | None = None,
    ) -> ScanReport:
        now = utcnow()
        match_errors = list(match_errors or [])
        findings = sorted(findings, key=lambda f: (-severity_rank(f.get("severity") or ""), f["id"], f.get("package") or ""))
        row = {
            "status": status,
            "generated_at": now,
            "vulndb_updated_at": vulndb_updated_at,
            "package_count": package_count,
            "summary": json.dumps(summarize(findings)),
            "findings": json.dumps(findings),
            "error": error,
            "reason": reason,
            "match_errors": json.dumps(
                {"count": len(match_errors), "items": [e[:500] for e in match_errors[:MAX_MATCH_ERRORS]]}
            ),
            "unsupported": json.dumps(sorted(set(unsupported or []))),
        }
        if packages is not None:
            row["packages"] = json.dumps(packages)
        if sbom_digest is not None:
            row["sbom_digest"] = sbom_digest
        with self.db.write() as conn:
            before = conn.execute(
                select(scan_reports.c.status, scan_reports.c.summary)
                .where(scan_reports.c.digest == digest, scan_reports.c.scanner == scanner)
            ).first()
            upsert(conn, scan_reports, {"digest": digest, "scanner": scanner, **row}, ["digest", "scanner"], row)
            self._record(conn, repository, digest, scanner, before, status, summarize(findings), reason or error)
        self.generation += 1
        return self.get(digest, scanner)

    @staticmethod
    def _record(conn, repository, digest, scanner, before, status, summary, reason) -> None:
        """scan.completed or scan.failed, and scan.verdict_changed when the verdict moved (see verdict_of)."""
        if status == FAILED:
            record(conn, "scan.failed", repository=repository, digest=digest,
                   data={"scanner": scanner, "error": (reason or "")[:200]})
        else:
            record(conn, "scan.completed", repository=repository, digest=digest,
                   data={"scanner": scanner, "summary": summary})
        previous = verdict_of(before.status, json.loads(before.summary) if before and before.summary else None) \
            if before is not None else "unscanned"
        current = verdict_of(status, summary)
        if previous != current:
            record(conn, "scan.verdict_changed", repository=repository, digest=digest,
                   data={"scanner": scanner, "previous": previous, "current": current})

    def get(self, digest: str, scanner: str) -> ScanReport | None:
        with self.db.read() as conn:
            r = conn.execute(select(scan_reports).where(scan_reports.c.digest == digest, scan_reports.c.scanner == scanner)).first()
        if r is None:
            return None
        errors = json.loads(r.match_errors) if r.match_errors else {"count": 0, "items": []}
        return ScanReport(
            r.digest, r.scanner, r.status, aware(r.generated_at), aware(r.vulndb_updated_at), r.package_count,
            json.loads(r.summary), json.loads(r.findings), r.sbom_digest, r.error, r.reason,
            errors["items"], errors["count"], json.loads(r.unsupported) if r.unsupported else [],
        )

    def packages(self, digest: str, scanner: str) -> list[dict] | None:
        with self.db.read() as conn:
            raw = conn.execute(
                select(scan_reports.c.packages).where(scan_reports.c.digest == digest, scan_reports.c.scanner == scanner)
            ).scalar()
        return json.loads(raw) if raw else None

    def forget(self, digest: str, scanner: str) -> None:
        """Drop the report of an image that is no longer in any repository."""
        with self.db.write() as conn:
            conn.execute(delete(scan_reports).where(scan_reports.c.digest == digest, scan_reports.c.scanner == scanner))

    def digests(self, scanner: str) -> list[str]:
        with self.db.read() as conn:
            return list(conn.execute(select(scan_reports.c.digest).where(scan_reports.c.scanner == scanner).order_by(scan_reports.c.digest)).scalars())
