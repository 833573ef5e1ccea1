"""Vulnerability database updates, shared by `dockyard vulndb update`, the API and the schedule.

`run_update` imports OSV exports, from local files (`from_path`) or downloaded one ecosystem at
a time, and when anything was written asks for one rescan: a `rescan` job with payload
`{"reason": "vulndb-update"}`, unless an identical one is still queued (it will read the new
advisories when it runs). A running rescan does not count: it may have loaded advisories
before this update, so a new one is queued behind it.

`VulnDBUpdater.handle` is the job handler for kind `vulndb-update` (queued by
`POST /api/v1/system/vulndb/update` and by the `vulndb_update_schedule` setting). It always
downloads: an air-gapped registry imports with `--from` instead.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

from dockyard.jobs.queue import JobQueue
from dockyard.metadata.db import Database
from dockyard.metadata import job_kinds
from dockyard.metadata.models import jobs as jobs_table
from dockyard.scanning.service import RESCAN_JOB
from dockyard.scanning.vulndb import (
    DEFAULT_ECOSYSTEMS,
    OSV_BUCKET_URL,
    ImportReport,
    VulnDB,
    VulnDBError,
    check_entry_count,
    discover,
    export_url,
    iter_zip_records,
)

log = logging.getLogger("dockyard.vulndb")

UPDATE_KIND = job_kinds.VULNDB_UPDATE
RESCAN_KIND = RESCAN_JOB  # handled by ScanService.handle_rescan
RESCAN_PAYLOAD = {"reason": UPDATE_KIND}
DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=15.0)  # per read: exports are large, but must keep flowing

OnSource = Callable[[str, ImportReport | None], None]  # (source, None) before it, (source, report) after


@dataclass
class UpdateResult:
    reports: list[ImportReport] = field(default_factory=list)
    rescan_job: int | None = None  # the rescan job asked for (new or already queued); None if nothing changed
    rescan_joined: bool = False  # True when an identical queued rescan already existed

    @property
    def written(self) -> int:
        return sum(r.written for r in self.reports)

    def as_dict(self) -> dict:
        """The `vulndb-update` job's result."""
        return {
            "written": self.written,
            "rescan_job": self.rescan_job,
            "rescan_joined": self.rescan_joined,
            "sources": [asdict(r) for r in self.reports],
        }


class UpdateError(VulnDBError):
    """An update that stopped part-way; `result` holds what was imported before it stopped."""

    def __init__(self, message: str, result: UpdateResult):
        super().__init__(message)
        self.result = result


def default_client() -> httpx.Client:
    # trust_env (the default) honours HTTPS_PROXY, which is how many closed networks reach OSV.
    return httpx.Client(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True)


def planned_sources(from_path: Path | None, ecosystems: Sequence[str]) -> list[str]:
    """The sources an update will import, in order (for progress bars); raises VulnDBError for a bad path."""
    if from_path is not None:
        return [source for source, _ in discover(from_path)]
    return list(ecosystems)


def run_update(
    db: Database,
    jobs: JobQueue | None,
    *,
    from_path: Path | None = None,
    ecosystems: Iterable[str] = DEFAULT_ECOSYSTEMS,
    base_url: str = OSV_BUCKET_URL,
    client: httpx.Client | None = None,
    on_source: OnSource | None = None,
) -> UpdateResult:
    """Import local exports (`from_path`) or download `ecosystems` from `base_url`; then, if any
    advisory was written, request a rescan through `jobs` (None: do not). Raises VulnDBError for
    a bad path and UpdateError (carrying what was already imported) when a download fails; a
    rescan is still requested for whatever was written before the failure."""
    vulndb = VulnDB(db)
    notify = on_source or (lambda source, report: None)
    result = UpdateResult()
    try:
        if from_path is not None:
            for source, files in discover(from_path):  # a bad path raises before anything is written
                notify(source, None)
                origin = str(files[0]) if len(files) == 1 else str(from_path)
                report = vulndb.import_records(source, origin, _read(files))
                result.reports.append(report)
                notify(source, report)
        else:
            own_client = client is None
            http = client or default_client()
            try:
                for ecosystem in ecosystems:
                    notify(ecosystem, None)
                    try:
                        [report] = vulndb.update(http, [ecosystem], base_url)
                    except VulnDBError as exc:
                        url = export_url(ecosystem, base_url)
                        reason = str(exc).removeprefix(f"GET {url}: ")
                        raise UpdateError(
                            f"could not download {url}: {reason}; use --from PATH to import local OSV exports", result
                        ) from exc
                    result.reports.append(report)
                    notify(ecosystem, report)
            finally:
                if own_client:
                    http.close()
    finally:
        if jobs is not None and result.written:
            result.rescan_job, result.rescan_joined = request_rescan(jobs)
    return result


