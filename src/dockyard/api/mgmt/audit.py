"""/api/v1/audit: the audit log, for admins (everything) or project admins (read-audit, one project)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import field_validator

from dockyard.api.mgmt.common import PROJECT_HINT, CallerDep, Model, PagingDep, paged
from dockyard.paging import Page

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditEvent(Model):
    id: int
    time: datetime
    actor: str
    actor_kind: str
    action: str
    object: str
    project: str | None
    outcome: str
    source_ip: str | None
    user_agent: str | None
    detail: Any = None
    request_id: str | None = None  # the X-Request-Id of the request that made the entry

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


def _utc(value: datetime | None) -> datetime | None:
    """Stored times are UTC; compare in UTC whatever offset the caller used (naive means UTC)."""
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


@router.get("", response_model=list[AuditEvent], summary="Audit events, newest first")
def list_events(
    caller: CallerDep,
    paging: PagingDep,
    request: Request,
    response: Response,
    actor: str | None = Query(None, description="Username or robot$… name."),
    action: str | None = Query(None, description="Exact action (member.add) or a prefix without a dot (member)."),
    project: str | None = Query(None, description="Required unless you are an administrator (needs read-audit)."),
    since: datetime | None = Query(None, description="ISO 8601; inclusive."),
    until: datetime | None = Query(None, description="ISO 8601; exclusive."),
    outcome: Literal["success", "failure"] | None = None,
):
    if project is None:
        caller.require_admin(PROJECT_HINT)
    else:
        caller.require_project(project, "read-audit")
        if not caller.is_admin:
            # A project deleted and created again keeps its name: the new one's admins read from its creation on.
            created = _utc(caller.services.projects.get(project).created_at)
            since = created if since is None or _utc(since) < created else since
    items, total = caller.services.audit.query(
        actor=actor, action=action, project=project, since=_utc(since), until=_utc(until), outcome=outcome,
        page=paging.page, page_size=paging.page_size,
    )
    return paged(request, response, Page(items, total, paging.page, paging.page_size), AuditEvent)
