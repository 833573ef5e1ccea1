"""The access gate for /v2 and /api/v1: who is calling, and may they do this?

Routes declare the access they need (see api/oci/routes.py); `guarded` enforces it in this one
place. Bearer tokens carry their grants, so the hot path is a cache lookup and a set test.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import binascii
import ipaddress
from collections.abc import Awaitable, Callable, Mapping

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from dockyard.api.services import services_of
from dockyard.api.http import quote_param
from dockyard.auth.authenticator import Authenticator, LoginFailed
from dockyard import request_context
from dockyard.auth.principals import ANONYMOUS, ROBOT_PREFIX, Principal
from dockyard.auth.scopes import challenge_scope
from dockyard.auth.throttle import ThrottleBusy
from dockyard.auth.tokens import InvalidToken, TokenService, VerifiedToken
from dockyard.domain.audit import AuditService
from dockyard.domain.project_admission import ProjectAdmission
from dockyard.domain.names import validate_name
from dockyard.errors import CredentialsTooLarge, Denied, NameUnknown, Unauthorized
from dockyard.policy.access import AccessPolicy, project_of
from dockyard.settings import Settings

log = logging.getLogger(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]
# A route's audit actions by method: a name, or a function of the path parameters choosing one.
AuditActions = dict[str, str | Callable[[Mapping[str, str]], str]]
_BUSY_RETRIES = 50
_BUSY_WAIT_SECONDS = 0.1


def management_challenge(realm: str) -> dict[str, str]:
    """The 401 challenge of /api/v1. Not `Basic`: a browser would prompt for and then cache credentials,
    sending them with every later (cross-site) request. Clients send `Authorization: Basic` unprompted."""
    return {"WWW-Authenticate": f"Dockyard realm={quote_param(realm)}"}



Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def client_address(request: Request, trusted: Networks) -> str | None:
    """The client's address. X-Forwarded-For is believed only from a peer in `trusted` (trusted_proxies):
    walking it from the right, the first address that is not a trusted proxy is the client. Anyone
    else can write anything into that header, so for them it is ignored."""
    peer = request.client.host if request.client else None
    if not trusted or peer is None or not _within(peer, trusted):
        return peer
    address = peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return address  # garbage: trust ends with the last proxy that vouched for something
        address = str(ip)
        if not any(ip in network for network in trusted):
            return address
    return address


def _within(address: str, networks: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(request: Request) -> str | None:
    return client_address(request, services_of(request).gate.trusted_proxies)


def parse_basic(header: str) -> tuple[str, str] | None:
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def token_principal(token: VerifiedToken) -> Principal:
    if not token.subject:
        return ANONYMOUS
    return Principal("robot" if token.subject.startswith(ROBOT_PREFIX) else "user", token.subject)


class AccessGate:
    def __init__(
        self,
        settings: Settings,
        tokens: TokenService,
        authenticator: Authenticator,
        access: AccessPolicy,
        audit: AuditService,
        admission: ProjectAdmission,
    ):
        self.admission = admission  # auto-created projects on push, the catalog's filter
        self.db = access.db
        self.settings = settings
        self.tokens = tokens
        self.authenticator = authenticator
        self.access = access
        self.audit = audit
        self.enabled = settings.auth_mode != "none"
        self.trusted_proxies: Networks = tuple(ipaddress.ip_network(c) for c in settings.trusted_proxies)

    # -- identity -------------------------------------------------------------------------

    def authorization(self, request: Request) -> str:
        """The Authorization header, refused when longer than `token_max_bytes`: no token or login
        password Dockyard issues comes near it, and it bounds what one request can make us parse."""
        header = request.headers.get("authorization", "")
        if len(header) > self.settings.token_max_bytes:
            raise CredentialsTooLarge(f"the Authorization header is longer than {self.settings.token_max_bytes} bytes")
        return header

    async def login(self, username: str, password: str, request: Request) -> Principal:
        """Verify a username/password (or robot secret, or login password). Every failure is
        audited; a success only when the credentials were really checked, not on a cache hit,
        so Basic auth on /v2 does not write a row per request."""
        ip = client_ip(request)
        cached = await self.db.run_fast(self.authenticator.cached, username, password)
        if cached is not None:
            return cached
        try:
            principal, fresh = await self._check(username, password, ip)
        except LoginFailed as exc:
            await self._audit_auth(Principal("user", username), "failure", request, {"reason": str(exc)})
            if exc.delay:
                await asyncio.sleep(exc.delay)
            raise Unauthorized("invalid username or password") from exc
        if fresh:
            await self._audit_auth(principal, "success", request, None)
        return principal

    async def _check(self, username: str, password: str, ip: str | None) -> tuple[Principal, bool]:
        """Check credentials; while other attempts of this address and account hold the throttle's
        budget, wait for them (they may succeed and fill the credential cache) instead of failing."""
        for _ in range(_BUSY_RETRIES):
            try:
                return await anyio.to_thread.run_sync(self.authenticator.check, username, password, ip)
            except ThrottleBusy:
                await asyncio.sleep(_BUSY_WAIT_SECONDS)
        return await anyio.to_thread.run_sync(self.authenticator.check, username, password, ip)

    async def _audit_auth(self, principal: Principal, outcome: str, request: Request, detail: dict | None) -> None:
        await anyio.to_thread.run_sync(
            lambda: self.audit.record(
                actor=principal,
                action=f"auth.{outcome}",
                object=f"login {principal.name}",
                outcome=outcome,
                source_ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
                detail=detail,
            )
        )

    async def principal_from_request(self, request: Request) -> Principal:
        """The caller of a management request, from Basic credentials; else anonymous.

        Registry bearer tokens are refused here: a token CI holds for `repository:x:pull` must not
        carry its owner's full account power into the management API."""
        header = self.authorization(request)
        if header[:7].lower() == "bearer ":
            raise Unauthorized(
                "the management API takes Basic credentials (a password, a robot secret, or the output of "
                "`dockyard get-login-password`), not registry bearer tokens",
                headers=management_challenge(self.settings.token_service),
            )
        creds = parse_basic(header) if header else None
        if creds is not None:
            try:
                return await self.login(creds[0], creds[1], request)
            except Unauthorized as exc:
                exc.headers = {**management_challenge(self.settings.token_service), **exc.headers}
                raise
        return ANONYMOUS

    # -- /v2 authorization ------------------------------------------------------------------

    def challenge(self, request: Request, scope: str | None, error: str | None = None) -> dict[str, str]:
        """The /v2 challenge. Every parameter is a quoted-string with escaping; the realm comes from
        public_url when set, else from the Host header that api/surface.py has already validated."""
        if self.settings.auth_mode == "basic":
            return {"WWW-Authenticate": f"Basic realm={quote_param(self.settings.token_service)}"}
        base = self.settings.public_url or f"{request.url.scheme}://{request.headers.get('host', 'localhost')}"
        parts = [f"realm={quote_param(base.rstrip('/') + '/token')}", f"service={quote_param(self.settings.token_service)}"]
        if scope:
            parts.append(f"scope={quote_param(scope)}")
        if error:
            parts.append(f"error={quote_param(error)}")
        return {"WWW-Authenticate": "Bearer " + ",".join(parts)}

    async def authorize(self, request: Request, type_: str | None, name: str | None, action: str | None) -> Principal:
        """Raise Unauthorized (with a challenge) or Denied unless the caller may do `action` on the resource.

        The granted path allocates nothing it does not need: a cached token and a set test."""
        header = self.authorization(request)
        if header[:7].lower() == "bearer ":
            try:
                token = self.tokens.verify(header[7:].strip())
            except InvalidToken as exc:
                raise self._unauthorized(request, type_, name, action, f"invalid token: {exc}", "invalid_token") from exc
            current = self.authenticator.token_account_cached(token)
            if current is None:
                current = await self.db.run_fast(self.authenticator.token_account_ok, token)
            if not current:
                raise self._unauthorized(
                    request, type_, name, action,
                    "invalid token: its account was disabled, deleted or changed its credentials since it was issued",
                    "invalid_token",
                )
            request.state.can = self._token_can(token)
            granted = type_ is None or token.allows(type_, name, action)
            if granted and (type_ != "repository" or not await self._namesake(token, name)):
                return token_principal(token)
            principal = await self.db.run_fast(self.authenticator.account, token.subject) if token.subject else ANONYMOUS
            if principal is None:
                raise self._unauthorized(request, type_, name, action, "the account of this token is disabled or gone", "invalid_token")
            if await self._permitted(principal, type_, name, action):
                if granted:  # a project newer than the token: its scope counts where the account may act now
                    return token_principal(token)
                raise self._unauthorized(request, type_, name, action, f"token does not grant {action} on {name}", "insufficient_scope")
            request.state.principal = principal  # for the audit record of the refusal
            raise self._refusal(principal, type_, name, action, request)
        creds = parse_basic(header) if header else None
        if creds is None:
            if type_ is not None and self.settings.auth_mode == "basic" and await self._permitted(ANONYMOUS, type_, name, action):
                request.state.can = lambda t, n, a: False
                return ANONYMOUS
            raise self._unauthorized(request, type_, name, action, "authentication required")
        try:
            principal = await self.login(creds[0], creds[1], request)
        except Unauthorized as exc:
            raise self._unauthorized(request, type_, name, action, exc.message) from exc
        request.state.can = self._basic_can(principal)
        if type_ is None or await self._permitted(principal, type_, name, action):
            return principal
        request.state.principal = principal  # for the audit record of the refusal
        raise self._refusal(principal, type_, name, action, request)

    @staticmethod
    def _scope(type_: str | None, name: str | None, action: str | None) -> str | None:
        if type_ is None:
            return None
        asked = ("pull", "push") if action == "push" else (action,)
        return challenge_scope(type_, name or "", asked)

    def _unauthorized(self, request, type_, name, action, message: str, error: str | None = None) -> Unauthorized:
        detail = [{"Type": type_, "Name": name, "Action": action}] if type_ else None
        return Unauthorized(message, detail=detail, headers=self.challenge(request, self._scope(type_, name, action), error))

    def request_may_push(self, request: Request, name: str) -> bool:
        """Whether the caller's account may push to `name` (whatever scope its token carries).

        Pull gates let such callers through, as Harbor does for accounts that may attach
        accessories: cosign reads the unsigned image with a pull-scoped token before it pushes
        the signature, and a pusher could replace the content anyway. With access control off
        nobody can be told apart, so nobody qualifies."""
        if not self.enabled:
            return False
        can = getattr(request.state, "can", None)
        return bool(can and can("repository", name, "push"))

    async def _namesake(self, token: VerifiedToken, name: str) -> bool:
        """Whether the token predates the project of `name`: it was granted for a deleted namesake.
        The hot path is this process's cached view of the project's creation time."""
        project = project_of(name)
        newer = self.access.created_after_cached(project, token.issued_at)
        if newer is None:
            newer = await self.db.run_fast(self.access.created_after, project, token.issued_at)
        return newer

    def _token_can(self, token: VerifiedToken):
        """What the token grants, else what its account may do. Clients ask for a token scoped to the
        mount target only (the challenge names one repository), so a mount source is checked here."""
        account: list[Principal | None] = []

        def can(type_: str, name: str, action: str) -> bool:
            if token.allows(type_, name, action) and (
                type_ != "repository" or not self.access.created_after(project_of(name), token.issued_at)
            ):
                return True
            if type_ != "repository" or not token.subject:
                return False
            if not account:
                account.append(self.authenticator.account(token.subject))
            return account[0] is not None and action in self.access.repository_actions(account[0], name)

        return can

    def _basic_can(self, principal: Principal):
        def can(type_: str, name: str, action: str) -> bool:
            return type_ == "repository" and action in self.access.repository_actions(principal, name)

        return can

    async def _permitted(self, principal: Principal, type_: str, name: str, action: str) -> bool:
        if type_ == "registry":
            return not principal.is_anonymous
        actions = await self.db.run_fast(self.access.repository_actions, principal, name)
        return action in actions

    def _refusal(self, principal, type_, name, action, request):
        detail = [{"Type": type_, "Name": name, "Action": action}]
        if principal.is_anonymous:
            return self._unauthorized(request, type_, name, action, f"authentication required to {action} {name}")
        if type_ == "repository" and not self.access.project_actions(principal, project_of(name)):
            # The caller can do nothing in this project: a missing project and a private one it is not in
            # get the same answer, so project names cannot be confirmed (issue 9, finding 9). A pull is
            # NAME_UNKNOWN (clients probe with HEAD before pushing), anything else DENIED with one message.
            project = project_of(name)
            if action == "pull":
                return NameUnknown(f"repository {name} is not known to this registry", detail={"name": name})
            hint = "" if self.settings.auto_create_projects else " (ask an administrator to create it, or to add you to it)"
            return Denied(f"project {project} does not exist, or you may not {action} in it{hint}", detail=detail)
        if type_ == "repository":
            return Denied(self.access.explain_denial(principal, name, action), detail=detail)
        return Denied(f"{principal.name} may not access {type_}:{name}", detail=detail)

    async def refused(self, request: Request, name: str | None, action: str, exc: Denied) -> None:
        """Record a /v2 policy or permission refusal (tag rule, pull gate, quota, access) as a failure, aggregated
        per actor, action, object and reason (domain/audit.py `record_refusal`)."""
        principal = getattr(request.state, "principal", None) or ANONYMOUS
        params = request.path_params
        reference = params.get("reference") or params.get("digest")
        target = name or request.url.path.removeprefix("/v2/")
        if reference:
            target += ("@" if ":" in reference else ":") + reference
        await anyio.to_thread.run_sync(
            lambda: self.audit.record_refusal(
                actor=principal,
                action=action,
                object=target,
                reason=exc.message,
                code=exc.code,
                window_seconds=self.settings.audit_refusal_window_seconds,
                keys_per_actor=self.settings.audit_refusal_keys_per_actor,
                project=project_of(name) if name else None,
                source_ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
        )

    async def after(self, request: Request, principal: Principal, event: str, name: str | None, status: int) -> None:
        """Record the audit action `event` of a /v2 request once it has succeeded."""
        if status >= 400:
            return
        await anyio.to_thread.run_sync(
            lambda: self.audit.record(
                actor=principal,
                action=event,
                object=request.url.path.removeprefix("/v2/"),
                project=project_of(name) if name else None,
                source_ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
        )


def guarded(endpoint: Endpoint, access: dict[str, str] | None, resource: str, audit: AuditActions | None = None) -> Endpoint:
    """Wrap a /v2 endpoint with its declared access and audit: `access` maps method → action;
    resource is "repository" (name from the path), "catalog", or "base" (/v2/ itself); `audit`
    maps method → the audit action of a success (pulls are recorded only with audit_pulls)."""

    async def wrapped(request: Request) -> Response:
        gate: AccessGate = services_of(request).gate
        if not gate.enabled:
            request.state.principal = ANONYMOUS
            request.state.can = lambda t, n, a: True
            return await endpoint(request)
        action = access.get(request.method) if access else None
        event = audit.get(request.method) if audit else None
        name = validate_name(request.path_params["name"]) if resource == "repository" else None
        try:
            if resource == "repository":
                principal = await gate.authorize(request, "repository", name, action)
            elif resource == "catalog":
                principal = await gate.authorize(request, "registry", "catalog", "*")
            else:
                principal = await gate.authorize(request, None, None, None)
            request.state.principal = principal
            actor = request_context.actor.set(principal.name)  # events of this request name their actor
            try:
                if action == "push" and gate.settings.auto_create_projects:
                    await anyio.to_thread.run_sync(gate.admission.create_project_on_push, principal, name)
                response = await endpoint(request)
            finally:
                request_context.actor.reset(actor)
        except Denied as exc:  # a policy or permission refusal: on the audit record, then to the client
            refused = (event(request.path_params) if callable(event) else event) or f"v2.{action or 'access'}"
            try:
                await gate.refused(request, name, refused, exc)
            except Exception:  # the client still gets its refusal, not the audit write's failure
                log.exception("could not record the refusal of %s %s", request.method, request.url.path)
            raise
        if event is not None and (action != "pull" or gate.settings.audit_pulls):
            await gate.after(request, principal, event(request.path_params) if callable(event) else event, name, response.status_code)
        return response

    return wrapped
