"""Scanning as background jobs: on push, on demand, and a full rescan when the vulnerability DB changes.

The built-in scanner catalogues an image with syft (scanning/sbom.py), attaches the SPDX SBOM
to it as an OCI referrer, and matches the packages against the OSV database. The package list
is kept with the report, so a rescan after a database update re-matches in milliseconds without
reading a layer again. A project may instead use an external Harbor-API scanner (Trivy adapter).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import Connection, func, select, text

from dockyard.auth.principals import Principal
from dockyard.auth.scopes import Scope
from dockyard.domain import blob_refs
from dockyard.domain.manifest_service import ManifestService
from dockyard.domain.manifests import OCI_EMPTY, OCI_MANIFEST
from dockyard.domain.scanners import ScannerRegistry
from dockyard.domain.security_settings import SecuritySettings
from dockyard.errors import NotFound
from dockyard.jobs.queue import PENDING, Children, JobQueue
from dockyard.jobs.worker import JobReleased
from dockyard.metadata import job_kinds
from dockyard.metadata.db import Database, aware
from dockyard.metadata.models import jobs, manifests, repositories, vuln_sources
from dockyard.policy.access import project_of
from dockyard.policy.security_policy import BUILTIN_SCANNER
from dockyard.scanning import sbom as sbom_module
from dockyard.scanning.harbor import HarborScannerClient
from dockyard.scanning.limits import ScanLimitExceeded, ScanLimits, ScanTimedOut
from dockyard.scanning.matcher import Matcher, Package, enrich_severity
from dockyard.scanning.reports import FAILED, OK, ReportStore, ScanReport
from dockyard.scanning import syft_runner
from dockyard.scanning.syft_runner import ScanInterrupted
from dockyard.scanning.targets import IMAGE, INDEX, TargetReader, classify, index_children
from dockyard.scanning.vulndb import VulnDB
from dockyard.storage import StorageDriver
from dockyard.storage.paths import upload_key
from dockyard.domain.intents import forget_intent, record_intent

log = logging.getLogger(__name__)

SCAN_JOB = job_kinds.SCAN
RESCAN_JOB = job_kinds.RESCAN
SCANNER_SUBJECT = "scanner$dockyard"  # token subject of external scanners' pulls; gates let it through
EMPTY_CONFIG = b"{}"
SBOM_GENERATOR_ANNOTATION = "dev.dockyard.sbom.generator"


_SCAN_DIR = re.compile(r"(?:/[^\s/:'\"]+)*/dockyard-(?:sbom|scan)-\d+-[A-Za-z0-9_]+")
_LIMIT_SETTING = re.compile(r"\((scan_max_[a-z_]+)")


def short_reason(exc: BaseException) -> str:
    """What a pull-only client is told about a failed scan: a fixed phrase, plus the limit's setting
    name for an over-limit image. Never the message itself (server paths, syft's output)."""
    if isinstance(exc, ScanLimitExceeded):
        setting = _LIMIT_SETTING.search(str(exc))
        return f"the image exceeds the registry's scan limit {setting.group(1)}" if setting else "the image exceeds the registry's scan limits"
    if isinstance(exc, ScanTimedOut):
        return "the scan timed out"
    if isinstance(exc, sbom_module.SbomError):
        return "the image could not be catalogued"
    if isinstance(exc, NotFound):
        return "a blob of the image is missing"
    return "the scanner failed"


class ScanService:
    def __init__(
        self,
        db: Database,
        storage: StorageDriver,
        blob_service,
        manifests: ManifestService,
        jobs_queue: JobQueue,
        security: SecuritySettings,
        scanners: ScannerRegistry,
        reports: ReportStore,
        vulndb: VulnDB,
        *,
        tokens=None,
        registry_url: str = "",
        syft_path: str | None = None,
        scan_timeout: float = 900,
        wake: Callable[[], None] = lambda: None,
        limits: ScanLimits | None = None,
        work_root: Path | None = None,
        stopping: Callable[[], bool] = lambda: False,
        incomplete_policy: str = "block",
    ):
        self.db = db
        self.storage = storage
        self.blobs = blob_service
        self.manifests = manifests
        self.jobs = jobs_queue
        self.security = security
        self.scanners = scanners
        self.reports = reports
        self.vulndb = vulndb
        self.tokens = tokens
        self.registry_url = registry_url.rstrip("/")
        self.syft_path = syft_path
        self.scan_timeout = scan_timeout
        self.wake = wake
        self.targets = TargetReader(db)
        self.limits = limits or ScanLimits()
        self.work_root = work_root  # data_dir/tmp/scans: syft's temp dirs and blob copies, never TMPDIR
        self.stopping = stopping  # the worker was asked to stop: release the job between images
        self.incomplete_policy = incomplete_policy  # how gates treat a report with match errors
        if work_root is not None:
            syft_runner.remove_stale(work_root)

    # -- producers ------------------------------------------------------------------------------

    def on_pushed(self, conn: Connection, repository: str, digest: str, media_type: str, payload: bytes) -> int | None:
        """Scan on push, as the feed's durable consumer (jobs/feed_consumers.py) calls it for each
        artifact.pushed: queue a scan of an image or index when its project scans on push, inside
        the consumer's transaction, so the job commits exactly when the feed cursor moves past it."""
        if classify(media_type, payload) not in (IMAGE, INDEX):
            return None
        policy = self.security.policy_for(project_of(repository))
        if policy is None or not policy.auto_scan:
            return None
        return self.request_in(conn, repository, digest, policy.scanner)

    def request(self, repository: str, digest: str, scanner: str | None = None, *, force: bool = False) -> int:
        """Queue a scan (joining an identical queued one). `force` rescans what already has a report."""
        if scanner is None:
            policy = self.security.get(project_of(repository))
            scanner = policy.scanner
        with self.db.write() as conn:
            job_id = self.request_in(conn, repository, digest, scanner, force=force)
        self.wake()
        return job_id

    def request_in(self, conn: Connection, repository: str, digest: str, scanner: str, *, force: bool = False) -> int:
        """`request` inside the caller's write transaction (the caller wakes the worker after commit).

        A scan of the digest already queued is joined; one already running too, unless `force` (a rescan
        asked for explicitly may follow a change the running one did not see). So a blocked pull and a
        blocked inspect 0.1 s apart queue one scan, not two."""
        if not self.db.is_sqlite:
            # SQLite's write transaction is exclusive already; on PostgreSQL two requests for one digest would
            # each find no pending job and each insert one: hold a lock for this digest and scanner until commit.
            key = int.from_bytes(hashlib.sha256(f"scan\0{digest}\0{scanner}".encode()).digest()[:8], "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        pending = self._pending_jobs(conn, digest, scanner)
        queued = [p for p in pending if p["state"] == "queued"]
        if queued or (pending and not force):
            return (queued or pending)[0]["id"]
        return self.jobs.enqueue_in(
            conn, SCAN_JOB, {"repository": repository, "digest": digest, "scanner": scanner, "force": force},
            max_attempts=2, fair_key=project_of(repository),  # claims go round-robin over projects
        )

    def pending_job(self, digest: str, scanner: str) -> dict | None:
        """The queued, running or waiting (an index's) scan of `digest` with `scanner`, if any."""
        with self.db.read() as conn:
            return self._pending_job(conn, digest, scanner)

    @staticmethod
    def _pending_job(conn: Connection, digest: str, scanner: str) -> dict | None:
        found = ScanService._pending_jobs(conn, digest, scanner)
        return found[0] if found else None

    @staticmethod
    def _pending_jobs(conn: Connection, digest: str, scanner: str) -> list[dict]:
        rows = conn.execute(
            select(jobs.c.id, jobs.c.state, jobs.c.payload, jobs.c.parent_id)
            .where(jobs.c.kind == SCAN_JOB, jobs.c.state.in_(PENDING), jobs.c.payload.contains(digest))
            .order_by(jobs.c.id)
        ).all()
        found = []
        for row in rows:
            payload = json.loads(row.payload)
            if payload.get("digest") == digest and payload.get("scanner") == scanner:
                found.append({"id": row.id, "state": row.state, "force": bool(payload.get("force")), "parent_id": row.parent_id})
        return found

    def status(self, repository: str, digest: str, scanner: str) -> dict:
        """The verdict in force for an image or index (per platform image), and whether a scan runs.

        `in_progress` is separate from the verdict on purpose: a rescan never hides the last one."""
        stored = self._manifest(repository, digest)
        if stored is None:
            raise NotFound(f"manifest {digest} is not in repository {repository}", detail={"digest": digest})
        kind, images = self.targets.images(repository, digest, stored)
        entries, totals = [], {}
        for image in images:
            report = self.reports.get(image, scanner)
            entry = {"digest": image, "report": report.as_dict() if report else None, "in_progress": self.pending_job(image, scanner) is not None}
            entries.append(entry)
            if report is not None:
                for severity, count in report.summary.items():
                    totals[severity] = totals.get(severity, 0) + count
        return {
            "digest": digest,
            "kind": kind,
            "scanner": scanner,
            "scannable": bool(images),
            "scanned": bool(images) and all(e["report"] and e["report"]["status"] == OK for e in entries),
            "incomplete": any(e["report"] and e["report"]["incomplete"] for e in entries),
            "incomplete_policy": self.incomplete_policy,
            "in_progress": any(e["in_progress"] for e in entries) or self.pending_job(digest, scanner) is not None,
            "summary": totals,
            "images": entries,
        }

    def sbom(self, repository: str, digest: str) -> bytes | None:
        """The SPDX document the built-in scanner attached to an image, if any.

        Only the referrer whose digest the scan recorded is read (a pusher can attach anything that
        looks like our SBOM, annotations included), and only up to scan_max_sbom_bytes."""
        report = self.reports.get(digest, BUILTIN_SCANNER)
        if report is None or not report.sbom_digest:
            return None
        layer = self._own_sbom_layer(repository, report.sbom_digest, digest)
        if layer is None:
            return None
        with self.db.read() as conn:
            row = blob_refs.present_blob(conn, layer)
        if row is None:
            return None
        if row.size > self.limits.max_sbom_bytes:
            raise NotFound(
                f"the SBOM of {repository}@{digest} is {row.size} bytes, over scan_max_sbom_bytes ({self.limits.max_sbom_bytes})",
                detail={"digest": digest},
            )
        return b"".join(self.storage.open_read(row.storage_key, 0, self.limits.max_sbom_bytes))

    def _own_sbom_layer(self, repository: str, sbom_digest: str, subject: str) -> str | None:
        """The SPDX layer digest of the SBOM referrer `sbom_digest` in `repository`, if it is one the
        built-in scanner could have written for `subject` (its recorded digest, its shape)."""
        stored = self._manifest(repository, sbom_digest)
        if stored is None:
            return None
        try:
            doc = json.loads(stored[1])
            layers = doc["layers"]
            layer = layers[0]["digest"]
            ok = (len(layers) == 1 and isinstance(layer, str) and doc.get("artifactType") == sbom_module.SPDX_MEDIA_TYPE
                  and layers[0].get("mediaType") == sbom_module.SPDX_MEDIA_TYPE and doc["subject"]["digest"] == subject)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            ok = False
        if not ok:
            log.warning("recorded SBOM %s of %s@%s is not an SBOM the scanner wrote; ignored", sbom_digest, repository, subject)
            return None
        return layer

    # -- the scan job ---------------------------------------------------------------------------

    def handle_scan(self, payload: dict, progress) -> dict | Children:
        """Scan one image; an index becomes a parent job with one child job per platform image, so
        a 1000-platform index is 1000 short jobs that other projects' scans can go between."""
        repository, digest = payload["repository"], payload["digest"]
        scanner = payload.get("scanner") or BUILTIN_SCANNER
        force = bool(payload.get("force"))
        stored = self._manifest(repository, digest)
        if stored is None:
            return {"skipped": f"{repository}@{digest} no longer exists"}
        media_type, body = stored
        kind = classify(media_type, body)
        if kind == INDEX:
            return self._children(repository, body, scanner, force)
        if kind != IMAGE:
            return {"skipped": "not a container image"}
        if self.stopping():
            raise JobReleased("stopping before the scan started")
        progress({"image": digest, "done": 0, "of": 1})
        if not force and (existing := self.reports.get(digest, scanner)) is not None and existing.status == OK:
            return {"images": [{"digest": digest, "summary": existing.summary, "reused": True}]}
        report = self._scan_image(repository, digest, media_type, body, scanner)
        return {"images": [{"digest": digest, "summary": report.summary, "status": report.status}]}

    def _children(self, repository: str, body: bytes, scanner: str, force: bool) -> Children:
        payloads, adopt = [], []
        for child in index_children(body):  # each child once, however often the index lists it
            child_stored = self._manifest(repository, child)
            if child_stored is None or classify(*child_stored) != IMAGE:
                continue
            payloads.append({"repository": repository, "digest": child, "scanner": scanner, "force": force})
            # A scan of that image already queued or running (its own push) becomes the child:
            # no second syft run of one image. Not when this one must rescan and that one may reuse.
            pending = self.pending_job(child, scanner)
            usable = pending is not None and pending["parent_id"] is None and (not force or pending["force"])
            adopt.append(pending["id"] if usable else None)
        return Children(SCAN_JOB, payloads, adopt, max_attempts=2, result={"images": []})

    def _scan_image(self, repository: str, digest: str, media_type: str, body: bytes, scanner: str) -> ScanReport:
        previous = self.reports.get(digest, scanner)
        try:
            if scanner == BUILTIN_SCANNER:
                return self._builtin(repository, digest, media_type, body)
            return self._external(repository, digest, media_type, scanner)
        except (JobReleased, ScanInterrupted) as exc:
            raise JobReleased(str(exc)) from exc  # a stop is no verdict: the job goes back to the queue
        except Exception as exc:
            if previous is None or previous.status != OK:
                # No verdict to keep: record the failure so gates can say why (it follows the unscanned policy).
                # The details (for the API and the log) lose server paths; refusals show `reason` only.
                self.reports.save(digest, scanner, status=FAILED, findings=[], error=self._redact(f"{type(exc).__name__}: {exc}")[:2000],
                                  reason=short_reason(exc), repository=repository)
            raise  # the job fails visibly and retries; a previous good verdict stays in force

    def _builtin(self, repository: str, digest: str, media_type: str, body: bytes) -> ScanReport:
        with self._blob_files(repository) as blob_path:
            sbom = sbom_module.catalogue_image(
                body, blob_path, name=f"{repository}@{digest}", syft=self.syft_path, timeout=self.scan_timeout,
                limits=self.limits, work_root=self.work_root, should_stop=self.stopping,
            )
        sbom_digest = self._attach_sbom(repository, digest, media_type, len(body), sbom)
        packages = sbom.packages
        updated_at, result = self._match(packages)
        if result.errors:
            log.warning("scan of %s is incomplete: %d package(s) or advisories not evaluated, first: %s",
                        digest, len(result.errors), result.errors[0])
        return self.reports.save(
            digest,
            BUILTIN_SCANNER,
            status=OK,
            findings=[f.as_dict() for f in result.findings],
            package_count=len(packages),
            packages=[asdict(p) for p in packages],
            sbom_digest=sbom_digest,
            vulndb_updated_at=updated_at,
            match_errors=result.errors,
            unsupported=sorted(result.unsupported),
            repository=repository,
        )

    def _match(self, packages: list[Package]):
        with self.db.read() as conn:
            updated_at = aware(conn.execute(select(func.max(vuln_sources.c.imported_at))).scalar())
        result = Matcher.from_vulndb(self.vulndb, packages).match(packages)
        result.findings = enrich_severity(result.findings, self.vulndb)
        return updated_at, result

    def _external(self, repository: str, digest: str, media_type: str, scanner_name: str) -> ScanReport:
        scanner = self.scanners.get(scanner_name)
        if not self.registry_url:
            raise RuntimeError("external scanners need the registry's own URL: set public_url")
        authorization = None
        if self.tokens is not None:
            token = self.tokens.issue(Principal("robot", SCANNER_SUBJECT), [Scope("repository", repository, ("pull",))])
            authorization = f"Bearer {token.token}"
        client = HarborScannerClient(scanner.url, scanner.authorization, name=scanner.name)
        findings = client.scan(
            registry_url=self.registry_url,
            registry_authorization=authorization,
            repository=repository,
            digest=digest,
            tag=None,
            mime_type=media_type,
            deadline_seconds=self.scan_timeout,
        )
        return self.reports.save(digest, scanner.name, status=OK, findings=[f.as_dict() for f in findings],
                                 repository=repository)

    # -- rescans --------------------------------------------------------------------------------

    def handle_rescan(self, payload: dict, progress) -> dict:
        """Re-match every built-in report against the current database; queue external rescans.

        Each report is replaced in one write when its new verdict is ready, so no image is ever
        without a verdict (and a clean image never turns pending) during a rescan."""
        rematched = changed = queued = 0
        digests = self.reports.digests(BUILTIN_SCANNER)
        for n, digest in enumerate(digests):
            if n % 50 == 0:
                progress({"done": n, "of": len(digests)})
            repository = self._any_repository(digest)
            if repository is None:  # deleted since it was scanned
                self.reports.forget(digest, BUILTIN_SCANNER)
                continue
            stored = self.reports.packages(digest, BUILTIN_SCANNER)
            old = self.reports.get(digest, BUILTIN_SCANNER)
            if stored is None or old is None or old.status != OK:
                continue
            packages = [Package(**p) for p in stored]
            updated_at, result = self._match(packages)
            findings = [f.as_dict() for f in result.findings]
            new = self.reports.save(
                digest, BUILTIN_SCANNER, status=OK, findings=findings, package_count=len(packages), vulndb_updated_at=updated_at,
                match_errors=result.errors, unsupported=sorted(result.unsupported), repository=repository,
            )
            rematched += 1
            changed += new.findings != old.findings or new.match_errors != old.match_errors
        for scanner in self.scanners.list():
            for digest in self.reports.digests(scanner.name):
                repository = self._any_repository(digest)
                if repository is None:
                    self.reports.forget(digest, scanner.name)
                else:
                    self.request(repository, digest, scanner.name, force=True)
                    queued += 1
        return {"reason": payload.get("reason"), "rematched": rematched, "changed": changed, "external_queued": queued}

    # -- helpers --------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        """Server paths out of a stored scan error (the log keeps the full text)."""
        if self.work_root is not None:
            text = text.replace(str(self.work_root), "<scan-dir>")
        return _SCAN_DIR.sub("<scan-dir>", text)

    def _manifest(self, repository: str, digest: str) -> tuple[str, bytes] | None:
        return self.targets.manifest(repository, digest)

    def _any_repository(self, digest: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(
                select(repositories.c.name)
                .join(manifests, manifests.c.repository_id == repositories.c.id)
                .where(manifests.c.digest == digest)
                .limit(1)
            ).scalar()

    @contextlib.contextmanager
    def _blob_files(self, repository: str):
        """`blob_path(digest)`: the stored file itself on the filesystem driver, else a temp copy."""
        if self.work_root is not None:
            self.work_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"dockyard-scan-{os.getpid()}-", dir=self.work_root) as tmp:

            def blob_path(digest: str) -> Path:
                with self.db.read() as conn:
                    stored = blob_refs.present_blob(conn, digest)
                key = None if stored is None else stored.storage_key
                if key is None:
                    raise NotFound(f"blob {digest} of {repository} is not stored")
                local = self.storage.local_path(key)
                if local is not None and os.path.exists(local):
                    return Path(local)
                target = Path(tmp) / digest.replace(":", "-")
                with open(target, "wb") as fh:
                    for chunk in self.storage.open_read(key):
                        fh.write(chunk)
                return target

            yield blob_path

    def _attach_sbom(self, repository: str, subject: str, subject_type: str, subject_size: int, sbom) -> str:
        """Push the SBOM as a referrer of the image (once: a forced rescan keeps the first one).

        "The first one" is the referrer whose digest the last scan recorded, never one found by its
        artifact type or annotations: anyone with push can plant a referrer that looks like ours."""
        previous = self.reports.get(subject, BUILTIN_SCANNER)
        if previous is not None and previous.sbom_digest and self._own_sbom_layer(repository, previous.sbom_digest, subject):
            return previous.sbom_digest
        sbom_digest = self._put_blob(repository, sbom.spdx)
        config_digest = self._put_blob(repository, EMPTY_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": sbom_module.SPDX_MEDIA_TYPE,
            "config": {"mediaType": OCI_EMPTY, "digest": config_digest, "size": len(EMPTY_CONFIG)},
            "layers": [
                {
                    "mediaType": sbom_module.SPDX_MEDIA_TYPE,
                    "digest": sbom_digest,
                    "size": len(sbom.spdx),
                    "annotations": {"org.opencontainers.image.title": "sbom.spdx.json"},
                }
            ],
            "subject": {"mediaType": subject_type, "digest": subject, "size": subject_size},
            "annotations": {SBOM_GENERATOR_ANNOTATION: sbom.tool},
        }
        payload = json.dumps(manifest, separators=(",", ":")).encode()
        return self.manifests.put(repository, None, None, payload, OCI_MANIFEST).digest

    def _put_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        staging = upload_key("sbom-" + uuid.uuid4().hex)
        # No upload row owns this staging object: an intent lets GC reclaim it after a crash.
        intent = record_intent(self.db, staging)
        self.storage.put(staging, data)
        self.blobs.publish(repository, digest, staging, len(data))
        forget_intent(self.db, intent)  # the staging object was moved or deleted
        return digest
