"""/api/v1/system: garbage collection runs, background jobs and the vulnerability database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model, PagingDep, paged
from dockyard.errors import InvalidRequest
from dockyard.jobs.gc import MAX_GRACE_SECONDS, MIN_GRACE_SECONDS
from dockyard.metadata import job_kinds

router = APIRouter(prefix="/system", tags=["system"])


class JobOut(Model):
    id: int
    kind: str
    state: str = Field(description="queued, running, waiting (for its child jobs), succeeded or failed.")
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    run_after: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any] | None = Field(description="Updated while the job runs.")
    result: dict[str, Any] | None = Field(description="For gc: candidates, deleted, bytes_freed, seconds, …")
    error: str | None
    parent_id: int | None = Field(None, description="The job this one is a child of (an index scan's platform image).")
    fair_key: str = Field("", description="Claims go round-robin over these (the project, for scans).")


class GcRequest(Input):
    dry_run: bool = Field(False, description="Only count what would be deleted (blobs and bytes).")
    grace_seconds: int | None = Field(
        None, le=MAX_GRACE_SECONDS, description=f"This run's grace period instead of gc_grace_seconds; at least {MIN_GRACE_SECONDS} (in-flight pushes)."
    )


@router.post("/gc", response_model=JobOut, status_code=202, summary="Start garbage collection (admin)")
def start_gc(body: GcRequest, caller: CallerDep):
    caller.require_admin()
    if body.grace_seconds is not None and body.grace_seconds < MIN_GRACE_SECONDS:
        raise InvalidRequest(
            f"grace_seconds must be at least {MIN_GRACE_SECONDS}: the grace protects blobs a push uploaded but has not "
            "referenced yet", detail={"grace_seconds": body.grace_seconds, "minimum": MIN_GRACE_SECONDS},
        )
    services = caller.services
    payload: dict[str, Any] = {"dry_run": body.dry_run}
    if body.grace_seconds is not None:
        payload["grace_seconds"] = body.grace_seconds
    job_id = services.jobs.enqueue(job_kinds.GC, payload, max_attempts=3)
    services.worker.wake()
    caller.audit("gc.start", f"job {job_id}", detail=payload)
    return services.jobs.get(job_id)


@router.get("/gc", response_model=list[JobOut], summary="Garbage collection runs, newest first (admin)")
def list_gc(caller: CallerDep, paging: PagingDep, request: Request, response: Response):
    caller.require_admin()
    return paged(request, response, caller.services.jobs.list(job_kinds.GC, paging.page, paging.page_size), JobOut)


class VulnSourceOut(Model):
    source: str = Field(description="An OSV ecosystem (PyPI, Debian, …) or the folder an import came from.")
    origin: str = Field(description="The export's URL or local path.")
    imported_at: datetime
    advisories: int = Field(description="Valid records in this source's last import.")
    withdrawn: int
    invalid: int = Field(description="Records skipped as not valid OSV.")


class VulnDBStatusOut(Model):
    updated_at: datetime | None = Field(description="The newest import; null if the database was never updated.")
    advisories: int = Field(description="Distinct advisories stored (one advisory can be in several sources).")
    withdrawn: int
    sources: list[VulnSourceOut]


@router.get("/vulndb", response_model=VulnDBStatusOut, summary="Vulnerability database status (any signed-in caller)")
def vulndb_status(caller: CallerDep):
    from dockyard.scanning.vulndb import VulnDB

    return VulnDB(caller.services.db).status().as_dict()


@router.post("/vulndb/update", response_model=JobOut, status_code=202, summary="Update the vulnerability database (admin)")
def update_vulndb(caller: CallerDep):
    """Queue a `vulndb-update` job (downloads the `vulndb_ecosystems` exports from `vulndb_url`),
    or join the one already queued or running."""
    from dockyard.scanning.updates import UPDATE_KIND

    caller.require_admin()
    services = caller.services
    active = services.jobs.active(UPDATE_KIND)
    job_id = active["id"] if active is not None else services.jobs.enqueue(UPDATE_KIND, {}, max_attempts=3)
    services.worker.wake()
    caller.audit("vulndb.update", f"job {job_id}", detail={"joined": active is not None})
    return services.jobs.get(job_id)


class VulnImportReportOut(Model):
    source: str
    origin: str
    records: int
    written: int
    unchanged: int
    withdrawn: int
    invalid: int
    skipped: bool = Field(description="The same export (sha256) as the source's last import: nothing was read.")
    errors: list[str] = Field(description="The first invalid records, with why.")


class VulnImportOut(Model):
    written: int = Field(description="Advisories written (new or changed).")
    rescan_job: int | None = Field(description="The rescan requested because something changed; null if nothing did.")
    rescan_joined: bool
    sources: list[VulnImportReportOut]


@router.post(
    "/vulndb/import", response_model=VulnImportOut,
    summary="Import an uploaded OSV export zip into the vulnerability database (admin)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def import_vulndb(
    caller: CallerDep,
    request: Request,
    source: str = Query(description="The source it replaces, as `vulndb update` names them: the OSV ecosystem "
                        "(PyPI, Debian:12, …) of an `<ECOSYSTEM>/all.zip` export."),
):
    """For air-gapped registries: the body is one OSV export zip, as `dockyard vulndb update --from FILE`
    takes, streamed to a temporary file (at most MAX_IMPORT_BYTES) only after the caller is authorized,
    then imported into this server's database; a rescan is queued when anything changed."""
    import anyio

    from dockyard.api.mgmt.uploads import receive_to_file
    from dockyard.errors import InvalidRequest
    from dockyard.scanning.updates import MAX_IMPORT_BYTES, import_upload
    from dockyard.scanning.vulndb import VulnDBError

    caller.require_admin("import on the registry host with `dockyard vulndb update --from FILE`")
    services = caller.services
    async with receive_to_file(request, services.settings.data_dir, MAX_IMPORT_BYTES) as (path, sha256, size):
        try:
            result = await anyio.to_thread.run_sync(import_upload, services.db, services.jobs, source, path, sha256)
        except VulnDBError as exc:
            raise InvalidRequest(str(exc), detail={"source": source[:80]}) from exc
    if result.rescan_job is not None:
        services.worker.wake()
    caller.audit("vulndb.import", f"source {source}", detail={"bytes": size, "sha256": sha256, "written": result.written,
                                                            "rescan_job": result.rescan_job})
    return result.as_dict()


@router.get("/jobs", response_model=list[JobOut], summary="Background jobs, newest first (admin)")
def list_jobs(
    caller: CallerDep, paging: PagingDep, request: Request, response: Response,
    kind: str | None = Query(None, description="Only jobs of this kind (gc, retention, …)."),
):
    caller.require_admin()
    return paged(request, response, caller.services.jobs.list(kind, paging.page, paging.page_size), JobOut)


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job, with its progress and result (admin)")
def get_job(job_id: Annotated[int, Path(ge=1, le=2**31 - 1)], caller: CallerDep):
    caller.require_admin()
    return caller.services.jobs.get(job_id)
