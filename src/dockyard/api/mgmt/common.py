"""What every management endpoint shares: the caller, authorization checks, paging, audit, errors."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from dockyard import request_context
from dockyard.api.services import Services, services_of
from dockyard.api.access_gate import client_ip, management_challenge
from dockyard.api.http import error_response, on_dockyard_error, on_http_exception
from dockyard.auth.principals import Principal
from dockyard.paging import MAX_PAGE_SIZE, Page
from dockyard.errors import Denied, DockyardError, InvalidRequest, NotFound, Unauthorized

# Declared only so /docs offers an "Authorize" button; the gate reads the header itself.
_basic = HTTPBasic(auto_error=False, description="Username and password, robot secret, or login password.")
_bearer = HTTPBearer(auto_error=False, description="A registry access token from /token.")

log = logging.getLogger(__name__)


# The hint of a 403 for listings that need a project unless the caller is an administrator.
PROJECT_HINT = "project admins: name the project (--project / ?project=)"


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def current_principal(
    request: Request,
    _basic_creds: Annotated[HTTPBasicCredentials | None, Security(_basic)] = None,
    _bearer_creds: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Principal:
    """The authenticated caller; anonymous callers get 401."""
    services = services_of(request)
    principal: Principal = await services.gate.principal_from_request(request)
    if principal.is_anonymous:
        raise Unauthorized(
            "authentication required: send Authorization: Basic with a password, robot secret or login password",
            headers=management_challenge(services.settings.token_service),
        )
    request.state.principal = principal
    request_context.actor.set(principal.name)  # events recorded by this request name their actor
    return principal


@dataclass
class Caller:
    """The authenticated principal plus what handlers need to authorize and audit its request."""

    principal: Principal
    services: Services
    source_ip: str | None
    user_agent: str | None

    @property
    def is_admin(self) -> bool:
        return self.principal.kind == "user" and self.principal.is_admin

    def require_admin(self, hint: str = "") -> None:
        """`hint`: what a non-administrator should do instead (appended after `; `)."""
        if not self.is_admin:
            raise Denied("only registry administrators may do this" + (f"; {hint}" if hint else ""))

    def require_user(self) -> None:
        if self.principal.kind != "user":
            raise Denied("only user accounts may do this")

    def project_actions(self, project: str) -> frozenset[str]:
        return self.services.access.project_actions(self.principal, project)

    def require_project(self, project: str, action: str | None = None) -> frozenset[str]:
        """The caller's actions on `project`; 404 if it cannot see the project, 403 if `action` is missing."""
        actions = self.project_actions(project)
        if not actions:
            # Same answer whether the project is missing or merely invisible: names do not leak.
            raise NotFound(f"project {project} does not exist", detail={"project": project[:100]})
        if action is not None and action not in actions:
            raise Denied(f"{self.principal.name} may not {action} in project {project}", detail={"project": project})
        return actions

    def audit(self, action: str, object: str, *, project: str | None = None, detail: dict | None = None,
              outcome: str = "success") -> None:
        self.services.audit.record(
            actor=self.principal,
            action=action,
            object=object,
            outcome=outcome,
            project=project,
            source_ip=self.source_ip,
            user_agent=self.user_agent,
            detail=detail,
        )


async def current_caller(request: Request, principal: Annotated[Principal, Depends(current_principal)]) -> Caller:
    return Caller(
        principal=principal,
        services=services_of(request),
        source_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


CallerDep = Annotated[Caller, Depends(current_caller)]


@dataclass
class Paging:
    page: int
    page_size: int


def paging(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="1-based page number.")] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page (max 100).")] = 50,
) -> Paging:
    return Paging(page, page_size)


PagingDep = Annotated[Paging, Depends(paging)]


def paged(request: Request, response: Response, page: Page, model: type[BaseModel] | Callable[[Any], Any]) -> list:
    """Serialize a page and set X-Total-Count and, when there is more, Link: <…>; rel="next".

    `model` is a response model (validated from attributes) or a converter function."""
    convert = model.model_validate if isinstance(model, type) and issubclass(model, BaseModel) else model
    response.headers["X-Total-Count"] = str(page.total)
    if page.has_next:
        # Relative (path and query only): the Host header never reaches a response header.
        next_url = request.url.include_query_params(page=page.page + 1, page_size=page.page_size)
        response.headers["Link"] = f'<{next_url.path}?{next_url.query}>; rel="next"'
    return [convert(item) for item in page.items]


def slice_page(items: list, paging: Paging) -> Page:
    start = (paging.page - 1) * paging.page_size
    return Page(items[start : start + paging.page_size], len(items), paging.page, paging.page_size)


# -- errors: everything leaves as {"errors": [{"code", "message", "detail"}]} --------------------


async def on_mgmt_error(request: Request, exc: Exception) -> Response:
    """api.http.on_dockyard_error, after putting a refused state change on the audit record."""
    principal = getattr(request.state, "principal", None)
    if isinstance(exc, Denied) and principal is not None and request.method not in ("GET", "HEAD"):
        await _audit_denial(request, principal, exc)
    return await on_dockyard_error(request, exc)


async def _audit_denial(request: Request, principal: Principal, exc: DockyardError) -> None:
    """Aggregated like a /v2 refusal (domain/audit.py `record_refusal`): a signed-in account looping over a
    refused write adds to a count, not a row per request. A failing audit write never replaces the 403."""
    services = services_of(request)
    path = request.url.path
    try:
        await anyio.to_thread.run_sync(
            lambda: services.audit.record_refusal(
                actor=principal,
                action="api.denied",
                object=f"{request.method} {path}",
                reason=exc.message,
                code=exc.code,
                window_seconds=services.settings.audit_refusal_window_seconds,
                keys_per_actor=services.settings.audit_refusal_keys_per_actor,
                source_ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
        )
    except Exception:
        log.exception("could not record the refusal of %s %s", request.method, path)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Never echo the rejected input: it may be a password.
    problems = [
        {"field": ".".join(str(part) for part in err.get("loc", ())), "problem": err.get("msg", "invalid")}
        for err in exc.errors()
    ]
    first = problems[0] if problems else {"field": "", "problem": "invalid"}
    message = f"{first['field']}: {first['problem']}" if first["field"] else first["problem"]
    return error_response(InvalidRequest(message, detail=problems), request.method)


async def on_starlette_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        return error_response(InvalidRequest(str(exc.detail)), request.method)
    if exc.status_code == 401:
        return error_response(Unauthorized(str(exc.detail)), request.method)
    return await on_http_exception(request, exc)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": None, "description": text, "content": {"application/json": {"example": {"errors": [{"code": code, "message": text}]}}}}
    for status, code, text in (
        (400, "INVALID_REQUEST", "malformed request"),
        (401, "UNAUTHORIZED", "authentication required"),
        (403, "DENIED", "not allowed"),
        (404, "NOT_FOUND", "no such object"),
    )
}
