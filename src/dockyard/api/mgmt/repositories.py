"""/api/v1/repositories: repository operations that are not part of the OCI API (tag list, tag delete, retag).

Routes use `{name:path}` (repository names contain slashes), so each pattern ends in a fixed
segment (`/tags` or `/tags/{tag}`) that the greedy name cannot swallow."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, field_validator

from dockyard.api.mgmt.common import CallerDep, Input, Model, PagingDep, paged
from dockyard.domain.names import validate_name, validate_tag
from dockyard.domain.repository_admin import list_tags
from dockyard.domain.retag import point_tag
from dockyard.policy.access import project_of
from dockyard.policy.tag_rules import make_override

router = APIRouter(prefix="/repositories", tags=["repositories"])


OVERRIDE_HELP = "Break glass (project admins): change an immutable tag anyway, for this reason; audited as tag.override."


class Retag(Input):
    digest: str = Field(description="A manifest already in this repository, e.g. sha256:….")
    override_reason: str | None = Field(None, description=OVERRIDE_HELP)


class Tagged(Model):
    repository: str
    tag: str
    digest: str
    previous: str | None = Field(description="What the tag pointed at before, if it existed.")


class TagOut(Model):
    name: str
    digest: str = Field(description="The manifest the tag points at.")
    updated_at: datetime

    @field_validator("updated_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


@router.get("/{name:path}/tags", response_model=list[TagOut], summary="Tags with their digests (pull)")
def get_tags(name: str, caller: CallerDep, paging: PagingDep, request: Request, response: Response):
    validate_name(name)
    caller.require_project(project_of(name), "pull")
    page = list_tags(caller.services.db, name, paging.page, paging.page_size)
    return paged(request, response, page, TagOut)


@router.delete("/{name:path}/tags/{tag}", status_code=204, summary="Delete a tag (delete)")
def delete_tag(
    name: str, tag: str, caller: CallerDep, override_reason: str | None = Query(None, description=OVERRIDE_HELP)
):
    validate_name(name)
    validate_tag(tag)
    project = project_of(name)
    caller.require_project(project, "delete")
    override = make_override(caller.principal, override_reason, caller.source_ip, caller.user_agent)
    caller.services.manifests.delete(name, tag, None, override=override)
    caller.audit("tag.delete", f"{name}:{tag}", project=project, detail={"override_reason": override_reason} if override else None)
    return Response(status_code=204)


@router.put("/{name:path}/tags/{tag}", response_model=Tagged, summary="Point a tag at a manifest (retag)")
def retag(name: str, tag: str, body: Retag, caller: CallerDep):
    validate_name(name)
    project = project_of(name)
    caller.require_project(project, "retag")
    override = make_override(caller.principal, body.override_reason, caller.source_ip, caller.user_agent)
    services = caller.services
    previous = point_tag(services.db, name, tag, body.digest, tag_policy=services.tag_policy, override=override)
    detail = {"digest": body.digest, "previous": previous}
    if override:
        detail["override_reason"] = override.reason
    caller.audit("tag.retag", f"{name}:{tag}", project=project, detail=detail)
    return Tagged(repository=name, tag=tag, digest=body.digest, previous=previous)
