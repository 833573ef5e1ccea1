"""Robots that work in CI (issue 15 §3): push implies pull, editable permissions, login passwords for robots
that end at once when the robot is rotated, disabled, narrowed or deleted."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dockyard.app import create_app
from dockyard.settings import Settings

from .helpers import API_CLIENT, Registry

ADMIN = ("admin", "admin-password-1")
ALICE = ("alice", "password-123")
MALLORY = ("mallory", "password-123")
BASE = "http://registry.test"


@pytest.fixture
async def world(tmp_path: Path):
    app = create_app(Settings(data_dir=tmp_path / "data", admin_password=ADMIN[1]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE, auth=ADMIN, headers=API_CLIENT) as client:
            for user in (ALICE, MALLORY):
                assert (await client.post("/api/v1/users", json={"username": user[0], "password": user[1]})).status_code == 201
            for project, admin in (("team", "alice"), ("other", "mallory")):
                assert (await client.post("/api/v1/projects", json={"name": project})).status_code == 201
                r = await client.post(f"/api/v1/projects/{project}/members", json={"username": admin, "role": "admin"})
                assert r.status_code == 201, r.text
            registry = Registry(app=app, client=client, driver="filesystem", data_dir=tmp_path / "data")
            digest, _ = await registry.push_image("team/app", "1.0", seed=3)
            yield client, digest


async def make_robot(client, actions: list[str], name: str = "ci", auth=ALICE) -> tuple[str, str]:
    r = await client.post("/api/v1/robots", json={"name": name, "project": "team", "actions": actions}, auth=auth)
    assert r.status_code == 201, r.text
    return r.json()["name"], r.json()["secret"]


async def token_actions(client, auth, scope: str) -> list[str]:
    r = await client.get("/token", params={"service": "dockyard", "scope": scope}, auth=auth)
    assert r.status_code == 200, r.text
    import jwt

    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    return sorted(a for grant in claims["access"] for a in grant["actions"])


# -- push implies pull ---------------------------------------------------------------------------


async def test_a_push_only_robot_can_check_what_exists_and_pull(world):
    client, digest = world
    name, secret = await make_robot(client, ["push"])
    robot = (name, secret)
    head = await client.head("/v2/team/app/manifests/1.0", auth=robot)
    assert head.status_code == 200 and head.headers["docker-content-digest"] == digest
    assert await token_actions(client, robot, "repository:team/app:pull,push") == ["pull", "push"]
    catalog = await client.get("/v2/_catalog", auth=robot)
    assert catalog.status_code == 200 and catalog.json()["repositories"] == ["team/app"]
    # and the robot still holds exactly what it was granted: push is shown, pull is implied
    shown = (await client.get(f"/api/v1/robots/{name}", auth=ALICE)).json()
    assert shown["permissions"] == [{"project": "team", "actions": ["push"]}]


async def test_a_push_only_robot_created_before_the_rule_works_too(world):
    """Rows written push-only (as every robot created `--action push` before) get pull when access is checked."""
    client, _ = world
    name, secret = await make_robot(client, ["pull", "push"])
    services = client._transport.app.state.services
    with services.db.write() as conn:
        from sqlalchemy import update

        from dockyard.metadata.models import robot_permissions

        conn.execute(update(robot_permissions).values(actions="push"))
    assert (await client.get(f"/api/v1/robots/{name}", auth=ALICE)).json()["permissions"][0]["actions"] == ["push"]
    assert (await client.get("/v2/team/app/tags/list", auth=(name, secret))).json()["tags"] == ["1.0"]


# -- editable permissions --------------------------------------------------------------------------


async def test_robot_permissions_are_editable_and_audited(world):
    client, _ = world
    name, secret = await make_robot(client, ["pull"])
    assert await token_actions(client, (name, secret), "repository:team/app:pull,push,delete") == ["pull"]
    r = await client.patch(f"/api/v1/robots/{name}", json={"actions": ["push", "delete"]}, auth=ALICE)
    assert r.status_code == 200, r.text
    assert r.json()["permissions"] == [{"project": "team", "actions": ["delete", "push"]}]
    assert await token_actions(client, (name, secret), "repository:team/app:pull,push,delete") == ["delete", "pull", "push"]
    events = (await client.get("/api/v1/audit", params={"action": "robot.update"})).json()
    assert len(events) == 1 and events[0]["actor"] == "alice" and events[0]["object"] == f"robot {name}"
    assert events[0]["detail"]["permissions"] == {"before": {"team": ["pull"]}, "after": {"team": ["delete", "push"]}}


async def test_a_hostile_project_admin_cannot_widen_a_robot_beyond_their_project(world):
    client, _ = world
    name, _ = await make_robot(client, ["pull"])
    mallory_robot, _ = (await client.post("/api/v1/robots", json={"name": "m", "project": "other", "actions": ["pull"]},
                                          auth=MALLORY)).json()["name"], None
    # mallory administers `other` only: team's robot is invisible to her (answered like a missing one)
    r = await client.patch(f"/api/v1/robots/{name}", json={"actions": ["pull", "push", "delete"]}, auth=MALLORY)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NOT_FOUND"
    # her own robot cannot be given another project: a project robot takes `actions` on its own project only
    r = await client.patch(f"/api/v1/robots/{mallory_robot}", auth=MALLORY,
                           json={"permissions": [{"project": "team", "actions": ["pull"]}]})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_REQUEST"
    # nor actions a robot cannot hold (retag, manage-members …)
    r = await client.patch(f"/api/v1/robots/{mallory_robot}", json={"actions": ["pull", "manage-members"]}, auth=MALLORY)
    assert r.status_code == 400
    # a system robot (several projects) is an administrator's
    sysbot = (await client.post("/api/v1/robots", json={"name": "mirror", "permissions": [
        {"project": "other", "actions": ["pull"]}]})).json()["name"]
    r = await client.patch(f"/api/v1/robots/{sysbot}", auth=MALLORY,
                           json={"permissions": [{"project": "team", "actions": ["pull", "push"]}]})
    assert r.status_code == 404
    r = await client.patch(f"/api/v1/robots/{sysbot}", json={"permissions": [
        {"project": "team", "actions": ["pull"]}, {"project": "other", "actions": ["push"]}]})
    assert r.status_code == 200 and r.json()["permissions"] == [
        {"project": "other", "actions": ["push"]}, {"project": "team", "actions": ["pull"]}]
    # nothing mallory tried changed team's robot
    assert (await client.get(f"/api/v1/robots/{name}")).json()["permissions"] == [{"project": "team", "actions": ["pull"]}]


async def test_a_member_without_manage_members_cannot_edit_a_robot(world):
    client, _ = world
    name, _ = await make_robot(client, ["pull"])
    assert (await client.post("/api/v1/projects/team/members", json={"username": "mallory", "role": "maintainer"})).status_code == 201
    r = await client.patch(f"/api/v1/robots/{name}", json={"actions": ["pull", "push"]}, auth=MALLORY)
    assert r.status_code == 404


# -- login passwords for robots ----------------------------------------------------------------------


async def login_password(client, auth) -> str:
    r = await client.post("/api/v1/auth/login-password", auth=auth)
    assert r.status_code == 200, r.text
    assert r.json()["username"] == auth[0]
    return r.json()["password"]


async def works(client, name: str, password: str) -> bool:
    r = await client.head("/v2/team/app/manifests/1.0", auth=(name, password))
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


@pytest.mark.parametrize("revoke", ["rotate", "disable", "delete", "narrow"])
async def test_a_robots_login_password_ends_at_once_when_the_robot_changes(world, revoke):
    client, _ = world
    name, secret = await make_robot(client, ["pull", "push"])
    password = await login_password(client, (name, secret))
    assert password != secret and await works(client, name, password)
    assert (await client.get("/api/v1/auth/whoami", auth=(name, password))).json()["kind"] == "robot"
    # a login password cannot buy the next one: it would renew itself forever
    again = await client.post("/api/v1/auth/login-password", auth=(name, password))
    assert again.status_code == 403
    if revoke == "rotate":
        assert (await client.post(f"/api/v1/robots/{name}/rotate", auth=ALICE)).status_code == 200
    elif revoke == "disable":
        assert (await client.patch(f"/api/v1/robots/{name}", json={"disabled": True}, auth=ALICE)).status_code == 200
        assert not await works(client, name, password)
        assert (await client.patch(f"/api/v1/robots/{name}", json={"disabled": False}, auth=ALICE)).status_code == 200
    elif revoke == "delete":
        assert (await client.delete(f"/api/v1/robots/{name}", auth=ALICE)).status_code == 204
    else:
        assert (await client.patch(f"/api/v1/robots/{name}", json={"actions": ["pull"]}, auth=ALICE)).status_code == 200
    assert not await works(client, name, password)
    events = (await client.get("/api/v1/audit", params={"action": "login-password.issue"})).json()
    assert [e["object"] for e in events] == [f"robot {name}"]


async def test_widening_a_robot_keeps_its_login_passwords(world):
    client, _ = world
    name, secret = await make_robot(client, ["pull"])
    password = await login_password(client, (name, secret))
    assert (await client.patch(f"/api/v1/robots/{name}", json={"actions": ["pull", "push"]}, auth=ALICE)).status_code == 200
    assert await works(client, name, password)
