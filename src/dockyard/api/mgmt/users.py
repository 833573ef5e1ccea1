"""/api/v1/users: accounts (administrators), plus `me` and own-password changes for everyone."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model, PagingDep, paged
from dockyard.errors import Denied

router = APIRouter(prefix="/users", tags=["users"])


class UserOut(Model):
    username: str
    email: str | None
    is_admin: bool
    disabled: bool
    created_at: datetime
    password_changed_at: datetime


class UserCreate(Input):
    username: str = Field(max_length=64, description="[a-z0-9][a-z0-9._-]{1,63}, not starting with robot$.")
    password: str = Field(description="At least 8 characters.")
    email: str | None = Field(None, max_length=255)
    is_admin: bool = False


class UserUpdate(Input):
    email: str | None = Field(None, max_length=255)
    is_admin: bool | None = None
    disabled: bool | None = None


class PasswordChange(Input):
    new_password: str = Field(description="At least 8 characters.")
    old_password: str | None = Field(None, description="Required when changing your own password.")


@router.get("", response_model=list[UserOut], summary="List users (admin)")
def list_users(caller: CallerDep, paging: PagingDep, request: Request, response: Response):
    caller.require_admin()
    return paged(request, response, caller.services.users.list(paging.page, paging.page_size), UserOut)


@router.post("", response_model=UserOut, status_code=201, summary="Create a user (admin)")
def create_user(body: UserCreate, caller: CallerDep):
    caller.require_admin()
    user = caller.services.users.create(body.username, body.password, email=body.email, is_admin=body.is_admin)
    caller.audit("user.create", f"user {user.username}", detail={"is_admin": user.is_admin})
    return user


@router.get("/me", response_model=UserOut, summary="The calling user")
def me(caller: CallerDep):
    caller.require_user()
    return caller.services.users.get(caller.principal.name)


@router.get("/{username}", response_model=UserOut, summary="One user (admin, or yourself)")
def get_user(username: str, caller: CallerDep):
    if not (caller.is_admin or (caller.principal.kind == "user" and caller.principal.name == username)):
        raise Denied("only administrators may read other users")
    return caller.services.users.get(username)


@router.patch("/{username}", response_model=UserOut, summary="Change email, admin flag or disabled flag (admin)")
def update_user(username: str, body: UserUpdate, caller: CallerDep):
    caller.require_admin()
    changes = body.model_dump(exclude_unset=True)
    user = caller.services.users.update(username, **changes)
    if changes.get("disabled"):
        caller.services.tokens.revoke_refresh(username)
    caller.audit("user.update", f"user {username}", detail=changes)
    return user


@router.put("/{username}/password", status_code=204, summary="Set a password (admin; yourself with old_password)")
def change_password(username: str, body: PasswordChange, caller: CallerDep):
    users = caller.services.users
    is_self = caller.principal.kind == "user" and caller.principal.name == username
    if not is_self and not caller.is_admin:
        raise Denied("only administrators may set other users' passwords")
    if is_self and (body.old_password is None or not users.verify_password(username, body.old_password)):
        caller.audit("user.password", f"user {username}", outcome="failure", detail={"reason": "old password wrong"})
        raise Denied("the old password is missing or wrong")
    users.change_password(username, body.new_password)
    revoked = caller.services.tokens.revoke_refresh(username)
    caller.audit("user.password", f"user {username}", detail={"refresh_tokens_revoked": revoked})
    return Response(status_code=204)


@router.delete("/{username}", status_code=204, summary="Delete a user (admin)")
def delete_user(username: str, caller: CallerDep):
    caller.require_admin()
    caller.services.users.delete(username)
    caller.services.tokens.revoke_refresh(username)
    caller.audit("user.delete", f"user {username}")
    return Response(status_code=204)
