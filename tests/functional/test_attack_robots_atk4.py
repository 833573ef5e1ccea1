"""Attack review (atk4) of issue 15 §3: a robot's credentials never carry over to a namesake, whether the robot
or its whole project was deleted and re-created; a project admin cannot reach past their project."""

from __future__ import annotations

import pytest

from .test_robots_ci import ADMIN, ALICE, MALLORY, login_password, make_robot, world  # noqa: F401 (fixture)


async def _refresh_token(client, auth) -> str:
    r = await client.get("/token", params={"service": "dockyard", "offline_token": "true",
                                            "scope": "repository:team/app:pull"}, auth=auth)
    assert r.status_code == 200, r.text
    return r.json()["refresh_token"]


async def _pulls(client, auth) -> bool:
    r = await client.head("/v2/team/app/manifests/1.0", auth=auth)
    assert r.status_code in (200, 401, 404), r.text
    return r.status_code == 200


@pytest.mark.parametrize("how", ["robot", "project"])
async def test_atk4_old_robot_credentials_never_work_for_a_recreated_namesake(world, how):  # noqa: F811
    client, _ = world
    name, secret = await make_robot(client, ["pull"])
    password = await login_password(client, (name, secret))
    refresh = await _refresh_token(client, (name, secret))
    if how == "robot":
        assert (await client.delete(f"/api/v1/robots/{name}", auth=ALICE)).status_code == 204
    else:
        r = await client.delete("/api/v1/projects/team", params={"force": "true"})
        assert r.status_code in (200, 204), r.text
        assert (await client.post("/api/v1/projects", json={"name": "team"})).status_code == 201
        r = await client.post("/api/v1/projects/team/members", json={"username": "alice", "role": "admin"})
        assert r.status_code == 201, r.text
    new_name, new_secret = await make_robot(client, ["pull"])
    assert new_name == name
    for old in (secret, password):
        assert (await client.get("/api/v1/auth/whoami", auth=(name, old))).status_code == 401
    r = await client.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh,
                                          "service": "dockyard", "scope": "repository:team/app:pull"})
    assert r.status_code in (400, 401), r.text
    assert (await client.get("/api/v1/auth/whoami", auth=(name, new_secret))).status_code == 200


async def test_atk4_project_admin_cannot_edit_another_projects_robot_or_grant_star(world):  # noqa: F811
    client, _ = world
    name, _ = await make_robot(client, ["pull"])
    # mallory administers `other`: alice's robot is not hers to see or change
    r = await client.patch(f"/api/v1/robots/{name}", json={"actions": ["pull", "push", "delete"]}, auth=MALLORY)
    assert r.status_code == 404
    for actions in (["*"], ["pull", "manage-members"], ["retag"]):
        r = await client.patch(f"/api/v1/robots/{name}", json={"actions": actions}, auth=ALICE)
        assert r.status_code == 400, (actions, r.text)
    r = await client.patch(f"/api/v1/robots/{name}", json={"permissions": [{"project": "other", "actions": ["pull"]}]},
                           auth=ALICE)
    assert r.status_code == 400
    assert (await client.get(f"/api/v1/robots/{name}")).json()["permissions"] == [{"project": "team", "actions": ["pull"]}]
