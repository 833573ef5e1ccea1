"""/api/v1/projects: projects and their members."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model, PagingDep, paged, slice_page
from dockyard.policy.tag_rules import make_override

router = APIRouter(prefix="/projects", tags=["projects"])


class ProjectOut(Model):
    name: str
    public: bool
    created_at: datetime


class ProjectDetail(ProjectOut):
    repository_count: int
    actions: list[str] = Field(description="What the caller may do in this project.")


class ProjectCreate(Input):
    name: str = Field(description="One repository path component, at most 64 characters.")
    public: bool = False


class ProjectUpdate(Input):
    public: bool | None = None


class MemberOut(Model):
    username: str
    role: str
    created_at: datetime


class MemberAdd(Input):
    username: str
    role: str = Field(description="admin, maintainer, developer or guest.")


class MemberRole(Input):
    role: str = Field(description="admin, maintainer, developer or guest.")


@router.get("", response_model=list[ProjectOut], summary="Projects visible to the caller")
def list_projects(caller: CallerDep, paging: PagingDep, request: Request, response: Response):
    page = caller.services.projects.list(paging.page, paging.page_size, visible_to=caller.principal)
    return paged(request, response, page, ProjectOut)


@router.post("", response_model=ProjectOut, status_code=201, summary="Create a project (admin)")
def create_project(body: ProjectCreate, caller: CallerDep):
    caller.require_admin()
    project = caller.services.projects.create(body.name, public=body.public, creator=caller.principal)
    caller.audit("project.create", f"project {project.name}", project=project.name, detail={"public": project.public})
    return project


@router.get("/{project}", response_model=ProjectDetail, summary="One project, with the caller's actions")
def get_project(project: str, caller: CallerDep):
    actions = caller.require_project(project)
    projects = caller.services.projects
    found = projects.get(project)
    return ProjectDetail(
        name=found.name,
        public=found.public,
        created_at=found.created_at,
        repository_count=projects.repository_count(project),
        actions=sorted(actions),
    )


@router.patch("/{project}", response_model=ProjectOut, summary="Change project settings (manage-policies)")
def update_project(project: str, body: ProjectUpdate, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    changes = body.model_dump(exclude_unset=True)
    updated = caller.services.projects.update(project, **changes)
    caller.audit("project.update", f"project {project}", project=project, detail=changes)
    return updated


@router.delete("/{project}", status_code=204, summary="Delete a project; with force, its repositories too (admin)")
def delete_project(
    project: str, caller: CallerDep,
    force: bool = Query(False, description="Delete its repositories (manifests, tags) first; blobs go to GC as usual."),
    override_reason: str | None = Query(None, description="Break glass: delete immutable tags too, for this reason (audited)."),
):
    caller.require_admin("a project is deleted by a registry administrator")
    services = caller.services
    override = make_override(caller.principal, override_reason, caller.source_ip, caller.user_agent)
    detail: dict = {"force": force}
    if force:
        services.projects.get(project)  # 404 before anything is deleted
        deleted = services.repository_lifecycle.delete_project_repositories(project, override=override)
        detail.update(repositories=[d.repository for d in deleted][:100], repository_count=len(deleted),
                      manifests=sum(d.manifests for d in deleted), tags=sum(d.tags for d in deleted))
        if override:
            detail["override_reason"] = override.reason
    services.projects.delete(project)
    caller.audit("project.delete", f"project {project}", project=project, detail=detail)
    return Response(status_code=204)


# -- members ----------------------------------------------------------------------------------


@router.get("/{project}/members", response_model=list[MemberOut], summary="Members (manage-members)")
def list_members(project: str, caller: CallerDep, paging: PagingDep, request: Request, response: Response):
    caller.require_project(project, "manage-members")
    members = caller.services.projects.list_members(project)
    return paged(request, response, slice_page(members, paging), MemberOut)


@router.post("/{project}/members", response_model=MemberOut, status_code=201, summary="Add a member (manage-members)")
def add_member(project: str, body: MemberAdd, caller: CallerDep):
    caller.require_project(project, "manage-members")
    member = caller.services.projects.add_member(project, body.username, body.role)
    caller.audit("member.add", f"project/{project} member {body.username}", project=project, detail={"role": body.role})
    return member


@router.put("/{project}/members/{username}", response_model=MemberOut, summary="Change a member's role (manage-members)")
def set_member_role(project: str, username: str, body: MemberRole, caller: CallerDep):
    caller.require_project(project, "manage-members")
    member, previous = caller.services.projects.set_member_role(project, username, body.role)
    caller.audit(
        "member.update", f"project/{project} member {username}", project=project,
        detail={"role": body.role, "previous_role": previous},
    )
    return member


@router.delete("/{project}/members/{username}", status_code=204, summary="Remove a member (manage-members)")
def remove_member(project: str, username: str, caller: CallerDep):
    caller.require_project(project, "manage-members")
    removed = caller.services.projects.remove_member(project, username)
    caller.audit("member.remove", f"project/{project} member {username}", project=project, detail={"role": removed.role})
    return Response(status_code=204)
