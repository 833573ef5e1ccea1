"""/api/v1/projects/{project}/webhooks (manage-webhooks: project admins) and /api/v1/system/webhooks
(system administrators): endpoints, ping, secret rotation, the delivery log and redelivery."""

# No `from __future__ import annotations`: the handlers' `Scope` is local to _routes, and FastAPI
# must see it as an evaluated annotation.

from datetime import datetime

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model, PagingDep, paged
from dockyard.webhooks.service import Webhook

router = APIRouter(tags=["webhooks"])
WebhookId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The webhook's id.")]
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The delivery's id.")]


class WebhookOut(Model):
    id: int
    project: str | None = Field(description="None for a system-wide hook.")
    name: str
    url: str
    format: str = Field(description="cloudevents, harbor or slack.")
    event_types: list[str] = Field(description="Empty: every type. `artifact` matches every artifact.* type.")
    repository_pattern: str | None
    tag_pattern: str | None
    enabled: bool
    consecutive_failures: int
    disabled_reason: str | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, hook: Webhook) -> "WebhookOut":
        return cls.model_validate(hook)


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="The Standard Webhooks secret (whsec_…). Shown once; store it now.")


class WebhookCreate(Input):
    url: str = Field(max_length=2000, description="http(s) URL the events are POSTed to.")
    name: str | None = Field(None, max_length=100, description="Defaults to the URL's host.")
    format: str = Field("cloudevents", description="cloudevents, harbor or slack.")
    event_types: list[str] = Field(default_factory=list, description="Event types or prefixes; empty: all.")
    repository_pattern: str | None = Field(None, description="Glob over repositories (inside the project for project hooks).")
    tag_pattern: str | None = Field(None, description="Glob over tags; events without a tag then never match.")
    enabled: bool = True


class WebhookUpdate(Input):
    url: str | None = Field(None, max_length=2000)
    name: str | None = Field(None, max_length=100)
    format: str | None = None
    event_types: list[str] | None = None
    repository_pattern: str | None = None
    tag_pattern: str | None = None
    enabled: bool | None = Field(None, description="true re-enables a disabled hook; deliveries pending when it was disabled go out.")


class AttemptOut(Model):
    attempt: int
    started_at: datetime
    duration_ms: int
    outcome: str
    status_code: int | None
    response_body: str | None = Field(description="The first KiB of the answer, control characters escaped.")
    error: str | None


class DeliveryOut(Model):
    id: int
    webhook_id: int
    event_key: str = Field(description="The webhook-id header: the same on every attempt.")
    event_type: str
    repository: str | None
    state: str = Field(description="queued, succeeded, dead (attempts spent), or failed (a ping).")
    attempts: int
    max_attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    log: list[AttemptOut]


def project_scope(project: str, caller: CallerDep) -> str:
    """Project hooks: the project's admins (manage-webhooks); others get 404 or 403 as for any project."""
    caller.require_project(project, "manage-webhooks")
    return project


def system_scope(caller: CallerDep) -> None:
    """System-wide hooks: system administrators only."""
    caller.require_admin("project admins: name the project (--project / /api/v1/projects/{project}/webhooks)")
    return None


def _name(body: WebhookCreate) -> str:
    if body.name:
        return body.name
    from urllib.parse import urlsplit

    try:
        return (urlsplit(body.url).hostname or body.url)[:100]
    except ValueError:
        return body.url[:100]


