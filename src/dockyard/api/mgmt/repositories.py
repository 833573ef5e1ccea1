"""/api/v1/repositories: repository operations that are not part of the OCI API (retag)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model
from dockyard.domain.names import validate_name
from dockyard.domain.retag import point_tag
from dockyard.policy.access import project_of

router = APIRouter(prefix="/repositories", tags=["repositories"])


class Retag(Input):
    digest: str = Field(description="A manifest already in this repository, e.g. sha256:….")


class Tagged(Model):
    repository: str
    tag: str
    digest: str
    previous: str | None = Field(description="What the tag pointed at before, if it existed.")


@router.put("/{name:path}/tags/{tag}", response_model=Tagged, summary="Point a tag at a manifest (retag)")
def retag(name: str, tag: str, body: Retag, caller: CallerDep):
    validate_name(name)
    project = project_of(name)
    caller.require_project(project, "retag")
    previous = point_tag(caller.services.db, name, tag, body.digest)
    caller.audit(
        "tag.retag", f"{name}:{tag}", project=project, detail={"digest": body.digest, "previous": previous}
    )
    return Tagged(repository=name, tag=tag, digest=body.digest, previous=previous)
