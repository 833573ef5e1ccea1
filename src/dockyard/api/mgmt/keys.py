"""/api/v1/system/keys: token signing key rotation (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from dockyard.api.mgmt.common import CallerDep, Model

router = APIRouter(prefix="/system/keys", tags=["system"])


class Rotated(Model):
    kid: str


@router.post("/rotate", response_model=Rotated, summary="New active signing key; old keys still verify")
def rotate_key(caller: CallerDep):
    caller.require_admin()
    kid = caller.services.tokens.keys.rotate()
    caller.audit("key.rotate", f"signing key {kid}", detail={"kid": kid})
    return Rotated(kid=kid)
