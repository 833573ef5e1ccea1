"""Attack review of the change feed and webhooks (issue 10): what lies between projects that share a
name over time, and how much a project admin can make the registry store or send."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from dockyard.metadata.webhook_tables import webhooks

from .test_webhooks import PASSWORD, Env, _open


async def test_a_deleted_projects_webhook_does_not_receive_the_events_of_a_project_recreated_with_its_name(tmp_path: Path):
    """Alice's hook on `acme` must go with `acme`: when someone else's project later takes the name,
    its pushes must not be POSTed to Alice's URL, nor her hook show up as the new owner's."""
    async with await _open(tmp_path) as env:
        await env.project("acme")
        alice = await env.user("alice", acme="admin")
        await env.hook("acme", url="https://hooks.example/alice", auth=alice)
        r = await env.api.delete("/api/v1/projects/acme")
        assert r.status_code == 204, r.text
        # The name is free again: another tenant's project takes it.
        await env.project("acme")
        bob = await env.user("bob", acme="admin")
        r = await env.api.get("/api/v1/projects/acme/webhooks", auth=bob)
        assert r.status_code == 200 and r.json() == [], "the former project's hook shows up in the new one"
        env.event("artifact.pushed", "acme/secret-app")
        await env.pump(lambda: True)
        assert [str(req.url) for req in env.receiver.requests] == [], "bob's push was sent to alice's webhook"
        with env.services.db.read() as conn:
            assert conn.execute(select(webhooks.c.id)).all() == []


async def test_the_admin_of_a_project_recreated_with_a_deleted_ones_name_does_not_read_its_former_events(tmp_path: Path):
    """Events name their project; a new `acme` (another tenant's, e.g. auto-created on a first push)
    must not open the old `acme`'s history (repositories, tags, members, robots) to its admin."""
    async with await _open(tmp_path) as env:
        await env.project("acme")
        await env.user("alice", acme="admin")
        env.event("artifact.pushed", "acme/old-secret-app", tag="internal-2024")
        r = await env.api.delete("/api/v1/projects/acme")
        assert r.status_code == 204, r.text
        await env.project("acme")
        bob = await env.user("bob", acme="admin")
        r = await env.api.get("/api/v1/events", params={"project": "acme"}, auth=bob)
        assert r.status_code == 200, r.text
        leaked = [(e["type"], e["repository"], e["data"]) for e in r.json()
                  if e["type"] in ("artifact.pushed", "project.deleted") or e["data"].get("username") == "alice"]
        assert leaked == [], leaked
        r = await env.api.get("/api/v1/events", params={"repository": "acme/old-secret-app"}, auth=bob)
        assert r.status_code == 200 and r.json() == [], r.text
        # His own project's events he does see; an administrator still sees all of them.
        r = await env.api.get("/api/v1/events", params={"project": "acme"}, auth=bob)
        assert [e["type"] for e in r.json()][0] == "project.created"
        r = await env.api.get("/api/v1/events", params={"project": "acme"})
        assert sum(e["type"] == "project.created" for e in r.json()) == 2


async def test_a_project_admin_cannot_create_webhooks_without_bound(tmp_path: Path):
    """Every hook is a delivery row and a POST per event: 1000 hooks on one project turn one push
    into 1000 outbound requests (an amplifier aimed at any external URL)."""
    async with await _open(tmp_path) as env:
        await env.project("acme")
        pa = await env.user("pa", acme="admin")
        statuses = []
        for i in range(25):
            r = await env.api.post("/api/v1/projects/acme/webhooks", json={"url": f"https://hooks.example/{i}"}, auth=pa)
            statuses.append(r.status_code)
        assert statuses[:20] == [201] * 20
        assert set(statuses[20:]) == {400}, statuses


async def test_an_open_event_stream_stops_once_its_reader_loses_read_audit(tmp_path: Path):
    """Authorization was checked once, at connect: a project admin removed from the project (or a
    disabled user, or a demoted administrator) kept receiving the project's events for as long as
    the stream stayed open."""
    import asyncio

    async with await _open(tmp_path) as env:
        await env.project("acme")
        alice = await env.user("alice", acme="admin")
        r = await env.api.get("/api/v1/events", params={"project": "acme", "latest": True, "limit": 1}, auth=alice)
        start = r.json()[-1]["cursor"]
        env.event("artifact.pushed", "acme/before-removal")
        stream = asyncio.create_task(env.api.get(  # the first read (at once) sends that event
            "/api/v1/events/stream", params={"project": "acme", "max_events": 3, "after": start}, auth=alice, timeout=30))
        await asyncio.sleep(0.5)
        r = await env.api.delete("/api/v1/projects/acme/members/alice")
        assert r.status_code == 204, r.text
        env.event("artifact.pushed", "acme/after-removal")
        r = await asyncio.wait_for(stream, 20)
        assert "acme/before-removal" in r.text
        assert "acme/after-removal" not in r.text, "alice still reads acme's events after her removal"


async def test_pings_to_a_receiver_that_never_answers_cannot_hold_every_server_thread(tmp_path: Path):
    """A ping is sent inside the request: a project admin firing many at a receiver that hangs for
    webhook_timeout_seconds would occupy the whole thread pool (every sync endpoint stalls)."""
    import asyncio
    import threading

    import httpx

    async with await _open(tmp_path) as env:
        await env.project("acme")
        pa = await env.user("pa", acme="admin")
        hook = await env.hook("acme", auth=pa)
        release, inside = threading.Event(), []

        def hang(request: httpx.Request) -> httpx.Response:
            inside.append(request)
            release.wait(10)
            return httpx.Response(200)

        env.services.webhook_dispatcher.transport = httpx.MockTransport(hang)
        pings = [asyncio.create_task(env.api.post(f"/api/v1/projects/acme/webhooks/{hook['id']}/ping", auth=pa, timeout=30))
                 for _ in range(12)]
        await asyncio.sleep(1.0)
        hanging = len(inside)
        release.set()
        statuses = sorted(r.status_code for r in await asyncio.gather(*pings))
        assert hanging <= 4, f"{hanging} pings hung on the receiver at once"
        assert 429 in statuses and statuses.count(200) >= 1, statuses


async def test_a_type_filter_repeated_many_times_is_not_a_server_error(tmp_path: Path):
    """Each `type` became one OR term: a few thousand repeats overflow SQLite's expression depth (500)."""
    async with await _open(tmp_path) as env:
        await env.project("acme")
        pa = await env.user("pa", acme="admin")
        r = await env.api.get("/api/v1/events", params={"project": "acme", "type": ",".join(["artifact.pushed"] * 3000)},
                              auth=pa)
        assert r.status_code == 200, r.text[:300]


async def test_one_reader_cannot_open_event_streams_without_bound(tmp_path: Path):
    """Every open stream polls the database each event_poll_seconds on the shared thread pool."""
    import asyncio

    from dockyard.api.mgmt import events as events_api
    from dockyard.api.mgmt.events import MAX_STREAMS_PER_READER

    async with await _open(tmp_path) as env:
        await env.project("acme")
        pa = await env.user("pa", acme="admin")
        streams = [asyncio.create_task(env.api.get(
            "/api/v1/events/stream", params={"project": "acme", "max_events": 1}, auth=pa, timeout=30))
            for _ in range(MAX_STREAMS_PER_READER)]
        for _ in range(200):  # until every one of them is open
            if events_api._streams.get("user:pa") == MAX_STREAMS_PER_READER:
                break
            await asyncio.sleep(0.05)
        r = await asyncio.wait_for(env.api.get(
            "/api/v1/events/stream", params={"project": "acme", "max_events": 1}, auth=pa), 5)
        assert r.status_code == 429, r.status_code
        r = await env.api.get("/api/v1/events/stream", params={"project": "acme", "max_events": 1, "after": "0"})
        assert r.status_code == 200  # another reader is not affected
        env.event("artifact.pushed", "acme/app")
        assert all(r.status_code == 200 for r in await asyncio.wait_for(asyncio.gather(*streams), 20))
        r = await env.api.get("/api/v1/events/stream", params={"project": "acme", "max_events": 1, "after": "0"}, auth=pa)
        assert r.status_code == 200  # closed streams are counted off


async def test_pulls_flushed_by_another_projects_request_are_not_attributed_to_its_caller(tmp_path: Path):
    """The pull buffer is process-wide; a retention dry run (any project admin) flushes it inside its
    request, and every artifact.pulled of every project took that admin's name and request id:
    project B's admins (and webhooks) were told that A's admin pulled B's images."""
    from sqlalchemy import select as sa_select

    from dockyard.metadata.event_tables import events as events_table

    from .test_retention import SEED_ECR

    async with await _open(tmp_path) as env:
        await env.project("acme")
        await env.project("other")
        mallory = await env.user("mallory", other="admin")
        env.services.pulls.record("acme/app", "sha256:" + "b" * 64)  # a pull in acme, not yet flushed
        r = await env.api.post("/api/v1/projects/other/retention-policies",
                               json={"name": "p", "format": "ecr", "document": SEED_ECR}, auth=mallory)
        assert r.status_code == 201, r.text
        r = await env.api.post(f"/api/v1/projects/other/retention-policies/{r.json()['id']}/dry-run", auth=mallory)
        assert r.status_code == 200, r.text
        with env.services.db.read() as conn:
            pulled = conn.execute(sa_select(events_table.c.actor, events_table.c.request_id)
                                  .where(events_table.c.type == "artifact.pulled")).all()
        assert len(pulled) == 1 and pulled[0].actor != "mallory" and pulled[0].request_id is None, pulled


async def test_a_project_admin_cannot_re_enable_a_hook_an_administrator_disabled(tmp_path: Path):
    """An administrator switching off a project's hook (aimed at a third party, say) was undone by
    the project admin's next PATCH {"enabled": true}."""
    async with await _open(tmp_path) as env:
        await env.project("acme")
        pa = await env.user("pa", acme="admin")
        hook = await env.hook("acme", auth=pa)
        path = f"/api/v1/projects/acme/webhooks/{hook['id']}"
        r = await env.api.patch(path, json={"enabled": False})  # the administrator
        assert r.status_code == 200 and r.json()["disabled_reason"] == "disabled by an administrator", r.text
        r = await env.api.patch(path, json={"enabled": True}, auth=pa)
        assert r.status_code == 403, r.text
        r = await env.api.patch(path, json={"enabled": True})
        assert r.status_code == 200 and r.json()["enabled"] is True
        # Their own switch-off (or a disabling after dead deliveries) a project admin undoes.
        assert (await env.api.patch(path, json={"enabled": False}, auth=pa)).status_code == 200
        assert (await env.api.patch(path, json={"enabled": True}, auth=pa)).status_code == 200
