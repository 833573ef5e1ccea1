"""/api/v1/promotions: promote an image to other tags, repositories or projects without moving bytes."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model
from dockyard.domain.promotion import parse_reference
from dockyard.domain.names import validate_name
from dockyard.policy.access import project_of
from dockyard.policy.tag_rules import make_override

router = APIRouter(prefix="/promotions", tags=["promotions"])


class PromotionIn(Input):
    source: str = Field(description="`project/repo:tag` or `project/repo@sha256:…`.")
    destination: str = Field(description="Destination repository, e.g. `prod/app` (the same repository: a retag).")
    tags: list[str] = Field(default_factory=list, max_length=100, description="Tags to set in the destination, atomically.")
    include_referrers: bool = Field(False, description="Bring signatures, SBOMs and other referrers along.")
    override_reason: str | None = Field(None, description="Break glass (project admins): move immutable tags anyway; audited.")


class TagMove(Model):
    tag: str
    previous: str | None


class PromotionOut(Model):
    source_repository: str
    source_digest: str
    media_type: str
    destination: str
    tags: list[TagMove]
    copied: list[str] = Field(description="Manifests newly added to the destination (the image, its children, referrers).")
    referrers: list[str]
    blobs_linked: int = Field(description="Blobs linked into the destination; no blob bytes are copied.")


@router.post("", response_model=PromotionOut, status_code=201, summary="Promote an image (pull + push, or retag)")
def promote(body: PromotionIn, caller: CallerDep):
    source = parse_reference(body.source)
    destination = validate_name(body.destination)
    src_project, dest_project = project_of(source.repository), project_of(destination)
    if source.repository == destination:
        caller.require_project(dest_project, "retag")
    else:
        caller.require_project(src_project, "pull")
        caller.require_project(dest_project, "push")
    override = make_override(caller.principal, body.override_reason, caller.source_ip, caller.user_agent)
    tags = body.tags or ([source.tag] if source.tag else [])
    # A copy runs the source's pull gate, unless the caller may push to the source (as for a pull).
    may_push_source = "push" in caller.services.access.repository_actions(caller.principal, source.repository)
    result = caller.services.promotions.promote(
        source, destination, tags, include_referrers=body.include_referrers, override=override,
        caller=caller.principal.name, source_pull_gate=not may_push_source,
    )
    caller.audit(
        "image.promote",
        f"{source} -> {destination}",
        project=dest_project,
        detail={
            "source": str(source),
            "source_digest": result.source_digest,
            "destination": destination,
            "tags": result.tags,
            "copied": len(result.copied),
            "referrers": result.referrers,
            "override_reason": override.reason if override else None,
        },
    )
    return PromotionOut(
        source_repository=result.source_repository,
        source_digest=result.source_digest,
        media_type=result.media_type,
        destination=destination,
        tags=[TagMove(tag=t, previous=p) for t, p in result.tags.items()],
        copied=result.copied,
        referrers=result.referrers,
        blobs_linked=result.blobs_linked,
    )
