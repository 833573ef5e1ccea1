"""Security properties of token auth, driven in-process: scope isolation, tampered JWTs,
robots, disabled accounts, secrets staying out of logs/audit/errors, and login throttling."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dockyard.app import create_app
from dockyard.domain.projects import ProjectService
from dockyard.domain.robots import RobotService
from dockyard.domain.users import UserService
from dockyard.settings import Settings
from .helpers import API_CLIENT

ADMIN_PASSWORD = "admin-password-1"
ALICE_PASSWORD = "alice-password-1"


@pytest.fixture
async def reg(tmp_path):
    app = create_app(
        Settings(data_dir=tmp_path, admin_password=ADMIN_PASSWORD, login_slowdown_after=3, login_lockout_after=5)
    )
    services = app.state.services
    projects, users = ProjectService(services.db), UserService(services.db)
    users.create("alice", ALICE_PASSWORD)
    for name in ("alpha", "beta"):
        projects.create(name)
        projects.add_member(name, "alice", "developer")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(headers=API_CLIENT, transport=httpx.ASGITransport(app=app), base_url="http://reg") as client:
            client.services = services  # type: ignore[attr-defined]
            yield client


async def token_for(client, auth, *scopes) -> str:
    r = await client.get("/token", params=[("service", "dockyard")] + [("scope", s) for s in scopes], auth=auth)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_for_one_project_is_useless_on_another(reg):
    token = await token_for(reg, ("alice", ALICE_PASSWORD), "repository:alpha/app:pull,push")
    ok = await reg.post("/v2/alpha/app/blobs/uploads/", headers=bearer(token))
    assert ok.status_code == 202
    for method, path in [("POST", "/v2/beta/app/blobs/uploads/"), ("GET", "/v2/beta/app/tags/list")]:
        r = await reg.request(method, path, headers=bearer(token))
        assert r.status_code == 401
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        assert "repository:beta/app:" in r.headers["www-authenticate"]


async def test_grant_is_intersection_and_partial_grant_is_not_an_error(reg):
    r = await reg.get(
        "/token",
        params=[("service", "dockyard"), ("scope", "repository:alpha/app:pull,push,delete"), ("scope", "repository:nope/x:pull")],
        auth=("alice", ALICE_PASSWORD),
    )
    assert r.status_code == 200
    access = jwt.decode(r.json()["token"], options={"verify_signature": False})["access"]
    assert {"type": "repository", "name": "alpha/app", "actions": ["pull", "push"]} in access
    assert {"type": "repository", "name": "nope/x", "actions": []} in access


def _forge(claims: dict, key, algorithm: str, headers: dict) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _claims(**overrides) -> dict:
    now = int(time.time())
    claims = {
        "iss": "dockyard",
        "sub": "alice",
        "aud": "dockyard",
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "x",
        "access": [{"type": "repository", "name": "alpha/app", "actions": ["pull", "push"]}],
    }
    claims.update(overrides)
    return claims


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_tampered_tokens_are_rejected(reg):
    keys = reg.services.tokens.keys
    good = keys.signer()
    good_public = keys.active().public_key
    alice = reg.services.authenticator.account("alice")
    ids = {"uid": alice.id, "cep": alice.epoch}  # tokens name their account (finding 2)
    public_pem = good_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = {
        "alg none": _b64({"alg": "none", "typ": "JWT", "kid": good.kid}) + "." + _b64(_claims(**ids, )) + ".",
        "HS256 with the public key": (
            _b64({"alg": "HS256", "typ": "JWT", "kid": good.kid})
            + "."
            + _b64(_claims(**ids, ))
            + "."
            + base64.urlsafe_b64encode(
                __import__("hmac").new(public_pem, f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': good.kid})}.{_b64(_claims(**ids, ))}".encode(), hashlib.sha256).digest()
            ).rstrip(b"=").decode()
        ),
        "unknown kid": _forge(_claims(**ids, ), stranger, "ES256", {"kid": "unknown-kid"}),
        "right kid, wrong key": _forge(_claims(**ids, ), stranger, "ES256", {"kid": good.kid}),
        "wrong aud": _forge(_claims(**ids, aud="someone-else"), good.private_key, "ES256", {"kid": good.kid}),
        "expired": _forge(_claims(**ids, exp=now - 120, nbf=now - 600, iat=now - 600), good.private_key, "ES256", {"kid": good.kid}),
        "not yet valid": _forge(_claims(**ids, nbf=now + 600, iat=now), good.private_key, "ES256", {"kid": good.kid}),
        "wrong issuer": _forge(_claims(**ids, iss="evil"), good.private_key, "ES256", {"kid": good.kid}),
        "garbage": "not.a.jwt",
    }
    # The genuine article works, so each rejection below is about the tampering.
    genuine = _forge(_claims(**ids, ), good.private_key, "ES256", {"kid": good.kid})
    assert (await reg.post("/v2/alpha/app/blobs/uploads/", headers=bearer(genuine))).status_code == 202
    for label, token in forged.items():
        r = await reg.post("/v2/alpha/app/blobs/uploads/", headers=bearer(token))
        assert r.status_code == 401, label
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED", label
        assert 'error="invalid_token"' in r.headers["www-authenticate"], label


async def test_login_password_is_not_a_bearer_token(reg):
    principal = reg.services.authenticator.account("alice")
    login_password = reg.services.tokens.issue_login_password(principal)
    r = await reg.get("/v2/alpha/app/tags/list", headers=bearer(login_password))
    assert r.status_code == 401
    # ...but it is a password: it buys a token.
    assert await token_for(reg, ("alice", login_password), "repository:alpha/app:pull")


async def test_pull_only_robot_cannot_push(reg):
    robot, secret = RobotService(reg.services.db).create("ci", project="alpha", permissions=["pull"])
    token = await token_for(reg, (robot.name, secret), "repository:alpha/app:pull,push")
    access = jwt.decode(token, options={"verify_signature": False})["access"]
    assert access == [{"type": "repository", "name": "alpha/app", "actions": ["pull"]}]
    r = await reg.post("/v2/alpha/app/blobs/uploads/", headers=bearer(token))
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    r = await reg.post("/v2/alpha/app/blobs/uploads/", auth=(robot.name, secret))
    assert r.status_code == 403


async def test_disabled_user_and_robot_are_refused_at_next_token_request(reg):
    robot, secret = RobotService(reg.services.db).create("ci", project="alpha", permissions=["pull", "push"])
    assert await token_for(reg, ("alice", ALICE_PASSWORD), "repository:alpha/app:pull")
    assert await token_for(reg, (robot.name, secret), "repository:alpha/app:pull")
    UserService(reg.services.db).update("alice", disabled=True)
    RobotService(reg.services.db).update(robot.name, disabled=True)
    for auth in (("alice", ALICE_PASSWORD), (robot.name, secret)):
        r = await reg.get("/token", params={"service": "dockyard", "scope": "repository:alpha/app:pull"}, auth=auth)
        assert r.status_code == 401, auth[0]
        assert (await reg.get("/v2/alpha/app/tags/list", auth=auth)).status_code == 401


async def test_expired_robot_is_refused(reg):
    from datetime import UTC, datetime, timedelta

    robot, secret = RobotService(reg.services.db).create(
        "old", project="alpha", permissions=["pull"], expires_at=datetime.now(UTC) + timedelta(seconds=1)
    )
    assert await token_for(reg, (robot.name, secret), "repository:alpha/app:pull")
    with reg.services.db.write() as conn:
        from dockyard.metadata.models import robots

        conn.execute(robots.update().values(expires_at=datetime.now(UTC) - timedelta(seconds=5)))
    r = await reg.get("/token", params={"service": "dockyard", "scope": "repository:alpha/app:pull"}, auth=(robot.name, secret))
    assert r.status_code == 401


async def test_secrets_never_reach_logs_audit_or_error_bodies(reg, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "Wrong-Secret-Value-42"
    bodies = []
    r = await reg.get("/token", params={"service": "dockyard"}, auth=("alice", wrong))
    bodies.append(r.text)
    r = await reg.get("/v2/alpha/app/tags/list", auth=("alice", wrong))
    bodies.append(r.text + json.dumps(dict(r.headers)))
    r = await reg.post("/token", data={"grant_type": "password", "service": "dockyard", "username": "alice", "password": wrong})
    bodies.append(r.text)
    good = await reg.get("/token", params={"service": "dockyard", "offline_token": "true"}, auth=("alice", ALICE_PASSWORD))
    refresh = good.json()["refresh_token"]
    r = await reg.post("/token", data={"grant_type": "refresh_token", "service": "dockyard", "refresh_token": refresh + "x"})
    bodies.append(r.text)
    events, _ = reg.services.audit.query(page_size=100)
    assert any(e["action"] == "auth.failure" for e in events) and any(e["action"] == "auth.success" for e in events)
    haystack = "\n".join(bodies) + json.dumps(events) + caplog.text
    for secret in (wrong, ALICE_PASSWORD, ADMIN_PASSWORD, refresh, good.json()["token"]):
        assert secret not in haystack
    with reg.services.db.read() as conn:
        dump = json.dumps([list(map(str, row)) for row in conn.exec_driver_sql("SELECT * FROM users").all()])
        dump += json.dumps([list(map(str, row)) for row in conn.exec_driver_sql("SELECT * FROM refresh_tokens").all()])
    assert ALICE_PASSWORD not in dump and refresh not in dump


async def test_throttling_slows_then_refuses_with_retry_after(reg):
    statuses, durations = [], []
    for _ in range(6):
        started = time.monotonic()
        r = await reg.get("/token", params={"service": "dockyard"}, auth=("alice", "nope-nope"))
        durations.append(time.monotonic() - started)
        statuses.append(r.status_code)
    assert statuses[:5] == [401] * 5
    assert statuses[5] == 429
    assert durations[3] >= 0.2  # slowed from the 3rd failure on (0.25 s, doubling)
    locked = await reg.get("/token", params={"service": "dockyard"}, auth=("alice", ALICE_PASSWORD))
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert locked.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    # What locked is this (address, account) pair only (issue 9, finding 7), not the address.
    with reg.services.db.read() as conn:
        keys = {row[0] for row in conn.exec_driver_sql("SELECT key FROM login_failures WHERE locked_until IS NOT NULL")}
    assert len(keys) == 1 and next(iter(keys)).startswith("pair:")


async def test_refresh_token_flow_and_revocation(reg):
    r = await reg.post(
        "/token",
        data={"grant_type": "password", "service": "dockyard", "client_id": "docker", "access_type": "offline",
              "username": "alice", "password": ALICE_PASSWORD, "scope": "repository:alpha/app:pull"},
    )
    assert r.status_code == 200
    refresh = r.json()["refresh_token"]
    assert r.json()["scope"] == "repository:alpha/app:pull"
    again = await reg.post(
        "/token", data={"grant_type": "refresh_token", "service": "dockyard", "client_id": "docker", "refresh_token": refresh,
                        "scope": "repository:alpha/app:pull"}
    )
    assert again.status_code == 200 and again.json()["access_token"]
    assert reg.services.tokens.revoke_refresh("alice") == 1
    revoked = await reg.post(
        "/token", data={"grant_type": "refresh_token", "service": "dockyard", "client_id": "docker", "refresh_token": refresh}
    )
    assert revoked.status_code == 401


async def test_key_rotation_keeps_old_tokens_valid(reg):
    old = await token_for(reg, ("alice", ALICE_PASSWORD), "repository:alpha/app:pull")
    old_kid = jwt.get_unverified_header(old)["kid"]
    new_kid = reg.services.tokens.keys.rotate()
    assert new_kid != old_kid
    new = await token_for(reg, ("alice", ALICE_PASSWORD), "repository:alpha/app:pull")
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    for token in (old, new):
        assert (await reg.get("/v2/alpha/app/tags/list", headers=bearer(token))).status_code in (200, 404)


async def test_anonymous_push_never_works_and_public_pull_does(reg):
    ProjectService(reg.services.db).update("beta", public=True)
    anon = await token_for(reg, None, "repository:beta/app:pull,push")
    access = jwt.decode(anon, options={"verify_signature": False})["access"]
    assert access == [{"type": "repository", "name": "beta/app", "actions": ["pull"]}]
    r = await reg.post("/v2/beta/app/blobs/uploads/", headers=bearer(anon))
    assert r.status_code == 401 and "authentication required" in r.json()["errors"][0]["message"]
    r = await reg.get("/v2/beta/app/tags/list", headers=bearer(anon))
    assert r.status_code == 404  # allowed through; the repository is just empty
    private = await token_for(reg, None, "repository:alpha/app:pull")
    assert jwt.decode(private, options={"verify_signature": False})["access"][0]["actions"] == []
