"""/api/v1/projects/{project}/quota: a project's storage quota and usage."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model

router = APIRouter(prefix="/projects", tags=["quotas"])


class QuotaOut(Model):
    project: str
    quota_bytes: int | None = Field(description="null: unlimited.")
    used_bytes: int = Field(description="Bytes of distinct blobs linked in the project's repositories.")


class QuotaSet(Input):
    quota_bytes: int | None = Field(ge=0, le=2**63 - 1, description="null removes the quota.")


@router.get("/{project}/quota", response_model=QuotaOut, summary="Quota and usage (read-settings)")
def get_quota(project: str, caller: CallerDep):
    caller.require_project(project, "read-settings")
    return caller.services.quotas.get(project)


@router.put("/{project}/quota", response_model=QuotaOut, summary="Set or remove the quota (admin)")
def set_quota(project: str, body: QuotaSet, caller: CallerDep):
    caller.require_admin()
    previous = caller.services.quotas.get(project).quota_bytes
    quota = caller.services.quotas.set(project, body.quota_bytes)
    caller.audit("quota.set", f"project {project}", project=project,
                 detail={"quota_bytes": body.quota_bytes, "previous_quota_bytes": previous})
    return quota
