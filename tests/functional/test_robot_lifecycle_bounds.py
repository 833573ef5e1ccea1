"""Attack review of issue 15: a project admin manages the project's robots within bounds. A robot a registry
administrator disabled stays disabled until an administrator enables it; a project admin's expiry is at most
MAX_DURATION_DAYS ahead (as `duration_days`), and "never" (`expires_at: null`) is for administrators only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dockyard.domain.robots import MAX_DURATION_DAYS

from .test_robots_ci import ADMIN, ALICE, make_robot, world  # noqa: F401 (fixture)


def _in_days(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def test_a_robot_disabled_by_an_administrator_stays_disabled_for_project_admins(world):  # noqa: F811
    client, _ = world
    name, secret = await make_robot(client, ["pull"])
    assert (await client.patch(f"/api/v1/robots/{name}", json={"disabled": True}, auth=ADMIN)).status_code == 200
    r = await client.patch(f"/api/v1/robots/{name}", json={"disabled": False}, auth=ALICE)
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["code"] == "DENIED"
    # disabling it again (or describing it) does not lift the administrator's disable
    assert (await client.patch(f"/api/v1/robots/{name}", json={"disabled": True, "actions": ["pull", "push"]},
                               auth=ALICE)).status_code == 200
    assert (await client.patch(f"/api/v1/robots/{name}", json={"disabled": False}, auth=ALICE)).status_code == 403
    assert (await client.get(f"/api/v1/robots/{name}")).json()["disabled"] is True
    assert (await client.get("/api/v1/auth/whoami", auth=(name, secret))).status_code == 401
    assert (await client.patch(f"/api/v1/robots/{name}", json={"disabled": False}, auth=ADMIN)).status_code == 200
    assert (await client.get("/api/v1/auth/whoami", auth=(name, secret))).status_code == 200


async def test_a_project_admin_can_undo_their_own_disable(world):  # noqa: F811
    client, _ = world
    name, secret = await make_robot(client, ["pull"])
    assert (await client.patch(f"/api/v1/robots/{name}", json={"disabled": True}, auth=ALICE)).status_code == 200
    assert (await client.patch(f"/api/v1/robots/{name}", json={"disabled": False}, auth=ALICE)).status_code == 200
    assert (await client.get("/api/v1/auth/whoami", auth=(name, secret))).status_code == 200


async def test_project_admins_expiry_is_bounded_and_never_is_for_administrators(world):  # noqa: F811
    client, _ = world
    name, _ = await make_robot(client, ["pull"])
    created = (await client.get(f"/api/v1/robots/{name}")).json()["expires_at"]
    assert created is not None  # a project admin's robot gets the longest expiry they may give, not "never"
    assert datetime.fromisoformat(created) <= datetime.now(UTC) + timedelta(days=MAX_DURATION_DAYS)

    r = await client.patch(f"/api/v1/robots/{name}", json={"expires_at": None}, auth=ALICE)
    assert r.status_code == 403, r.text
    r = await client.patch(f"/api/v1/robots/{name}", json={"expires_at": _in_days(MAX_DURATION_DAYS + 2)}, auth=ALICE)
    assert r.status_code == 400, r.text
    assert (await client.get(f"/api/v1/robots/{name}")).json()["expires_at"] == created
    r = await client.patch(f"/api/v1/robots/{name}", json={"expires_at": _in_days(30)}, auth=ALICE)
    assert r.status_code == 200, r.text

    r = await client.post("/api/v1/robots", json={"name": "forever", "project": "team", "actions": ["pull"],
                                                  "expires_at": _in_days(MAX_DURATION_DAYS * 10)}, auth=ALICE)
    assert r.status_code == 400, r.text

    # an administrator may do both
    r = await client.patch(f"/api/v1/robots/{name}", json={"expires_at": _in_days(MAX_DURATION_DAYS * 10)}, auth=ADMIN)
    assert r.status_code == 200, r.text
    r = await client.patch(f"/api/v1/robots/{name}", json={"expires_at": None}, auth=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["expires_at"] is None
