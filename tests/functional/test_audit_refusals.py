"""/v2 refusals (tag rules, quota, permission) are on the audit log as `outcome: failure`, aggregated so a
retry storm adds to a count instead of flooding the log (issue 15, §5)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from dockyard.metadata.models import audit_events

from .governance_helpers import env, error  # noqa: F401  (env is a fixture)
from .helpers import OCI_MANIFEST, pattern, sha256

REPO = "team/app"


async def _failures(env) -> list[dict]:
    r = await env.api.get("/api/v1/audit", params={"outcome": "failure", "page_size": 100})
    assert r.status_code == 200, r.text
    return [e for e in r.json() if e["action"] != "auth.failure"]


async def test_a_storm_of_refused_pushes_is_one_row_with_its_count(env):
    await env.project("team")
    deny = await env.rule("team", "deny", "latest")
    _, body = await env.reg.push_image(REPO, "v1", seed=1)

    async def refused_push() -> None:
        error(await env.reg.put_manifest(REPO, "latest", body, OCI_MANIFEST), 403, "DENIED")

    for _ in range(4):  # 100 refused pushes, some of them concurrent
        await asyncio.gather(*(refused_push() for _ in range(25)))
    rows = await _failures(env)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["action"], row["object"], row["actor"], row["project"]) == ("manifest.push", f"{REPO}:latest", "admin", "team")
    assert row["detail"]["count"] == 100 and row["detail"]["code"] == "DENIED"
    assert row["detail"]["reason"] == f"tag latest is not allowed in {REPO} (rule {deny}: deny latest in **)"
    # Another reason or object is another row; the pushes that were allowed are not failures.
    await env.rule("team", "immutable", "v*")
    _, other = await env.reg.push_image(REPO, seed=2)
    error(await env.reg.put_manifest(REPO, "v1", other, OCI_MANIFEST), 403, "DENIED")
    error(await env.reg.put_manifest(REPO, "v1", other, OCI_MANIFEST), 403, "DENIED")
    rows = await _failures(env)
    assert [(r["object"], r["detail"]["count"]) for r in rows] == [(f"{REPO}:v1", 2), (f"{REPO}:latest", 100)]
    assert "is immutable" in rows[0]["detail"]["reason"]


async def test_a_window_that_has_passed_starts_a_new_row(env):
    """Aggregation is per window (audit_refusal_window_seconds): an old row is not added to."""
    await env.project("team")
    await env.rule("team", "deny", "latest")
    _, body = await env.reg.push_image(REPO, "v1", seed=1)
    error(await env.reg.put_manifest(REPO, "latest", body, OCI_MANIFEST), 403, "DENIED")
    with env.services.db.write() as conn:
        conn.execute(audit_events.update().where(audit_events.c.outcome == "failure")
                     .values(occurred_at=datetime(2020, 1, 1, tzinfo=UTC)))
    error(await env.reg.put_manifest(REPO, "latest", body, OCI_MANIFEST), 403, "DENIED")
    assert [r["detail"]["count"] for r in await _failures(env)] == [1, 1]


async def test_quota_and_permission_refusals_are_recorded(env):
    await env.project("team")
    guest = await env.user("guest", team="guest")
    r = await env.api.put("/api/v1/projects/team/quota", json={"quota_bytes": 100})
    assert r.status_code == 200, r.text
    big = pattern(500, seed=9)
    r = await env.reg.client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": sha256(big)}, content=big)
    assert "quota of project team exceeded" in error(r, 403, "DENIED")["message"]
    r = await env.reg.client.post(f"/v2/{REPO}/blobs/uploads/", auth=guest)
    error(r, 403, "DENIED")
    rows = await _failures(env)
    assert [(r["actor"], r["action"], r["object"], r["detail"]["count"]) for r in rows] == [
        ("guest", "v2.push", REPO, 1),
        ("admin", "v2.push", REPO, 1),
    ]
    assert "quota of project team exceeded" in rows[1]["detail"]["reason"]


async def test_a_bearer_token_refusal_names_the_account(env):
    """With a registry token (the docker/podman flow) the refused account is on the row, not `anonymous`."""
    await env.project("team")
    guest = await env.user("guest", team="guest")
    r = await env.api.get("/token", params={"service": "dockyard", "scope": f"repository:{REPO}:pull,push"}, auth=guest)
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    for _ in range(3):
        r = await env.reg.client.post(f"/v2/{REPO}/blobs/uploads/", auth=None, headers={"Authorization": f"Bearer {token}"})
        error(r, 403, "DENIED")
    rows = await _failures(env)
    assert [(r["actor"], r["action"], r["object"], r["detail"]["count"]) for r in rows] == [("guest", "v2.push", REPO, 3)]


async def test_random_names_per_request_cannot_grow_the_log_past_the_per_actor_bound(env):
    """Attack (issue 15 review): a signed-in account with no rights sends refused pushes to a new repository
    name each time; every name was a new key, so a row per request. Past `audit_refusal_keys_per_actor` (50)
    they share one `*` row, with no project (it spans projects), and the count keeps every refusal."""
    await env.project("team")
    outsider = await env.user("outsider")
    for n in range(60):
        r = await env.reg.client.post(f"/v2/team/r{n}/blobs/uploads/", auth=outsider)
        error(r, 403, "DENIED")
    rows = [r for r in await _failures(env) if r["actor"] == "outsider"]
    assert len(rows) == 51, len(rows)
    overflow = [r for r in rows if r["object"] == "*"]
    assert len(overflow) == 1, overflow
    assert (overflow[0]["action"], overflow[0]["project"], overflow[0]["detail"]["count"]) == ("v2.push", None, 10)
    assert sorted(r["object"] for r in rows if r["object"] != "*") == sorted(f"team/r{n}" for n in range(50))
    # Another account is not affected by this one's bound.
    r = await env.reg.client.post("/v2/team/other/blobs/uploads/", auth=await env.user("guest", team="guest"))
    error(r, 403, "DENIED")
    assert [r["object"] for r in await _failures(env) if r["actor"] == "guest"] == ["team/other"]


async def test_refused_management_writes_are_aggregated_and_a_failing_audit_write_is_still_403(env, monkeypatch):
    """Attack (issue 15 review): `api.denied` was one row per refused /api/v1 write, so any signed-in account
    could grow the table by a row per request; and a failing audit write there turned the 403 into a 500."""
    await env.project("team")
    guest = await env.user("guest", team="guest")
    for _ in range(30):
        r = await env.api.post("/api/v1/projects/team/tag-rules", json={"kind": "deny", "tag_pattern": "x"}, auth=guest)
        error(r, 403, "DENIED")
    rows = [r for r in await _failures(env) if r["actor"] == "guest"]
    assert [(r["action"], r["object"], r["detail"]["count"]) for r in rows] == [
        ("api.denied", "POST /api/v1/projects/team/tag-rules", 30)]

    def broken(**_):
        raise RuntimeError("audit table unavailable")

    monkeypatch.setattr(env.services.audit, "record_refusal", broken)
    r = await env.api.post("/api/v1/projects/team/tag-rules", json={"kind": "deny", "tag_pattern": "x"}, auth=guest)
    error(r, 403, "DENIED")


async def test_anonymous_writes_are_challenged_and_write_no_audit_row(env):
    """Review (issue 15): an anonymous client may read a public project, but its writes there are 401 challenges
    (/api/v1 and /v2), not refusals, so they add nothing to the audit log whatever names it sends."""
    await env.project("pub", public=True)
    for n in range(5):
        error(await env.api.delete(f"/api/v1/projects/pub/tag-rules/{n + 1}", auth=None), 401, "UNAUTHORIZED")
        error(await env.reg.client.post(f"/v2/pub/r{n}/blobs/uploads/", auth=None), 401, "UNAUTHORIZED")
    assert [r for r in await _failures(env) if r["actor"] == "anonymous"] == []