def _routes(prefix: str, scope_dependency) -> None:
    """The same operations under both prefixes; the dependency authorizes and names the scope
    (a project, or None for the system-wide hooks)."""
    Scope = Annotated[str | None, Depends(scope_dependency)]
    tag = "project" if scope_dependency is project_scope else "system"

    @router.get(prefix, response_model=list[WebhookOut], summary=f"List {tag} webhooks", name=f"list_{tag}_webhooks")
    def list_hooks(caller: CallerDep, paging: PagingDep, request: Request, response: Response, p: Scope):
        page = caller.services.webhooks.list(p, paging.page, paging.page_size)
        return paged(request, response, page, WebhookOut.of)

    @router.post(prefix, response_model=WebhookWithSecret, status_code=201, name=f"create_{tag}_webhook",
                 summary=f"Create a {tag} webhook; its signing secret is returned once")
    def create_hook(body: WebhookCreate, caller: CallerDep, p: Scope):
        hook, secret = caller.services.webhooks.create(
            p, name=_name(body), url=body.url, format=body.format, event_types=body.event_types,
            repository_pattern=body.repository_pattern, tag_pattern=body.tag_pattern, enabled=body.enabled,
            created_by=caller.principal.name, caller_is_admin=caller.is_admin,
        )
        caller.audit("webhook.create", f"webhook {hook.id}", project=p, detail={"format": hook.format})
        return WebhookWithSecret(**WebhookOut.of(hook).model_dump(), secret=secret)

    @router.get(prefix + "/{webhook_id}", response_model=WebhookOut, name=f"get_{tag}_webhook", summary=f"One {tag} webhook")
    def get_hook(webhook_id: WebhookId, caller: CallerDep, p: Scope):
        return WebhookOut.of(caller.services.webhooks.get(webhook_id, p))

    @router.patch(prefix + "/{webhook_id}", response_model=WebhookOut, name=f"update_{tag}_webhook",
                  summary=f"Change a {tag} webhook (url, format, filters, enabled)")
    def update_hook(webhook_id: WebhookId, body: WebhookUpdate, caller: CallerDep, p: Scope):
        changes = body.model_dump(exclude_unset=True)
        hook = caller.services.webhooks.update(webhook_id, p, caller_is_admin=caller.is_admin, **changes)
        caller.audit("webhook.update", f"webhook {webhook_id}", project=p, detail={"fields": sorted(changes)})
        return WebhookOut.of(hook)

    @router.delete(prefix + "/{webhook_id}", status_code=204, name=f"delete_{tag}_webhook", summary=f"Delete a {tag} webhook")
    def delete_hook(webhook_id: WebhookId, caller: CallerDep, p: Scope):
        caller.services.webhooks.delete(webhook_id, p)
        caller.audit("webhook.delete", f"webhook {webhook_id}", project=p)
        return Response(status_code=204)

    @router.post(prefix + "/{webhook_id}/ping", response_model=DeliveryOut, name=f"ping_{tag}_webhook",
                 summary="Send a webhook.ping now and return its delivery")
    def ping_hook(webhook_id: WebhookId, caller: CallerDep, p: Scope):
        return caller.services.webhook_dispatcher.ping(webhook_id, p)

    @router.post(prefix + "/{webhook_id}/rotate-secret", response_model=WebhookWithSecret, name=f"rotate_{tag}_webhook_secret",
                 summary="A new signing secret, returned once; the old one also signs for webhook_secret_overlap_seconds")
    def rotate_secret(webhook_id: WebhookId, caller: CallerDep, p: Scope):
        hook, secret = caller.services.webhooks.rotate_secret(webhook_id, p)
        caller.audit("webhook.rotate-secret", f"webhook {webhook_id}", project=p)
        return WebhookWithSecret(**WebhookOut.of(hook).model_dump(), secret=secret)

    @router.get(prefix + "/{webhook_id}/deliveries", response_model=list[DeliveryOut], name=f"{tag}_webhook_deliveries",
                summary="The delivery log, newest first, with every attempt")
    def deliveries(webhook_id: WebhookId, caller: CallerDep, paging: PagingDep, request: Request, response: Response,
                   p: Scope,
                   state: str | None = Query(None, description="queued, succeeded, dead or failed.")):
        page = caller.services.webhooks.deliveries(webhook_id, p, paging.page, paging.page_size, state)
        return paged(request, response, page, lambda item: item)

    @router.post(prefix + "/{webhook_id}/deliveries/{delivery_id}/redeliver", response_model=DeliveryOut,
                 name=f"redeliver_{tag}_webhook", summary="Queue a delivery again (same webhook-id, fresh attempts)")
    def redeliver(webhook_id: WebhookId, delivery_id: DeliveryId, caller: CallerDep, p: Scope):
        out = caller.services.webhooks.redeliver(webhook_id, p, delivery_id)
        caller.services.worker.wake()
        caller.audit("webhook.redeliver", f"webhook {webhook_id} delivery {delivery_id}", project=p)
        return out


_routes("/projects/{project}/webhooks", project_scope)
_routes("/system/webhooks", system_scope)
