"""The management API (/api/v1) in-process: auth, authorization, pagination, errors, audit, retag."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dockyard.app import create_app
from dockyard.settings import Settings

from .helpers import API_CLIENT, Registry

ADMIN = ("admin", "admin-password-1")
BASE = "http://registry.test"


@pytest.fixture
async def api(tmp_path: Path):
    app = create_app(Settings(data_dir=tmp_path / "data", admin_password=ADMIN[1]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE, auth=ADMIN, headers=API_CLIENT) as client:
            yield client


def as_(user: str, password: str) -> dict:
    return {"auth": (user, password)}


def error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["errors"][0]["code"] == code, body
    assert set(body["errors"][0]) <= {"code", "message", "detail"}
    return body["errors"][0]


async def make_user(api, name: str, password: str = "password-123", **extra) -> None:
    r = await api.post("/api/v1/users", json={"username": name, "password": password, **extra})
    assert r.status_code == 201, r.text


async def make_project(api, name: str, public: bool = False) -> None:
    r = await api.post("/api/v1/projects", json={"name": name, "public": public})
    assert r.status_code == 201, r.text


# -- basics ---------------------------------------------------------------------------------


async def test_openapi_and_docs_need_no_credentials(api):
    spec = await api.get("/api/v1/openapi.json", auth=None)
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/projects/{project}/members/{username}" in paths and "/repositories/{name}/tags/{tag}" in paths
    docs = await api.get("/api/v1/docs", auth=None)
    assert docs.status_code == 200 and "/api/v1/openapi.json" in docs.text


async def test_authentication_is_required(api):
    r = await api.get("/api/v1/projects", auth=None)
    error(r, 401, "UNAUTHORIZED")
    # Not Basic: a browser would prompt and then cache the credentials (issue 9, informational).
    assert r.headers["www-authenticate"].startswith("Dockyard realm=")
    error(await api.get("/api/v1/projects", auth=("admin", "wrong-password")), 401, "UNAUTHORIZED")
    me = await api.get("/api/v1/users/me")
    assert me.json()["username"] == "admin" and me.json()["is_admin"]


async def test_errors_use_the_oci_format(api):
    error(await api.get("/api/v1/nope"), 404, "NOT_FOUND")
    error(await api.delete("/api/v1/users"), 405, "UNSUPPORTED")
    bad = await api.post("/api/v1/users", json={"username": "eve", "password": 12345678, "surprise": 1})
    detail = error(bad, 400, "INVALID_REQUEST")
    assert "12345678" not in bad.text  # rejected input (maybe a password) is never echoed
    assert {d["field"] for d in detail["detail"]} >= {"body.surprise"}
    error(await api.post("/api/v1/users", content=b"{not json", headers={"content-type": "application/json"}), 400, "INVALID_REQUEST")
    error(await api.post("/api/v1/users", json={"username": "Eve!", "password": "password-123"}), 400, "NAME_INVALID")
    error(await api.post("/api/v1/users", json={"username": "eve", "password": "short"}), 400, "INVALID_REQUEST")
    await make_user(api, "eve")
    error(await api.post("/api/v1/users", json={"username": "eve", "password": "password-123"}), 409, "CONFLICT")
    error(await api.get("/api/v1/users/nobody"), 404, "NOT_FOUND")
    error(await api.get("/api/v1/projects?page_size=101"), 400, "INVALID_REQUEST")


async def test_pagination(api):
    for i in range(5):
        await make_project(api, f"p{i}")
    r = await api.get("/api/v1/projects", params={"page_size": 2})
    assert [p["name"] for p in r.json()] == ["p0", "p1"]
    assert r.headers["x-total-count"] == "5"
    link = r.headers["link"]
    assert link.endswith('>; rel="next"') and "/api/v1/projects?" in link and "page=2" in link
    nxt = await api.get(link[1 : link.index(">")])
    assert [p["name"] for p in nxt.json()] == ["p2", "p3"]
    last = await api.get("/api/v1/projects", params={"page_size": 2, "page": 3})
    assert [p["name"] for p in last.json()] == ["p4"] and "link" not in last.headers


# -- users ----------------------------------------------------------------------------------


async def test_user_administration(api):
    await make_user(api, "bob", email="bob@example.com")
    bob = as_("bob", "password-123")
    assert (await api.get("/api/v1/users/me", **bob)).json()["email"] == "bob@example.com"
    error(await api.get("/api/v1/users", **bob), 403, "DENIED")
    error(await api.post("/api/v1/users", json={"username": "x1", "password": "password-123"}, **bob), 403, "DENIED")
    error(await api.get("/api/v1/users/admin", **bob), 403, "DENIED")
    assert (await api.get("/api/v1/users/bob", **bob)).status_code == 200

    # own password: old password required
    error(await api.put("/api/v1/users/bob/password", json={"new_password": "password-456"}, **bob), 403, "DENIED")
    error(
        await api.put("/api/v1/users/bob/password", json={"new_password": "password-456", "old_password": "nope-nope"}, **bob),
        403, "DENIED",
    )
    r = await api.put("/api/v1/users/bob/password", json={"new_password": "password-456", "old_password": "password-123"}, **bob)
    assert r.status_code == 204
    error(await api.get("/api/v1/users/me", **bob), 401, "UNAUTHORIZED")
    bob = as_("bob", "password-456")
    assert (await api.get("/api/v1/users/me", **bob)).status_code == 200

    # admins set anyone's password, disable, promote, delete
    assert (await api.put("/api/v1/users/bob/password", json={"new_password": "password-789"})).status_code == 204
    bob = as_("bob", "password-789")
    r = await api.patch("/api/v1/users/bob", json={"disabled": True})
    assert r.json()["disabled"] is True
    error(await api.get("/api/v1/users/me", **bob), 401, "UNAUTHORIZED")
    await api.patch("/api/v1/users/bob", json={"disabled": False, "is_admin": True})
    assert (await api.get("/api/v1/users", **bob)).status_code == 200
    error(await api.get("/api/v1/users/me", auth=("admin", "password-789")), 401, "UNAUTHORIZED")
    assert (await api.delete("/api/v1/users/bob")).status_code == 204
    error(await api.get("/api/v1/users/bob"), 404, "NOT_FOUND")
    error(await api.delete("/api/v1/users/admin"), 409, "CONFLICT")  # the last administrator


# -- projects and members ---------------------------------------------------------------------


async def test_projects_members_and_visibility(api):
    for name in ("alice", "bob", "carol"):
        await make_user(api, name)
    alice, bob, carol = (as_(n, "password-123") for n in ("alice", "bob", "carol"))
    await make_project(api, "team")
    await make_project(api, "open", public=True)
    error(await api.post("/api/v1/projects", json={"name": "Team/x"}), 400, "NAME_INVALID")
    error(await api.post("/api/v1/projects", json={"name": "team"}), 409, "CONFLICT")
    error(await api.post("/api/v1/projects", json={"name": "mine"}, **alice), 403, "DENIED")

    members = (await api.get("/api/v1/projects/team/members")).json()
    assert [(m["username"], m["role"]) for m in members] == [("admin", "admin")]  # the creator
    r = await api.post("/api/v1/projects/team/members", json={"username": "alice", "role": "admin"})
    assert r.status_code == 201 and r.json()["role"] == "admin"
    # alice (project admin) manages members now
    r = await api.post("/api/v1/projects/team/members", json={"username": "bob", "role": "developer"}, **alice)
    assert r.status_code == 201
    error(await api.post("/api/v1/projects/team/members", json={"username": "carol", "role": "owner"}, **alice), 400, "INVALID_REQUEST")
    error(await api.post("/api/v1/projects/team/members", json={"username": "carol", "role": "guest"}, **bob), 403, "DENIED")
    error(await api.get("/api/v1/projects/team/members", **bob), 403, "DENIED")
    r = await api.put("/api/v1/projects/team/members/bob", json={"role": "maintainer"}, **alice)
    assert r.json()["role"] == "maintainer"

    assert [p["name"] for p in (await api.get("/api/v1/projects", **bob)).json()] == ["open", "team"]
    assert [p["name"] for p in (await api.get("/api/v1/projects", **carol)).json()] == ["open"]
    error(await api.get("/api/v1/projects/team", **carol), 404, "NOT_FOUND")  # invisible looks missing
    detail = (await api.get("/api/v1/projects/team", **bob)).json()
    assert detail["repository_count"] == 0 and "retag" in detail["actions"] and "manage-members" not in detail["actions"]

    # manage-policies guards the public flag
    error(await api.patch("/api/v1/projects/team", json={"public": True}, **bob), 403, "DENIED")
    assert (await api.patch("/api/v1/projects/team", json={"public": True}, **alice)).json()["public"] is True
    assert [p["name"] for p in (await api.get("/api/v1/projects", **carol)).json()] == ["open", "team"]

    assert (await api.delete("/api/v1/projects/team/members/bob", **alice)).status_code == 204
    error(await api.delete("/api/v1/projects/team/members/bob", **alice), 404, "NOT_FOUND")
    error(await api.delete("/api/v1/projects/team", **alice), 403, "DENIED")
    assert (await api.delete("/api/v1/projects/team")).status_code == 204
    error(await api.get("/api/v1/projects/team"), 404, "NOT_FOUND")


# -- robots ---------------------------------------------------------------------------------


async def test_robots(api):
    await make_user(api, "alice")
    await make_user(api, "bob")
    alice, bob = as_("alice", "password-123"), as_("bob", "password-123")
    await make_project(api, "team")
    await make_project(api, "other")
    await api.post("/api/v1/projects/team/members", json={"username": "alice", "role": "admin"})
    await api.post("/api/v1/projects/team/members", json={"username": "bob", "role": "developer"})

    r = await api.post("/api/v1/robots", json={"name": "ci", "project": "team", "actions": ["pull", "push"], "duration_days": 7}, **alice)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == "robot$team+ci" and created["kind"] == "project" and created["created_by"] == "alice"
    assert created["permissions"] == [{"project": "team", "actions": ["pull", "push"]}]
    secret = created["secret"]
    robot = {"auth": ("robot$team+ci", secret)}

    who = await api.get("/api/v1/auth/whoami", **robot)
    assert who.json() == {"name": "robot$team+ci", "kind": "robot", "is_admin": False}
    assert [p["name"] for p in (await api.get("/api/v1/projects", **robot)).json()] == ["team"]
    shown = (await api.get("/api/v1/robots/robot$team+ci", **alice)).json()
    assert "secret" not in shown and "secret_hash" not in shown

    error(await api.post("/api/v1/robots", json={"name": "x", "project": "team", "actions": ["pull"]}, **bob), 403, "DENIED")
    error(await api.post("/api/v1/robots", json={"name": "x", "project": "other", "actions": ["pull"]}, **alice), 404, "NOT_FOUND")
    error(await api.post("/api/v1/robots", json={"name": "x", "project": "team", "actions": ["retag"]}, **alice), 400, "INVALID_REQUEST")
    error(await api.post("/api/v1/robots", json={"name": "sys", "permissions": [{"project": "team", "actions": ["pull"]}]}, **alice), 403, "DENIED")
    error(await api.get("/api/v1/robots", **alice), 403, "DENIED")
    assert [x["name"] for x in (await api.get("/api/v1/robots", params={"project": "team"}, **alice)).json()] == ["robot$team+ci"]

    r = await api.post("/api/v1/robots", json={"name": "mirror", "permissions": [
        {"project": "team", "actions": ["pull"]}, {"project": "other", "actions": ["pull", "read-scan"]}]})
    assert r.status_code == 201 and r.json()["kind"] == "system"
    # a system robot is not alice's to see: the same answer as for a robot that does not exist (finding 9)
    error(await api.get("/api/v1/robots/robot$mirror", **alice), 404, "NOT_FOUND")
    assert {x["name"] for x in (await api.get("/api/v1/robots")).json()} == {"robot$mirror", "robot$team+ci"}

    # rotate: the old secret stops working
    rotated = (await api.post("/api/v1/robots/robot$team+ci/rotate", **alice)).json()
    assert rotated["secret"] != secret
    error(await api.get("/api/v1/auth/whoami", **robot), 401, "UNAUTHORIZED")
    robot = {"auth": ("robot$team+ci", rotated["secret"])}
    assert (await api.get("/api/v1/auth/whoami", **robot)).status_code == 200

    # disable / enable / delete
    assert (await api.patch("/api/v1/robots/robot$team+ci", json={"disabled": True}, **alice)).json()["disabled"]
    error(await api.get("/api/v1/auth/whoami", **robot), 401, "UNAUTHORIZED")
    assert not (await api.patch("/api/v1/robots/robot$team+ci", json={"disabled": False}, **alice)).json()["disabled"]
    assert (await api.get("/api/v1/auth/whoami", **robot)).status_code == 200
    # robots manage nothing
    error(await api.post("/api/v1/robots/robot$team+ci/rotate", **robot), 404, "NOT_FOUND")  # not theirs to see (finding 9)
    assert (await api.delete("/api/v1/robots/robot$team+ci", **alice)).status_code == 204
    error(await api.get("/api/v1/auth/whoami", **robot), 401, "UNAUTHORIZED")

    events = (await api.get("/api/v1/audit", params={"action": "robot"})).json()
    assert [e["action"] for e in events][::-1] == [
        "robot.create", "robot.create", "robot.rotate", "robot.disable", "robot.enable", "robot.delete"
    ]
    assert secret not in str(events) and rotated["secret"] not in str(events)


# -- audit, auth, keys --------------------------------------------------------------------------


async def test_audit_log_access_and_contents(api):
    await make_user(api, "alice")
    await make_user(api, "bob")
    alice, bob = as_("alice", "password-123"), as_("bob", "password-123")
    await make_project(api, "team")
    await api.post("/api/v1/projects/team/members", json={"username": "alice", "role": "admin"})
    await api.post("/api/v1/projects/team/members", json={"username": "bob", "role": "maintainer"}, **alice)

    error(await api.get("/api/v1/audit", **alice), 403, "DENIED")
    error(await api.get("/api/v1/audit", params={"project": "team"}, **bob), 403, "DENIED")
    events = (await api.get("/api/v1/audit", params={"project": "team"}, **alice)).json()
    assert [(e["actor"], e["action"], e["object"]) for e in events][:2] == [
        ("alice", "member.add", "project/team member bob"),
        ("admin", "member.add", "project/team member alice"),
    ]
    assert events[0]["detail"] == {"role": "maintainer"} and events[0]["source_ip"]

    await api.post("/api/v1/users", json={"username": "x1", "password": "password-123"}, **bob)  # denied
    denied = (await api.get("/api/v1/audit", params={"outcome": "failure", "actor": "bob"})).json()
    assert denied[0]["action"] == "api.denied" and denied[0]["object"] == "POST /api/v1/users"

    created = (await api.get("/api/v1/audit", params={"action": "user.create"})).json()
    assert {e["object"] for e in created} == {"user alice", "user bob"}
    assert "password-123" not in (await api.get("/api/v1/audit", params={"page_size": 100})).text
    since = created[0]["time"]
    later = (await api.get("/api/v1/audit", params={"since": since, "action": "member"})).json()
    assert len(later) == 2


async def test_login_password_refresh_tokens_and_keys(api):
    await make_user(api, "alice")
    alice = as_("alice", "password-123")
    r = await api.post("/api/v1/auth/login-password", **alice)
    assert r.status_code == 200 and r.json()["username"] == "alice" and r.json()["expires_in"] > 0
    login = r.json()["password"]
    assert (await api.get("/api/v1/users/me", auth=("alice", login))).json()["username"] == "alice"

    r = await api.delete("/api/v1/auth/refresh-tokens", **alice)
    assert r.json() == {"subject": "alice", "revoked": 0}
    error(await api.delete("/api/v1/auth/refresh-tokens", params={"subject": "admin"}, **alice), 403, "DENIED")
    assert (await api.delete("/api/v1/auth/refresh-tokens", params={"subject": "alice"})).json()["subject"] == "alice"

    error(await api.post("/api/v1/system/keys/rotate", **alice), 403, "DENIED")
    kid = (await api.post("/api/v1/system/keys/rotate")).json()["kid"]
    assert kid
    # the login password was signed by the old key, which still verifies
    assert (await api.get("/api/v1/users/me", auth=("alice", login))).status_code == 200
    events = (await api.get("/api/v1/audit", params={"action": "key.rotate"})).json()
    assert events[0]["detail"] == {"kid": kid}


# -- retag ----------------------------------------------------------------------------------


async def test_retag(api, tmp_path):
    await make_user(api, "dev")
    await make_user(api, "maint")
    await make_project(api, "team")
    await api.post("/api/v1/projects/team/members", json={"username": "dev", "role": "developer"})
    await api.post("/api/v1/projects/team/members", json={"username": "maint", "role": "maintainer"})
    registry = Registry(app=None, client=api, driver="filesystem", data_dir=tmp_path)
    digest1, _ = await registry.push_image("team/app", "v1", seed=1)
    digest2, _ = await registry.push_image("team/app", "v2", seed=2)

    body = {"digest": digest1}
    error(await api.put("/api/v1/repositories/team/app/tags/stable", json=body, **as_("dev", "password-123")), 403, "DENIED")
    r = await api.put("/api/v1/repositories/team/app/tags/stable", json=body, **as_("maint", "password-123"))
    assert r.status_code == 200, r.text
    assert r.json() == {"repository": "team/app", "tag": "stable", "digest": digest1, "previous": None}
    r = await api.put("/api/v1/repositories/team/app/tags/stable", json={"digest": digest2})
    assert r.json()["previous"] == digest1
    head = await api.head("/v2/team/app/manifests/stable")
    assert head.headers["docker-content-digest"] == digest2

    error(await api.put("/api/v1/repositories/team/app/tags/stable", json={"digest": "sha256:" + "0" * 64}), 404, "MANIFEST_UNKNOWN")
    error(await api.put("/api/v1/repositories/team/app/tags/bad:tag", json=body), 400, "TAG_INVALID")
    error(await api.put("/api/v1/repositories/team/nope/tags/x", json=body), 404, "NAME_UNKNOWN")
    error(await api.put("/api/v1/repositories/ghost/app/tags/x", json=body), 404, "NOT_FOUND")
    events = (await api.get("/api/v1/audit", params={"action": "tag.retag"})).json()
    assert events[0]["object"] == "team/app:stable" and events[0]["detail"] == {"digest": digest2, "previous": digest1}

    # a project that still holds repositories is not deleted
    error(await api.delete("/api/v1/projects/team"), 409, "CONFLICT")
