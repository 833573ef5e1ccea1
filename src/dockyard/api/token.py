"""/token: the Docker token service (GET with Basic credentials, POST OAuth2 password/refresh grants).

Grants are the intersection of what was asked and what the caller may do; a partial or empty
grant is not an error (the registry refuses later, with a clear message).
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from dockyard.api.services import services_of
from dockyard.api.access_gate import AccessGate, parse_basic
from dockyard.api.http import json_response
from dockyard.auth.authenticator import LOGIN_PASSWORD
from dockyard.auth.principals import ANONYMOUS, Principal
from dockyard.auth.scopes import ALL_ACTIONS, Scope, parse_scopes
from dockyard.errors import InvalidRequest, TooManyScopes, Unauthorized, Unsupported

InvalidGrant = InvalidRequest


def grant(gate: AccessGate, principal: Principal, requested: list[Scope]) -> list[Scope]:
    granted: list[Scope] = []
    for scope in requested:
        if scope.type == "registry" and scope.name == "catalog":
            if not principal.is_anonymous:
                granted.append(Scope("registry", "catalog", ("*",)))
            continue
        if scope.type != "repository":
            continue
        permitted = gate.access.repository_actions(principal, scope.name)
        wanted = ALL_ACTIONS if "*" in scope.actions else scope.actions
        actions = tuple(a for a in wanted if a in permitted)
        granted.append(Scope("repository", scope.name, actions))
    return granted


def _check_service(gate: AccessGate, service: str | None) -> None:
    if service and service != gate.settings.token_service:
        raise InvalidGrant(f"unknown service {service!r}; this registry is {gate.settings.token_service!r}")


def _scopes(gate: AccessGate, values: list[str]) -> list[Scope]:
    """Parse, and refuse more than `token_max_scopes` distinct scopes: each costs an access check
    now and bytes in the token (and in every node's token cache) for its whole life."""
    limit = gate.settings.token_max_scopes
    if len(values) > 4 * limit or sum(len(v) for v in values) > 1024 * limit:
        raise TooManyScopes(f"a token request may ask for at most {limit} scopes")
    scopes = list(dict.fromkeys(parse_scopes(values)))
    if len(scopes) > limit:
        raise TooManyScopes(f"a token request may ask for at most {limit} scopes; this one asked for {len(scopes)}")
    return scopes


async def _respond(gate: AccessGate, principal: Principal, scopes: list[Scope], offline: bool, oauth: bool) -> Response:
    granted = await anyio.to_thread.run_sync(grant, gate, principal, scopes)
    issued = gate.tokens.issue(principal, granted)
    body = {"token": issued.token, "access_token": issued.token, "expires_in": issued.expires_in, "issued_at": issued.issued_at}
    if oauth:
        body["scope"] = " ".join(str(s) for s in granted)
    # A login password is short-lived by design: it must not buy a 30-day refresh token. Leaving
    # the field out (not an error) keeps `docker login` with a login password working.
    if offline and not principal.is_anonymous and principal.credential != LOGIN_PASSWORD:
        body["refresh_token"] = await anyio.to_thread.run_sync(gate.tokens.issue_refresh, principal)
    return json_response(body, headers={"Cache-Control": "no-store"})


async def token_get(request: Request) -> Response:
    gate: AccessGate = services_of(request).gate
    if not gate.enabled:
        raise Unsupported("authentication is disabled on this registry")
    query = request.query_params
    _check_service(gate, query.get("service"))
    header = gate.authorization(request)
    principal = ANONYMOUS
    if header:
        creds = parse_basic(header)
        if creds is None:
            raise Unauthorized("malformed Authorization header; use Basic credentials")
        principal = await gate.login(creds[0], creds[1], request)
    scopes = _scopes(gate, query.getlist("scope"))
    return await _respond(gate, principal, scopes, query.get("offline_token") == "true", oauth=False)


async def token_post(request: Request) -> Response:
    gate: AccessGate = services_of(request).gate
    if not gate.enabled:
        raise Unsupported("authentication is disabled on this registry")
    form = await request.form()
    _check_service(gate, form.get("service"))
    grant_type = form.get("grant_type")
    scopes = _scopes(gate, [str(v) for v in form.getlist("scope")])
    if grant_type == "password":
        username, password = form.get("username"), form.get("password")
        if not username or password is None:
            raise InvalidGrant("password grant needs username and password")
        principal = await gate.login(str(username), str(password), request)
        offline = form.get("access_type") == "offline"
    elif grant_type == "refresh_token":
        refresh = form.get("refresh_token")
        found = await anyio.to_thread.run_sync(gate.tokens.refresh_grant, str(refresh or ""))
        principal = await anyio.to_thread.run_sync(gate.authenticator.account, found.subject) if found else None
        # The very account it was issued to, with the same credentials: not a re-created namesake,
        # and not after a password change, robot rotation or disable.
        if principal is None or (principal.id, principal.epoch) != (found.account_id, found.epoch):
            raise Unauthorized("refresh token is invalid, expired or revoked, or its account is disabled")
        offline = False
    else:
        raise InvalidGrant(f"unsupported grant_type {grant_type!r}; use password or refresh_token")
    response = await _respond(gate, principal, scopes, offline, oauth=True)
    return response
