"""/api/v1/auth: login passwords for `docker login`, and revoking refresh tokens."""

from __future__ import annotations

from fastapi import APIRouter, Query

from dockyard.api.mgmt.common import CallerDep, Model
from dockyard.auth.authenticator import LOGIN_PASSWORD
from dockyard.errors import Denied


router = APIRouter(prefix="/auth", tags=["auth"])


class Whoami(Model):
    name: str
    kind: str
    is_admin: bool


class LoginPassword(Model):
    username: str
    password: str
    expires_in: int


class Revoked(Model):
    subject: str
    revoked: int


@router.get("/whoami", response_model=Whoami, summary="Who the credentials belong to")
def whoami(caller: CallerDep):
    p = caller.principal
    return Whoami(name=p.name, kind=p.kind, is_admin=caller.is_admin)


@router.post("/login-password", response_model=LoginPassword, summary="A short-lived password for docker login")
def login_password(caller: CallerDep):
    """For users and robots (CI). It names the account's id and credential epoch, so deleting, disabling or
    rotating the account (or changing the user's password) ends it at once."""
    if caller.principal.is_anonymous:
        raise Denied("sign in to get a login password")
    if caller.principal.credential == LOGIN_PASSWORD:
        # Otherwise a 12-hour password renews itself forever, outliving every credential check.
        raise Denied("a login password cannot be used to get another one; sign in with your account password")
    services = caller.services
    password = services.tokens.issue_login_password(caller.principal)
    caller.audit("login-password.issue", f"{caller.principal.kind} {caller.principal.name}")
    return LoginPassword(
        username=caller.principal.name, password=password, expires_in=services.settings.login_password_ttl_seconds
    )


@router.delete("/refresh-tokens", response_model=Revoked, summary="Revoke refresh tokens (yours; admins: ?subject=)")
def revoke_refresh_tokens(
    caller: CallerDep, subject: str | None = Query(None, description="Whose tokens (admin only); default: yours.")
):
    subject = subject or caller.principal.name
    if subject != caller.principal.name:
        caller.require_admin()
    revoked = caller.services.tokens.revoke_refresh(subject)
    caller.audit("refresh-token.revoke", f"account {subject}", detail={"revoked": revoked})
    return Revoked(subject=subject, revoked=revoked)



