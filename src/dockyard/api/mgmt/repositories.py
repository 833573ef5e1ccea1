"""/api/v1/repositories: repository operations that are not part of the OCI API (listings, repository
delete, tag list, tag delete, retag).

Routes use `{name:path}` (repository names contain slashes), so each pattern ends in a fixed
segment (`/tags` or `/tags/{tag}`) that the greedy name cannot swallow; the repository delete
(`/{name:path}` alone) is registered last, so a tag delete is never read as a repository name."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, field_validator

from dockyard.api.mgmt.common import CallerDep, Input, Model, PagingDep, paged
from dockyard.domain.names import validate_name, validate_tag
from dockyard.domain.projects import ProjectService
from dockyard.domain.repository_listings import REPOSITORY_SORTS, TAG_SORTS, list_repositories, list_tags
from dockyard.domain.retag import point_tag
from dockyard.errors import InvalidRequest
from dockyard.policy.access import project_of
from dockyard.policy.tag_rules import make_override
from dockyard.scanning.reports import verdict_of
from dockyard.signing.formats import BUNDLE_MEDIA_TYPES, COSIGN_ARTIFACT_SIG, NOTATION_SIGNATURE

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


SIGNATURE_TYPES = frozenset({COSIGN_ARTIFACT_SIG, NOTATION_SIGNATURE, *BUNDLE_MEDIA_TYPES})
SORT_HELP = "Sort key, prefix - for descending: {}."


class TagOut(Model):
    name: str
    digest: str = Field(description="The manifest the tag points at.")
    updated_at: datetime = Field(description="When the tag was last pushed or moved.")
    media_type: str
    platforms: list[str] = Field(description="os/architecture[/variant]: an index's images, or a single image's config.")
    size: int = Field(description="Bytes: the manifest, the blobs it references and those of its child manifests.")
    last_pulled_at: datetime | None = Field(description="Flushed now and then, not on every pull.")
    scan_verdict: str = Field(description="unscanned, failed, none (clean) or the highest severity found.")
    signed: bool = Field(description="A signature is attached (cosign or Notation); whether it verifies is the pull gate's business.")

    @field_validator("updated_at", "last_pulled_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


class RepositoryOut(Model):
    name: str
    tag_count: int
    size: int = Field(description="Bytes of its manifests and of the blobs linked into it.")
    last_push: datetime | None = Field(description="When its newest manifest was stored.")
    last_pull: datetime | None


class RepositoryDeletedOut(Model):
    repository: str
    manifests: int
    tags: int
    overridden: list[str] = Field(description="Immutable tags deleted under break glass (audited as tag.override).")


def _tag_out(row) -> TagOut:
    return TagOut(name=row.name, digest=row.digest, updated_at=row.updated_at, media_type=row.media_type,
                  platforms=row.platforms, size=row.size, last_pulled_at=row.last_pulled_at,
                  scan_verdict=verdict_of(row.scan_status, row.scan_summary), signed=row.signed)


@router.get("", response_model=list[RepositoryOut], summary="Repositories the caller can see, paged and sorted")
def get_repositories(
    caller: CallerDep, paging: PagingDep, request: Request, response: Response,
    project: str | None = Query(None, description="Only this project's repositories (404 if it cannot be seen)."),
    sort: str = Query("name", description=SORT_HELP.format(", ".join(REPOSITORY_SORTS))),
):
    if project is not None:
        caller.require_project(project, "pull")
    page = list_repositories(caller.services.db, visible_projects=ProjectService.visibility(caller.principal), project=project,
                             sort=sort, page=paging.page, page_size=paging.page_size)
    return paged(request, response, page, RepositoryOut)


@router.get("/{name:path}/tags", response_model=list[TagOut], summary="Tags described for operators, paged and sorted (pull)")
def get_tags(
    name: str, caller: CallerDep, paging: PagingDep, request: Request, response: Response,
    sort: str = Query("name", description=SORT_HELP.format(", ".join(TAG_SORTS))),
):
    validate_name(name)
    caller.require_project(project_of(name), "pull")
    page = list_tags(caller.services.db, name, sort=sort, page=paging.page, page_size=paging.page_size,
                     signature_types=SIGNATURE_TYPES, storage=caller.services.storage)
    return paged(request, response, page, _tag_out)


@router.delete("/{name:path}/tags/{tag}", status_code=204, summary="Delete a tag (delete)")
def delete_tag(
    name: str, tag: str, caller: CallerDep, override_reason: str | None = Query(None, description=OVERRIDE_HELP),
    force: str | None = Query(None, include_in_schema=False),
):
    validate_name(name)
    validate_tag(tag)
    if force is not None:  # a repository delete (`repos delete --force`) of a name this route shadows: not a tag delete
        raise InvalidRequest(
            f"{name}/tags/{tag} addresses tag {tag} of repository {name}, so the repository {name}/tags/{tag} cannot be "
            "deleted on its own (delete it with its project); without force, this deletes the tag",
            detail={"repository": name, "tag": tag},
        )
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


@router.delete("/{name:path}", response_model=RepositoryDeletedOut, summary="Delete a repository with its manifests and tags (delete)")
def delete_repository(
    name: str, caller: CallerDep,
    force: bool = Query(False, description="Delete it even though it holds tags (without: 409 if it holds any)."),
    override_reason: str | None = Query(None, description="Break glass (project admins): delete immutable tags too, for "
                                                         "this reason; audited as tag.override for each."),
):
    validate_name(name)
    project = project_of(name)
    caller.require_project(project, "delete")
    override = make_override(caller.principal, override_reason, caller.source_ip, caller.user_agent)
    deleted = caller.services.repository_lifecycle.delete_repository(name, force=force, override=override)
    detail = {"force": force, "manifests": deleted.manifests, "tags": deleted.tags}
    if override:
        detail.update(override_reason=override.reason, overridden=deleted.overridden)
    caller.audit("repository.delete", name, project=project, detail=detail)
    return RepositoryDeletedOut(repository=deleted.repository, manifests=deleted.manifests, tags=deleted.tags,
                                overridden=deleted.overridden)
