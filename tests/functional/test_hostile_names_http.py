"""Finding 8 of issue 9 over HTTP: names with a trailing newline (or any control character) are refused
on /v2 and /api/v1, so tag `prod\\n` no longer slips past a `deny prod` rule. SQLite and PostgreSQL."""

from __future__ import annotations

from urllib.parse import quote

from .governance_helpers import env  # noqa: F401  (fixture)
from .governance_helpers import error
from .test_tag_rule_redos import _manifest

CONTROLS = ["\n", "\r", "\x00", "\t", "\x1b", "\x7f", "\x85", "\u2028"]


async def test_finding8_control_characters_are_refused_over_http(env):  # noqa: F811
    await env.project("p")
    await env.rule("p", "deny", "prod")
    body, media_type = _manifest(env, seed=1)
    await env.reg.push_image("p/app", "v1", seed=1)
    for ch in CONTROLS:
        r = await env.reg.put_manifest("p/app", quote("prod" + ch, safe=""), body, media_type)
        error(r, 400, "TAG_INVALID")
        r = await env.api.post("/api/v1/users", json={"username": "alice" + ch, "password": "password-123"})
        error(r, 400, "NAME_INVALID")
        r = await env.api.post("/api/v1/users", json={"username": "alice", "password": "secret-password" + ch})
        error(r, 400, "INVALID_REQUEST")
        r = await env.api.post("/api/v1/robots", json={"name": "ci" + ch, "project": "p", "actions": ["pull"]})
        error(r, 400, "NAME_INVALID")
        r = await env.api.post("/api/v1/projects", json={"name": "team" + ch})
        error(r, 400, "NAME_INVALID")
        r = await env.reg.client.get(f"/v2/p/app{quote(ch, safe='')}/tags/list")
        if ch == "\n":  # no route matches a path with a newline in it
            error(r, 404, "NOT_FOUND")
        else:
            error(r, 400, "NAME_INVALID")
    assert await env.digest_of("p/app", "prod") is None
    tags = (await env.reg.client.get("/v2/p/app/tags/list")).json()["tags"]
    assert tags == ["v1"]
    users = (await env.api.get("/api/v1/users")).json()
    assert [u["username"] for u in users] == ["admin"]
