"""Attack review of issue 15: a bearer token names projects, not project ids. One issued before
project `team` was deleted (with force) must not reach a new project `team` created within its
lifetime; its scope still counts where the account may act now. SQLite and PostgreSQL."""

from __future__ import annotations

import time
import types

import pytest

from dockyard.auth import tokens as token_module
from dockyard.auth.principals import Principal
from tests.functional.helpers import sha256
from tests.functional.test_keys_and_tokens import ADMIN, CLIENT, backend, make  # noqa: F401 (fixtures)

ALICE = ("alice", "alice-password-1")
BOB = ("bob", "bob-password-1")
SCOPE = "repository:team/app:pull,push"


async def back_dated_token(client, auth, monkeypatch, seconds: int = 10) -> str:
    """A token issued `seconds` ago (well within its lifetime): no sleeping for the clock to move."""
    monkeypatch.setattr(token_module, "time", types.SimpleNamespace(time=lambda: time.time() - seconds))
    try:
        r = await client.get("/token", params={"service": "dockyard", "scope": SCOPE}, auth=auth)
    finally:
        monkeypatch.setattr(token_module, "time", time)
    assert r.status_code == 200, r.text
    return r.json()["token"]


async def fresh_token(client, auth) -> str:
    r = await client.get("/token", params={"service": "dockyard", "scope": SCOPE}, auth=auth)
    assert r.status_code == 200, r.text
    return r.json()["token"]


async def push_blob(client, tok: str, data: bytes):
    return await client.post(
        "/v2/team/app/blobs/uploads/", params={"digest": sha256(data)}, content=data,
        headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/octet-stream"},
    )


async def get_blob(client, tok: str, data: bytes):
    return await client.get(f"/v2/team/app/blobs/{sha256(data)}", headers={"Authorization": f"Bearer {tok}"})


async def test_token_from_before_a_force_delete_does_not_reach_the_namesake(make, monkeypatch):  # noqa: F811
    async with make() as client:
        services = client.services
        services.users.create(*ALICE)
        services.users.create(*BOB)
        services.projects.create("team")
        services.projects.add_member("team", "alice", "developer")
        old = await back_dated_token(client, ALICE, monkeypatch)
        assert (await push_blob(client, old, b"old layer")).status_code == 201
        assert (await get_blob(client, old, b"old layer")).status_code == 200

        r = await client.delete("/api/v1/projects/team", params={"force": "true"}, auth=ADMIN, headers=CLIENT)
        assert r.status_code in (200, 204), r.text
        r = await client.post("/api/v1/projects", json={"name": "team"}, auth=ADMIN)
        assert r.status_code == 201, r.text
        services.projects.add_member("team", "bob", "admin")

        bobs = await fresh_token(client, BOB)
        assert (await push_blob(client, bobs, b"new layer")).status_code == 201
        assert (await get_blob(client, bobs, b"new layer")).status_code == 200

        pushed = await push_blob(client, old, b"planted")
        assert pushed.status_code == 403, pushed.text
        assert pushed.json()["errors"][0]["code"] == "DENIED"
        pulled = await get_blob(client, old, b"new layer")
        # A private project alice has no role in: the same answer as a missing one (issue 9, finding 9).
        assert pulled.status_code == 404, pulled.text
        assert pulled.json()["errors"][0]["code"] == "NAME_UNKNOWN"
        mounted = await client.post(
            "/v2/team/app/blobs/uploads/", params={"mount": sha256(b"new layer"), "from": "team/app"},
            headers={"Authorization": f"Bearer {old}"},
        )
        assert mounted.status_code == 403, mounted.text


async def test_token_scope_still_counts_where_the_account_may_act_in_the_new_project(make, monkeypatch):  # noqa: F811
    """Auto-create: the token is issued before its project exists (push creates it); later requests
    with that token are checked against the account's rights in the new project, which it holds."""
    async with make(auto_create_projects=True) as client:
        client.services.users.create(*ALICE)
        tok = await back_dated_token(client, ALICE, monkeypatch)
        assert (await push_blob(client, tok, b"first")).status_code == 201
        assert client.services.access.project_exists("team")
        assert (await push_blob(client, tok, b"second")).status_code == 201
        assert (await get_blob(client, tok, b"first")).status_code == 200


def test_namesake_check_is_cached_per_process(make):  # noqa: F811
    """The hot path reads the project's birth once per `credential_check_seconds`, and a create or
    delete in this process drops that view at once."""
    import asyncio

    async def run():
        async with make() as client:
            access, projects = client.services.access, client.services.projects
            before = time.time() - 10
            assert access.created_after("team", before) is False  # no such project
            assert access.created_after_cached("team", before) is False
            projects.create("team", creator=Principal("user", "admin"))
            assert access.created_after_cached("team", before) is None  # the create dropped it
            assert access.created_after("team", before) is True
            assert access.created_after("team", time.time()) is False  # a token of the same second
    asyncio.run(run())
