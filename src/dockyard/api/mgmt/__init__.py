"""Management REST API (/api/v1): FastAPI with OpenAPI, mounted inside the Starlette app.

`create_mgmt_api(services)` builds it; app.py mounts it with `Mount("/api/v1", app=...)`.
Handlers are thin: authenticate (common.current_caller), authorize, call a domain service, audit.
"""

from __future__ import annotations


from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from dockyard import __version__
from dockyard.api.http import on_unexpected
from dockyard.api.services import Services
from dockyard.api.mgmt import audit, login, projects, promotions, repositories, robots, tag_rules, token_keys, users
from dockyard.api.mgmt import quotas, system  # jobs, GC, quotas
from dockyard.api.mgmt import retention  # retention policies, dry runs, runs
from dockyard.api.mgmt import security  # scans, SBOMs, pull gates, allowlist, trusted keys, scanners
from dockyard.api.mgmt import webhooks  # project and system webhooks, deliveries
from dockyard.api.mgmt import events  # the change feed (list and server-sent events)
from dockyard.api.mgmt.docs import add_docs
from dockyard.api.mgmt.common import (
    ERROR_RESPONSES,
    current_principal,
    on_mgmt_error,
    on_starlette_http_exception,
    on_validation_error,
)
from dockyard.errors import DockyardError

__all__ = ["create_mgmt_api", "current_principal"]


def create_mgmt_api(services: Services) -> FastAPI:
    api = FastAPI(
        title="Dockyard management API",
        version=__version__,
        description="Projects, members, users, robot accounts, audit log and retag. "
        "Errors use the OCI format {\"errors\": [{\"code\", \"message\", \"detail\"}]}.",
        openapi_url="/openapi.json",
        docs_url=None,  # served from local assets by api/mgmt/docs.py
        redoc_url=None,
        responses=ERROR_RESPONSES,
        exception_handlers={
            DockyardError: on_mgmt_error,
            RequestValidationError: on_validation_error,
            HTTPException: on_starlette_http_exception,
            Exception: on_unexpected,
        },
    )
    api.state.services = services
    for module in (login, users, projects, robots, audit, token_keys, repositories, tag_rules, promotions):
        api.include_router(module.router)
    for module in (system, quotas):
        api.include_router(module.router)
    api.include_router(retention.router)
    api.include_router(security.router)
    api.include_router(webhooks.router)
    api.include_router(events.router)
    add_docs(api)
    return api
