"""/api/v1/system: garbage collection runs and background jobs (registry administrators)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model, PagingDep, paged

router = APIRouter(prefix="/system", tags=["system"])


class JobOut(Model):
    id: int
    kind: str
    state: str = Field(description="queued, running, succeeded or failed.")
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


class GcRequest(Input):
    dry_run: bool = Field(False, description="Only count what would be deleted (blobs and bytes).")


@router.post("/gc", response_model=JobOut, status_code=202, summary="Start garbage collection (admin)")
def start_gc(body: GcRequest, caller: CallerDep):
    caller.require_admin()
    services = caller.services
    job_id = services.jobs.enqueue("gc", {"dry_run": body.dry_run}, max_attempts=3)
    services.worker.wake()
    caller.audit("gc.start", f"job {job_id}", detail={"dry_run": body.dry_run})
    return services.jobs.get(job_id)


@router.get("/gc", response_model=list[JobOut], summary="Garbage collection runs, newest first (admin)")
def list_gc(caller: CallerDep, paging: PagingDep, request: Request, response: Response):
    caller.require_admin()
    return paged(request, response, caller.services.jobs.list("gc", paging.page, paging.page_size), JobOut)


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
