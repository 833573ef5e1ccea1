"""/api/v1/projects/{project}/retention-policies: retention policies, their dry run and their runs (manage-policies)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model, PagingDep, paged, slice_page

router = APIRouter(prefix="/projects/{project}/retention-policies", tags=["retention"])
# Bounded so an out-of-range id is a 400, not a database integer overflow.
PolicyId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The policy id.")]


class PolicyIn(Input):
    name: str = Field(description="Unique in the project; letters, digits, space, `.`, `_`, `-` (≤ 100).")
    repository_pattern: str = Field("**", description="Glob (with `**`) over repository paths inside the project.")
    format: Literal["ecr", "native"] = Field(description="`ecr`: an AWS ECR lifecycle policy as is; `native`: docs/retention.md.")
    document: dict[str, Any] = Field(description='The policy JSON: `{"rules": [...]}`.')
    schedule: str | None = Field(None, description="Cron expression (UTC), e.g. `0 3 * * *`; null: on demand only.")
    enabled: bool = True


class PolicyOut(Model):
    id: int
    project: str
    name: str
    repository_pattern: str
    format: str
    document: dict[str, Any]
    schedule: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime
    last_run_at: datetime | None


class Report(Model):
    policy: dict[str, Any]
    dry_run: bool
    evaluated_at: datetime
    summary: dict[str, int]
    repositories: list[dict[str, Any]] = Field(
        description="Per repository, every artifact's decision: {digest, tags, action (keep|expire), rule, reason, "
        "protection, pushed_at, last_pulled_at} and, for a run, outcome."
    )


class RunOut(Model):
    job_id: int | None = Field(description="The queued job (GET /api/v1/jobs/{id}); null when run with ?sync=true.")
    report: Report | None = None


def _audit_detail(body: PolicyIn) -> dict:
    return {"name": body.name, "format": body.format, "repository_pattern": body.repository_pattern,
            "schedule": body.schedule, "enabled": body.enabled, "document": body.document}


@router.get("", response_model=list[PolicyOut], summary="Retention policies of a project (manage-policies)")
def list_policies(project: str, caller: CallerDep, paging: PagingDep, request: Request, response: Response):
    caller.require_project(project, "manage-policies")
    return paged(request, response, slice_page(caller.services.retention.list(project), paging), PolicyOut)


@router.post("", response_model=PolicyOut, status_code=201, summary="Create a retention policy (manage-policies)")
def create_policy(project: str, body: PolicyIn, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    policy = caller.services.retention.create(project, **body.model_dump())
    caller.audit("retention-policy.create", f"project/{project} retention-policy {policy.id}", project=project,
                 detail=_audit_detail(body))
    return policy


@router.get("/{policy_id}", response_model=PolicyOut, summary="One retention policy (manage-policies)")
def get_policy(project: str, policy_id: PolicyId, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    return caller.services.retention.get(project, policy_id)


@router.put("/{policy_id}", response_model=PolicyOut, summary="Replace a retention policy (manage-policies)")
def replace_policy(project: str, policy_id: PolicyId, body: PolicyIn, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    policy = caller.services.retention.update(project, policy_id, **body.model_dump())
    caller.audit("retention-policy.update", f"project/{project} retention-policy {policy_id}", project=project,
                 detail=_audit_detail(body))
    return policy


@router.delete("/{policy_id}", status_code=204, summary="Delete a retention policy and its schedule (manage-policies)")
def delete_policy(project: str, policy_id: PolicyId, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    policy = caller.services.retention.delete(project, policy_id)
    caller.audit("retention-policy.delete", f"project/{project} retention-policy {policy_id}", project=project,
                 detail={"name": policy.name})
    return Response(status_code=204)


@router.post("/{policy_id}/dry-run", response_model=Report, summary="What a run would do, and why (manage-policies)")
async def dry_run(project: str, policy_id: PolicyId, caller: CallerDep):
    await anyio.to_thread.run_sync(caller.require_project, project, "manage-policies")
    services = caller.services
    await services.pulls.flush_async()  # judge by the latest pulls this process has seen
    return await anyio.to_thread.run_sync(services.retention.dry_run, project, policy_id)


@router.post("/{policy_id}/run", response_model=RunOut, status_code=202, summary="Run a policy now (manage-policies)")
async def run(
    project: str,
    policy_id: PolicyId,
    caller: CallerDep,
    response: Response,
    sync: Annotated[bool, Query(description="Run in this request and return the report instead of queueing a job.")] = False,
):
    await anyio.to_thread.run_sync(caller.require_project, project, "manage-policies")
    services = caller.services
    await anyio.to_thread.run_sync(services.retention.get, project, policy_id)
    if sync or services.retention.jobs is None:
        await services.pulls.flush_async()
        report = await anyio.to_thread.run_sync(
            lambda: services.retention.run(policy_id, actor=caller.principal)
        )
        caller_audit = {"policy_id": policy_id, "sync": True, "summary": report["summary"]}
        await anyio.to_thread.run_sync(
            lambda: caller.audit("retention.run", f"project/{project} retention-policy {policy_id}", project=project,
                                 detail=caller_audit)
        )
        response.status_code = 200
        return {"job_id": None, "report": report}
    job_id = await anyio.to_thread.run_sync(services.retention.enqueue, policy_id, caller.principal)
    await anyio.to_thread.run_sync(
        lambda: caller.audit("retention.run", f"project/{project} retention-policy {policy_id}", project=project,
                             detail={"policy_id": policy_id, "job_id": job_id})
    )
    return {"job_id": job_id, "report": None}
