"""The change feed through the API: every writer records its event (push, tag move, retag, promotion,
deletes, mounts, quota, policies), a refused write records none, the list pages by cursor with the
audit log's visibility, and the server-sent stream resumes from Last-Event-ID."""

from __future__ import annotations

import json

from dockyard.jobs.event_prune import PRUNE_JOB

from .governance_helpers import PASSWORD, env, error, push_referrer  # noqa: F401
from .helpers import OCI_MANIFEST

SRC, DEST = "dev/app", "prod/app"


async def events(env, **params) -> list[dict]:
    r = await env.api.get("/api/v1/events", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()


def summary(items: list[dict]) -> list[tuple]:
    return [(e["type"], e["repository"], e["tag"], e["data"].get("via")) for e in items]


async def test_push_tag_move_retag_promotion_and_deletes_record_their_events(env):
    await env.project("dev")
    await env.project("prod")
    start = (await events(env))[-1]["cursor"]
    first, _ = await env.reg.push_image(SRC, "v1", seed=1)
    second, _ = await env.reg.push_image(SRC, "v1", seed=2)  # moves v1
    r = await env.api.put(f"/api/v1/repositories/{SRC}/tags/old", json={"digest": first})
    assert r.status_code == 200, r.text
    r = await env.api.post("/api/v1/promotions", json={"source": f"{SRC}:v1", "destination": DEST, "tags": ["1.0"]})
    assert r.status_code == 201, r.text
    assert (await env.api.delete(f"/v2/{SRC}/manifests/old")).status_code == 202
    assert (await env.api.delete(f"/v2/{SRC}/manifests/{second}")).status_code == 202

    items = await events(env, after=start, type="artifact,tag")
    assert summary(items) == [
        ("artifact.pushed", SRC, "v1", "push"), ("tag.updated", SRC, "v1", "push"),
        ("artifact.pushed", SRC, "v1", "push"), ("tag.updated", SRC, "v1", "push"),
        ("artifact.pushed", SRC, "old", "retag"), ("tag.updated", SRC, "old", "retag"),
        ("artifact.pushed", DEST, "1.0", "promotion"), ("tag.updated", DEST, "1.0", "promotion"),
        ("artifact.promoted", DEST, None, None),
        ("tag.deleted", SRC, "old", "api"),
        ("artifact.deleted", SRC, None, "api"),
    ]
    pushed, moved = items[2], items[3]
    assert pushed["digest"] == second and pushed["data"]["tags"] == ["v1"] and pushed["data"]["media_type"] == OCI_MANIFEST
    assert pushed["actor"] == "admin" and pushed["project"] == "dev"
    assert moved["data"]["previous_digest"] == first and "previous_digest" not in items[1]["data"]
    assert items[8]["data"]["source"] == f"{SRC}@{second}" and items[8]["digest"] == second
    assert items[10]["digest"] == second and items[10]["data"]["tags"] == ["v1"]
    keys = [e["key"] for e in items]
    assert len(set(keys)) == len(keys)  # one idempotency key per event


async def test_a_refused_write_records_no_event_but_quota_exceeded_is_kept(env):
    await env.project("dev")
    await env.rule("dev", "immutable", "v*")
    await env.reg.push_image(SRC, "v1", seed=1)
    start = (await events(env))[-1]["cursor"]
    r = await env.reg.put_manifest(SRC, "v1", *(await _image_body(env, seed=2)))
    error(r, 403, "DENIED")
    assert await events(env, after=start) == []  # the rolled-back push left nothing in the feed

    body = await _image_body(env, seed=3)  # its blobs go in while there is room
    env.services.quotas.set("dev", 1)
    start = (await events(env))[-1]["cursor"]
    r = await env.reg.put_manifest(SRC, "v9", *body)
    error(r, 403, "DENIED")
    items = await events(env, after=start)
    assert [e["type"] for e in items] == ["quota.exceeded"]  # recorded in its own transaction
    assert items[0]["project"] == "dev" and items[0]["data"]["quota_bytes"] == 1


async def test_quota_warning_when_a_write_crosses_80_percent(env):
    await env.project("dev")
    await env.reg.push_image(SRC, "v1", seed=1)
    used = env.services.quotas.get("dev").used_bytes
    env.services.quotas.set("dev", int(2 * used / 0.85))  # a second image of the same size crosses 80%, fits
    start = (await events(env))[-1]["cursor"]
    await env.reg.push_image(SRC, "v2", seed=2)
    warnings = await events(env, after=start, type="quota.warning")
    assert len(warnings) == 1 and warnings[0]["project"] == "dev"
    assert warnings[0]["data"]["percent"] >= 80


async def test_signature_and_mount_events(env):
    await env.project("dev")
    await env.project("prod")
    digest, body = await env.reg.push_image(SRC, "v1", seed=1)
    sig, _ = await push_referrer(env.reg, SRC, OCI_MANIFEST, body, "application/vnd.cncf.notary.signature", b"notation")
    (attached,) = await events(env, type="signature.attached")
    assert attached["digest"] == sig and attached["data"]["subject"] == digest and attached["data"]["format"] == "notation"
    layer = json.loads(body)["layers"][0]["digest"]
    r = await env.api.post(f"/v2/{DEST}/blobs/uploads/", params={"mount": layer, "from": SRC})
    assert r.status_code == 201, r.text
    (mounted,) = await events(env, type="blob.mounted")
    assert mounted["repository"] == DEST and mounted["digest"] == layer and mounted["data"]["source"] == SRC


async def test_project_member_robot_and_policy_changes(env):
    await env.project("dev")
    await env.user("alice", dev="developer")
    r = await env.api.put("/api/v1/projects/dev/members/alice", json={"role": "maintainer"})
    assert r.status_code == 200, r.text
    await env.rule("dev", "immutable", "v*")
    r = await env.api.patch("/api/v1/projects/dev/security", json={"auto_scan": True})
    assert r.status_code == 200, r.text
    r = await env.api.post("/api/v1/robots", json={"name": "ci", "project": "dev", "actions": ["pull"]})
    assert r.status_code == 201, r.text
    items = await events(env, project="dev")
    assert [e["type"] for e in items] == [
        "project.created", "member.added", "member.updated", "policy.changed", "policy.changed", "robot.created",
    ]
    assert items[2]["data"] == {"username": "alice", "role": "maintainer", "previous_role": "developer"}
    assert [items[3]["data"]["kind"], items[4]["data"]["kind"]] == ["tag_rules", "security"]


async def test_visibility_follows_the_audit_log(env):
    await env.project("dev")
    await env.project("prod")
    await env.reg.push_image(SRC, "v1", seed=1)
    await env.reg.push_image(DEST, "v1", seed=2)
    padmin = await env.user("padmin", dev="admin")
    dev_guest = await env.user("guest", dev="guest")
    r = await env.api.get("/api/v1/events", params={"project": "dev"}, auth=padmin)
    assert r.status_code == 200 and {e["project"] for e in r.json()} == {"dev"} and r.json()
    r = await env.api.get("/api/v1/events", params={"repository": SRC}, auth=padmin)
    assert r.status_code == 200 and {e["repository"] for e in r.json()} == {SRC}
    r = await env.api.get("/api/v1/events", auth=padmin)
    error(r, 403, "DENIED")  # all projects: administrators only; the message says how a project admin asks
    assert r.json()["errors"][0]["message"].endswith("; project admins: name the project (--project / ?project=)")
    error(await env.api.get("/api/v1/events", params={"project": "prod"}, auth=padmin), 404, "NOT_FOUND")
    error(await env.api.get("/api/v1/events", params={"project": "dev"}, auth=dev_guest), 403, "DENIED")
    error(await env.api.get("/api/v1/events/stream", params={"project": "dev"}, auth=dev_guest), 403, "DENIED")
    assert {e["project"] for e in await events(env)} >= {"dev", "prod"}


async def test_paging_by_cursor_and_filters(env):
    await env.project("dev")
    for seed in range(3):
        await env.reg.push_image(SRC, f"v{seed}", seed=seed)
    everything = await events(env, project="dev")
    seen, after = [], None
    while True:
        r = await env.api.get("/api/v1/events", params={"project": "dev", "limit": 2, **({"after": after} if after else {})})
        assert r.status_code == 200
        seen += r.json()
        after = r.headers["dockyard-next-cursor"]
        if "link" not in r.headers:
            break
        assert r.headers["link"].endswith('rel="next"')
    assert [e["id"] for e in seen] == [e["id"] for e in everything]
    assert [e["type"] for e in await events(env, project="dev", type="tag.updated")] == ["tag.updated"] * 3
    error(await env.api.get("/api/v1/events", params={"type": "artifact.exploded"}), 400, "INVALID_REQUEST")
    error(await env.api.get("/api/v1/events", params={"after": "x-y"}), 400, "INVALID_REQUEST")
    future = await events(env, since="2999-01-01T00:00:00Z")
    assert future == []


async def test_stream_sends_server_sent_events_and_resumes_from_last_event_id(env):
    await env.project("dev")
    await env.reg.push_image(SRC, "v1", seed=1)
    await env.reg.push_image(SRC, "v2", seed=2)
    r = await env.api.get("/api/v1/events/stream", params={"project": "dev", "after": "0", "max_events": 3})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    messages = _parse_sse(r.text)
    assert [m["event"] for m in messages] == ["project.created", "artifact.pushed", "tag.updated"]
    assert all(json.loads(m["data"])["cursor"] == m["id"] for m in messages)
    # One time format: the stream spells occurred_at as the REST API does (RFC 3339, Z).
    listed = {e["cursor"]: e["occurred_at"] for e in await events(env, project="dev")}
    streamed = {m["id"]: json.loads(m["data"])["occurred_at"] for m in messages}
    assert streamed == {c: listed[c] for c in streamed} and all(t.endswith("Z") for t in streamed.values())
    r = await env.api.get("/api/v1/events/stream", params={"project": "dev", "type": "tag", "max_events": 1},
                          headers={"Last-Event-ID": messages[-1]["id"]})
    (resumed,) = _parse_sse(r.text)
    assert resumed["event"] == "tag.updated" and json.loads(resumed["data"])["tag"] == "v2"


async def test_the_prune_job_deletes_old_events_that_every_consumer_has_read(env):
    await env.project("dev")
    await env.reg.push_image(SRC, "v1", seed=1)
    env.services.feed.drain()  # the durable consumers pass every event
    before = len(await events(env))
    assert before > 0
    with env.services.db.write() as conn:
        conn.exec_driver_sql("UPDATE events SET occurred_at = '2000-01-01 00:00:00+00:00'")
    await env.reg.push_image(SRC, "v2", seed=2)  # new events stay
    job = env.services.jobs.enqueue(PRUNE_JOB, {})
    env.services.worker.wake()
    result = await _wait_job(env, job)
    assert result["pruned"] == before
    left = await events(env)
    assert left and all(e["occurred_at"] > "2001" for e in left)
    assert env.services.scheduler.get(PRUNE_JOB)["cron"] == env.services.settings.event_prune_schedule


async def _wait_job(env, job_id: int, timeout: float = 30) -> dict:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        job = env.services.jobs.get(job_id)
        if job["state"] == "succeeded":
            return job["result"]
        assert job["state"] in ("queued", "running"), job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


async def _image_body(env, *, seed: int) -> tuple[bytes, str]:
    """An image whose blobs are pushed, and its manifest body (not pushed)."""
    from .helpers import OCI_CONFIG, OCI_LAYER, descriptor, dumps, pattern

    config = dumps({"architecture": "amd64", "os": "linux", "seed": seed})
    layer = pattern(5000, seed=seed)
    await env.reg.push_blob(SRC, config)
    await env.reg.push_blob(SRC, layer)
    body = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, config),
                  "layers": [descriptor(OCI_LAYER, layer)]})
    return body, OCI_MANIFEST