def _read(files: list[Path]) -> Iterator[tuple[str, bytes]]:
    for file in files:
        if file.suffix == ".zip":
            yield from iter_zip_records(file)
        else:
            yield file.name, file.read_bytes()


def request_rescan(jobs: JobQueue, payload: dict = RESCAN_PAYLOAD) -> tuple[int, bool]:
    """Queue one `rescan` job unless an identical one is still queued: (job id, joined an existing one).

    The check and the insert share one write transaction, so two updates finishing together
    (serialized on SQLite's write lock) queue one job."""
    with jobs.db.write() as conn:
        queued = conn.execute(
            select(jobs_table.c.id, jobs_table.c.payload)
            .where(jobs_table.c.kind == RESCAN_KIND, jobs_table.c.state == "queued")
            .order_by(jobs_table.c.id)
        ).all()
        for row in queued:
            if json.loads(row.payload or "{}") == payload:
                return int(row.id), True
        job_id = jobs.enqueue_in(conn, RESCAN_KIND, payload)
    log.info("vulndb changed: queued rescan job %d", job_id)
    return job_id, False


class VulnDBUpdater:
    """Handler of `vulndb-update` jobs: download the configured ecosystems, then request a rescan."""

    def __init__(
        self,
        db: Database,
        jobs: JobQueue,
        *,
        base_url: str = OSV_BUCKET_URL,
        ecosystems: Sequence[str] = DEFAULT_ECOSYSTEMS,
        client_factory: Callable[[], httpx.Client] = default_client,
    ):
        self.db = db
        self.jobs = jobs
        self.base_url = base_url
        self.ecosystems = tuple(ecosystems)
        self.client_factory = client_factory

    def handle(self, payload: dict, progress: Callable[[dict], None]) -> dict:
        """Job handler for kind "vulndb-update"; payload {} (optionally {"ecosystems": [...]})."""
        ecosystems = tuple(payload.get("ecosystems") or self.ecosystems)
        state = {"phase": "downloading", "total": len(ecosystems), "done": 0, "source": None}

        def on_source(source: str, report: ImportReport | None) -> None:
            state["source"] = source
            if report is not None:
                state["done"] += 1
            progress(dict(state))

        with self.client_factory() as client:
            result = run_update(self.db, self.jobs, ecosystems=ecosystems, base_url=self.base_url, client=client,
                                on_source=on_source)
        return result.as_dict()


# -- uploaded exports (POST /api/v1/system/vulndb/import) ---------------------------------------

SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+ -]{0,63}")  # OSV ecosystem names: PyPI, Debian:12, crates.io
MAX_IMPORT_BYTES = 4 * 1024**3  # larger than any one ecosystem's OSV export


def import_upload(db: Database, jobs: JobQueue | None, source: str, path: Path, sha256: str) -> UpdateResult:
    """Import one uploaded OSV export zip as `source`, as `vulndb update --from FILE` would, so an
    air-gapped registry's running server gets it; skipped when it is the export last imported for
    that source (same sha256). Raises VulnDBError for a bad name or a file that is not an export."""
    if not SOURCE_NAME.fullmatch(source):
        raise VulnDBError(f"source {source[:80]!r}: expected an OSV ecosystem name such as PyPI or Debian:12")
    check_entry_count(path)
    try:
        with zipfile.ZipFile(path) as archive:
            records = sum(1 for i in archive.infolist() if not i.is_dir() and i.filename.endswith(".json"))
    except zipfile.BadZipFile as exc:
        raise VulnDBError(f"not an OSV export: not a zip archive ({exc})") from exc
    if not records:
        raise VulnDBError("not an OSV export: the zip holds no .json records")
    vulndb = VulnDB(db)
    result = UpdateResult()
    origin = f"upload sha256:{sha256[:12]}"
    if vulndb.stored_sha256(source) == sha256:
        result.reports.append(ImportReport(source, origin, skipped=True))
        return result
    try:
        result.reports.append(vulndb.import_records(source, origin, iter_zip_records(path), sha256=sha256))
    finally:
        if jobs is not None and result.written:
            result.rescan_job, result.rescan_joined = request_rescan(jobs)
    return result
