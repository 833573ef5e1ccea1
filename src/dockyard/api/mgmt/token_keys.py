"""/api/v1/system/keys: token signing keys — list, rotate, revoke (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Model
from dockyard.auth.token_keys import SigningKey
from dockyard.errors import KeyNotFound

router = APIRouter(prefix="/system/keys", tags=["system"])

KidPath = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


class Rotated(Model):
    kid: str


class KeyOut(Model):
    kid: str = Field(description="RFC 7638 JWK thumbprint; the `kid` header of tokens it signs.")
    algorithm: str
    status: str = Field(description="active (signs), retired (still verifies), expired (verifies no more) or revoked.")
    created_at: datetime | None
    retired_at: datetime | None
    revoked_at: datetime | None
    verifies_until: datetime | None = Field(description="For a retired key: when it stops verifying tokens.")


def _out(key: SigningKey) -> KeyOut:
    return KeyOut(
        kid=key.kid, algorithm=key.algorithm, status=key.status, created_at=key.created_at,
        retired_at=key.retired_at, revoked_at=key.revoked_at,
        verifies_until=None if key.revoked_at is not None else key.verifies_until,
    )


@router.get("", response_model=list[KeyOut], summary="Token signing keys, newest first (admin); never private keys")
def list_keys(caller: CallerDep):
    caller.require_admin()
    keys = caller.services.tokens.keys
    keys.reload()
    return [_out(k) for k in keys.all()]


@router.post("/rotate", response_model=Rotated, summary="New active signing key; the old one verifies until its tokens expire")
def rotate_key(caller: CallerDep):
    caller.require_admin()
    kid = caller.services.tokens.keys.rotate()
    caller.audit("key.rotate", f"signing key {kid}", detail={"kid": kid})
    return Rotated(kid=kid)


@router.post("/{kid}/revoke", response_model=KeyOut, summary="Revoke a signing key at once: its tokens stop working (admin)")
def revoke_key(kid: KidPath, caller: CallerDep):
    """Revoking the active key first rotates to a new one. Other nodes stop accepting the key
    within 10 seconds."""
    caller.require_admin()
    key = caller.services.tokens.keys.revoke(kid)
    if key is None:
        raise KeyNotFound(f"signing key {kid} does not exist", detail={"kid": kid})
    caller.audit("key.revoke", f"signing key {kid}", detail={"kid": kid})
    return _out(key)