def _parse_sse(text: str) -> list[dict]:
    messages = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")
        if "event" in fields:
            messages.append(fields)
    return messages


async def test_gc_records_one_summary_event(env):
    await env.project("dev")
    digest, _ = await env.reg.push_image(SRC, "v1", seed=1)
    assert (await env.api.delete(f"/v2/{SRC}/manifests/{digest}")).status_code == 202
    env.services.gc.grace_seconds = 0
    result = env.services.gc.run()
    (event,) = await events(env, type="gc.completed")
    assert event["data"]["blobs"] == result["deleted"] + result["resumed"] == 2
    assert event["data"]["bytes"] == result["bytes_freed"] > 0
    env.services.gc.run(dry_run=True)
    assert len(await events(env, type="gc")) == 1  # a dry run changes nothing and records nothing


class Crash(BaseException):
    """The process dies here: nothing handles it, the open transaction rolls back (as with SIGKILL)."""


async def test_a_push_that_dies_after_writing_its_event_leaves_neither_change_nor_event(env, monkeypatch):
    """The crash point the e2e test reaches on PostgreSQL with a lock, here on both databases: the push
    transaction has stored the manifest, moved the tag and recorded its events, then the process dies."""
    from dockyard.metadata import generations

    await env.project("dev")
    body, media_type = await _image_body(env, seed=5)
    start = (await events(env))[-1]["cursor"]

    def die(conn, project):
        seen = conn.exec_driver_sql("SELECT count(*) FROM events WHERE repository = 'dev/app'").scalar()
        assert seen == 2  # artifact.pushed and tag.updated, uncommitted
        raise Crash("after the events, before the commit")

    monkeypatch.setattr(generations, "bump", die)
    try:
        env.services.manifests.put(SRC, "v1", None, body, media_type)
    except Crash:
        pass
    else:
        raise AssertionError("the crash point was not reached")
    monkeypatch.undo()
    assert await events(env, after=start) == []
    assert await env.digest_of(SRC, "v1") is None
    env.services.manifests.put(SRC, "v1", None, body, media_type)  # the same push, alive, records them
    assert [e["type"] for e in await events(env, after=start)] == ["artifact.pushed", "tag.updated"]
