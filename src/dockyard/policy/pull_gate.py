"""The per-project pull gate: vulnerability severity, unscanned images, and required signatures.

Runs on every manifest GET in a project that has a gate. Final verdicts are cached per
(repository, digest) and invalidated by any policy, report or signature change on this node, so
the steady-state cost is a dictionary lookup. Unscanned-image outcomes are never cached: the
scan that lands next must take effect at once.

Exempt: manifest HEAD (no content), artifacts that are not images (signatures, SBOMs, charts;
cosign must be able to read the signature it checks), the registry's own scanner pulls, and
accounts that may push to the repository (see `check`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from dockyard.errors import Denied
from dockyard.metadata.db import Database
from dockyard.policy.access import project_of
from dockyard.policy.lookups import FAILED, INDEX, OTHER, ReportLookup, SecurityLookup, SignatureLookup, TargetLookup
from dockyard.policy.security_policy import MISSING, SecurityPolicy, blocking, display_id, list_ids, severity_rank

WAIT_POLL_SECONDS = 0.25
FINAL, TRANSIENT, WAIT = "final", "transient", "wait"


@dataclass(frozen=True)
class _Cached:
    expires: float
    stamp: tuple
    denial: str | None


class PullGate:
    def __init__(
        self,
        db: Database,
        targets: TargetLookup,
        security: SecurityLookup,
        reports: ReportLookup,
        signatures: SignatureLookup,
        *,
        request_scan,
        exempt_subjects: frozenset[str] = frozenset(),
        cache_seconds: float = 2.0,
        clock=time.monotonic,
        incomplete_policy: str = "block",
    ):
        self.db = db
        self.targets = targets
        self.security = security
        self.reports = reports
        self.signatures = signatures
        self.request_scan = request_scan  # (repository, digest, scanner) -> job id
        self.exempt_subjects = exempt_subjects
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.incomplete_policy = incomplete_policy  # scan_incomplete_policy: block | warn
        self._cache: dict[tuple[str, str], _Cached] = {}

    def on_push(self, repository: str) -> None:
        """A push may add a signature: drop this repository's signature verdicts and gate verdicts."""
        self.signatures.invalidate(repository)
        for key in [k for k in self._cache if k[0] == repository]:
            self._cache.pop(key, None)

    def _stamp(self) -> tuple:
        return (self.security.generation, self.reports.generation)

    async def check(
        self, repository: str, digest: str, media_type: str, payload: bytes, subject: str | None, *, pusher=lambda: False
    ) -> None:
        """Raise DENIED (with the reason) unless the project's policy lets this manifest be pulled.

        `pusher()` says whether the caller's account may push to the repository: it is not held
        (cosign reads the image it is about to sign; a pusher could replace the content anyway).
        Deployments pull as guests, pull-only robots or anonymously, and those are gated.

        Both may read the database (the policy every `cache_seconds`, `pusher` per refusal), so
        they go through `run_fast`: inline on SQLite, off the event loop on PostgreSQL."""
        project = project_of(repository)
        policy = self.security.cached_policy(project)
        if policy is MISSING:
            policy = await self.db.run_fast(self.security.policy_for, project)
        if policy is None or not policy.gates_pulls or subject in self.exempt_subjects:
            return
        now = self.clock()
        hit = self._cache.get((repository, digest))
        fresh = hit is not None and hit.expires > now and hit.stamp == self._stamp()
        if fresh and not hit.denial:
            return  # the steady state: an allowed digest costs two dictionary lookups
        if await self.db.run_fast(pusher):
            return
        if fresh:
            raise Denied(hit.denial, detail={"digest": digest, "project": policy.project})
        stamp = self._stamp()
        denial, outcome = await self.db.run(self._evaluate, policy, repository, digest, media_type, payload)
        if outcome == WAIT:
            denial = await self._wait_for_scan(policy, repository, digest, media_type, payload)
        elif outcome == FINAL:
            self._cache[(repository, digest)] = _Cached(now + self.cache_seconds, stamp, denial)
        if denial:
            raise Denied(denial, detail={"digest": digest, "project": policy.project})

    def gates(self, repository: str) -> bool:
        """Whether `repository`'s project gates pulls at all (blocking: may read the policy)."""
        policy = self.security.policy_for(project_of(repository))
        return policy is not None and policy.gates_pulls

    def check_copy(self, repository: str, digest: str, media_type: str, payload: bytes, subject: str | None) -> None:
        """The pull gate for a copy out of `repository` (promotion into another repository): raise DENIED
        with the reason a pull would get. A copy is a pull that keeps the bytes, so the caller must pass the
        source's gate as it would for `docker pull`. Blocking, and it never waits: an image the policy
        would wait for is refused until its scan lands. Callers skip this for accounts that may push to
        the source (the same exemption a pull has)."""
        project = project_of(repository)
        policy = self.security.policy_for(project)
        if policy is None or not policy.gates_pulls or subject in self.exempt_subjects:
            return
        denial, outcome = self._evaluate(policy, repository, digest, media_type, payload)
        if outcome == WAIT:
            denial = (
                f"image {digest} cannot be copied: it has not been scanned yet (a scan is queued; retry shortly); "
                f"policy wait-for-scan of project {policy.project}"
            )
        if denial:
            raise Denied(denial, detail={"digest": digest, "project": policy.project})

    # -- evaluation (blocking; runs in a thread) ---------------------------------------------------

    def _evaluate(self, policy: SecurityPolicy, repository: str, digest: str, media_type: str, payload: bytes):
        """(denial message or None, outcome): FINAL verdicts are cached, TRANSIENT ones (about an
        unscanned image) are not, WAIT means "unscanned, and the policy says wait"."""
        kind = self.targets.kind(media_type, payload)
        if kind == OTHER:
            return None, FINAL
        if policy.require_signature:
            denial = self._signature_denial(policy, repository, digest, kind)
            if denial:
                return denial, FINAL
        if policy.block_severity is None:
            return None, FINAL
        images = self.targets.images(repository, digest, (media_type, payload))[1]
        unscanned, vulnerable, incomplete = [], [], []
        for image in images:
            report = self.reports.get(image, policy.scanner)
            if report is None or report.status == FAILED:
                unscanned.append((image, (report.reason or "the scanner failed") if report else None))
                continue
            if report.incomplete:
                incomplete.append((image, report.match_error_count))
            vulnerable.extend(blocking(report.findings, policy.block_severity, self.security.active_allowlist(policy.project)))
        if vulnerable:
            return self._vulnerability_denial(policy, digest, kind, vulnerable), FINAL
        if incomplete and self.incomplete_policy == "block":
            image, count = incomplete[0]
            return (
                f"image {image} cannot be pulled: its scan is incomplete ({count} package(s) or advisories could not "
                f"be evaluated); scan_incomplete_policy is block (policy block-{policy.block_severity} of project "
                f"{policy.project})"
            ), FINAL
        if unscanned:
            for image, _ in unscanned:
                self.request_scan(repository, image, policy.scanner)
            if policy.unscanned == "allow":
                return None, TRANSIENT
            if policy.unscanned == "block":
                return self._unscanned_denial(policy, digest, unscanned), TRANSIENT
            return None, WAIT
        return None, FINAL

    def _signature_denial(self, policy: SecurityPolicy, repository: str, digest: str, kind: str) -> str | None:
        keys = self.signatures.public_keys(policy.project)
        if not keys:
            return (
                f"{_noun(kind)} {digest} cannot be verified: project {policy.project} requires signatures "
                f"but trusts no public key; policy require-signature of project {policy.project}"
            )
        verified, own = self.signatures.covered(repository, digest, keys)
        if verified:
            return None
        return (
            f"{_noun(kind)} {digest} is not signed by a key trusted by project {policy.project}: {self.signatures.describe(own)}; "
            f"policy require-signature of project {policy.project}"
        )

    @staticmethod
    def _vulnerability_denial(policy: SecurityPolicy, digest: str, kind: str, findings: list[dict]) -> str:
        by_severity: dict[str, list[str]] = {}
        for f in sorted(findings, key=lambda f: -severity_rank(f.get("severity") or "")):
            ids = by_severity.setdefault((f.get("severity") or "Unknown").lower(), [])
            name = display_id(f)
            if name not in ids:
                ids.append(name)
        counts = " and ".join(f"{len(ids)} {severity}" for severity, ids in by_severity.items())
        total = sum(len(ids) for ids in by_severity.values())
        listed = [i for ids in by_severity.values() for i in ids]
        shown = list_ids(listed)
        noun = "vulnerability" if total == 1 else "vulnerabilities"
        return (
            f"{_noun(kind)} {digest} has {counts} {noun} ({shown}); "
            f"policy block-{policy.block_severity} of project {policy.project}"
        )

    @staticmethod
    def _unscanned_denial(policy: SecurityPolicy, digest: str, unscanned: list[tuple[str, str | None]]) -> str:
        # The short reason only (see ScanReport.reason): the scan's error, with the server's paths and
        # the scanner's output, is for the log and for the scan report in the API.
        failed = [reason for _, reason in unscanned if reason]
        state = f"its scan failed ({failed[0]})" if failed else "it has not been scanned yet (a scan is queued)"
        return f"image {digest} cannot be pulled: {state}; policy block-unscanned of project {policy.project}"

    # -- waiting --------------------------------------------------------------------------------

    async def _wait_for_scan(self, policy: SecurityPolicy, repository: str, digest: str, media_type: str, payload: bytes) -> str | None:
        """unscanned=wait: poll for the verdict up to N seconds, then refuse (never silently allow)."""
        deadline = self.clock() + policy.unscanned_wait_seconds
        while self.clock() < deadline:
            await asyncio.sleep(WAIT_POLL_SECONDS)
            denial, outcome = await self.db.run(self._evaluate, policy, repository, digest, media_type, payload)
            if outcome != WAIT:
                return denial
        return (
            f"image {digest} cannot be pulled: it was not scanned within {policy.unscanned_wait_seconds} s "
            f"(a scan is queued; retry shortly); policy wait-for-scan of project {policy.project}"
        )


def _noun(kind: str) -> str:
    return "index" if kind == INDEX else "image"
