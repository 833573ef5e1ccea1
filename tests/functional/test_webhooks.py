"""Webhooks through /api/v1, in process: delivery, retries, the log, redeliver, ping, disabling,
per-endpoint ordering, the SSRF guard and who may see which hooks.

The app runs without its background worker; the test drives the feed (`feed.drain()`) and the
job queue (`worker.run_pending()`) itself, polling with a deadline. The receiver is an
httpx.MockTransport, and DNS is a table (`resolver`), so no test depends on the network.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook, WebhookVerificationError

from dockyard.app import create_app
from dockyard.domain.events import record
from dockyard.metadata.event_tables import events
from dockyard.metadata.webhook_tables import webhook_deliveries, webhooks
from dockyard.settings import Settings

from .helpers import API_CLIENT

ADMIN = ("admin", "admin-password-1")
PASSWORD = "password-123"
BASE = "http://registry.test"
DNS = {"hooks.example": ["93.184.216.34"], "rebind.example": ["93.184.216.35"], "inside.example": ["127.0.0.1"],
       "metadata.example": ["169.254.169.254"]}


class Receiver:
    """Answers with the queued statuses (then 200) and keeps every request."""

    def __init__(self):
        self.statuses: list[int] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status, text=f"answer {status} \x1b[31m" + "x" * 3000)

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


class Env:
    def __init__(self, app, api: httpx.AsyncClient, receiver: Receiver):
        self.app, self.api, self.receiver = app, api, receiver
        self.services = app.state.services

    async def user(self, name: str, **memberships: str) -> tuple[str, str]:
        r = await self.api.post("/api/v1/users", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text
        for project, role in memberships.items():
            r = await self.api.post(f"/api/v1/projects/{project}/members", json={"username": name, "role": role})
            assert r.status_code == 201, r.text
        return (name, PASSWORD)

    async def project(self, name: str) -> None:
        r = await self.api.post("/api/v1/projects", json={"name": name})
        assert r.status_code == 201, r.text

    async def hook(self, project: str | None, url: str = "https://hooks.example/in", auth=None, **body) -> dict:
        path = "/api/v1/system/webhooks" if project is None else f"/api/v1/projects/{project}/webhooks"
        body.setdefault("event_types", ["artifact"])  # not the hook's own policy.changed event
        r = await self.api.post(path, json={"url": url, **body}, auth=auth or ADMIN)
        assert r.status_code == 201, r.text
        return r.json()

    def event(self, type: str, repository: str, tag: str | None = "v1", digest: str = "sha256:" + "a" * 64) -> str:
        with self.services.db.write() as conn:
            record(conn, type, repository=repository, tag=tag, digest=digest, data={"via": "push"}, actor="alice")
            return conn.execute(select(events.c.key).order_by(events.c.id.desc()).limit(1)).scalar_one()

    async def pump(self, until, seconds: float = 10.0) -> None:
        """Run the feed and due jobs until `until()` holds (delivery retries are due within ms)."""
        deadline = time.monotonic() + seconds
        while True:
            await anyio.to_thread.run_sync(self.services.feed.drain)
            await anyio.to_thread.run_sync(self.services.worker.run_pending)
            if until():
                return
            assert time.monotonic() < deadline, "condition not reached in time"
            await anyio.sleep(0.01)

    def deliveries(self) -> list:
        with self.services.db.read() as conn:
            return conn.execute(select(webhook_deliveries).order_by(webhook_deliveries.c.id)).all()


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(request, tmp_path: Path, database_url_for):
    """Private targets allowed (for system administrators); on SQLite and PostgreSQL."""
    async with await _open(tmp_path, database_url=database_url_for(request.param)) as e:
        yield e


class _Open:
    def __init__(self, tmp_path: Path, **settings):
        self.tmp_path, self.settings = tmp_path, settings

    async def __aenter__(self) -> Env:
        s = Settings(
            data_dir=self.tmp_path / "data", admin_password=ADMIN[1], worker_enabled=False,
            webhook_allow_private_targets=self.settings.get("allow_private", True),
            webhook_backoff_base_seconds=0.001, webhook_max_attempts=self.settings.get("max_attempts", 5),
            webhook_disable_after=self.settings.get("disable_after", 3),
            database_url=self.settings.get("database_url"),
        )
        self.app = create_app(s)
        self.lifespan = self.app.router.lifespan_context(self.app)
        await self.lifespan.__aenter__()
        self.receiver = Receiver()
        services = self.app.state.services
        services.webhook_dispatcher.transport = httpx.MockTransport(self.receiver)
        services.webhook_dispatcher.rand = lambda: 0.5
        services.webhooks.resolver = lambda host, port: DNS[host]
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url=BASE, auth=ADMIN)
        return Env(self.app, self.client, self.receiver)

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()
        await self.lifespan.__aexit__(None, None, None)


async def _open(tmp_path: Path, **settings) -> _Open:
    return _Open(tmp_path, **settings)


async def test_three_500s_then_200_is_one_success_with_four_logged_attempts_and_valid_signatures(env: Env):
    await env.project("acme")
    hook = await env.hook("acme")
    assert hook["secret"].startswith("whsec_") and "secret" not in (await env.api.get(f"/api/v1/projects/acme/webhooks/{hook['id']}")).json()
    env.receiver.statuses = [500, 500, 500]
    key = env.event("artifact.pushed", "acme/app")
    await env.pump(lambda: env.deliveries() and env.deliveries()[0].state != "queued")

    assert [r.content for r in env.receiver.requests].count(env.receiver.requests[0].content) == 4
    verifier = Webhook(hook["secret"])
    for request in env.receiver.requests:
        assert request.headers["webhook-id"] == key
        assert request.headers["content-type"] == "application/cloudevents+json"
        assert request.headers["host"] == "hooks.example"
        verifier.verify(request.content, dict(request.headers))
    body = env.receiver.bodies()[0]
    assert body["type"] == "io.dockyard.artifact.pushed" and body["id"] == key and body["specversion"] == "1.0"
    assert body["subject"] == "acme/app:v1" and body["data"]["via"] == "push"
    listed = (await env.api.get("/api/v1/events", params={"project": "acme", "type": "artifact.pushed"})).json()
    assert body["time"] == listed[-1]["occurred_at"] and body["time"].endswith("Z")  # one time format

    r = await env.api.get(f"/api/v1/projects/acme/webhooks/{hook['id']}/deliveries")
    assert r.status_code == 200, r.text
    [delivery] = r.json()
    assert delivery["state"] == "succeeded" and delivery["attempts"] == 4 and delivery["event_key"] == key
    assert [a["status_code"] for a in delivery["log"]] == [500, 500, 500, 200]
    assert [a["outcome"] for a in delivery["log"]] == ["failed", "failed", "failed", "succeeded"]
    body_log = delivery["log"][0]["response_body"]
    assert body_log.startswith("answer 500 \\x1b[31m") and len(body_log) == 1025 and body_log.endswith("…") and "\x1b" not in body_log
    assert all(a["duration_ms"] >= 0 for a in delivery["log"])

    # Redeliver: the same webhook-id again, a fifth attempt in the log.
    r = await env.api.post(f"/api/v1/projects/acme/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver")
    assert r.status_code == 200 and r.json()["state"] == "queued", r.text
    await env.pump(lambda: env.deliveries()[0].state == "succeeded")
    assert len(env.receiver.requests) == 5 and env.receiver.requests[-1].headers["webhook-id"] == key
    assert env.deliveries()[0].attempts == 5

    # Ping: sent in the request, logged as a delivery of its own.
    r = await env.api.post(f"/api/v1/projects/acme/webhooks/{hook['id']}/ping")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "succeeded" and r.json()["log"][0]["status_code"] == 200
    assert env.receiver.bodies()[-1]["type"] == "io.dockyard.webhook.ping"
    verifier.verify(env.receiver.requests[-1].content, dict(env.receiver.requests[-1].headers))

    # Rotation: both secrets verify during the overlap (two signatures), then only the new one.
    r = await env.api.post(f"/api/v1/projects/acme/webhooks/{hook['id']}/rotate-secret")
    new_secret = r.json()["secret"]
    assert new_secret != hook["secret"]
    await env.api.post(f"/api/v1/projects/acme/webhooks/{hook['id']}/ping")
    last = env.receiver.requests[-1]
    assert len(last.headers["webhook-signature"].split(" ")) == 2
    Webhook(new_secret).verify(last.content, dict(last.headers))
    verifier.verify(last.content, dict(last.headers))
    with env.services.db.write() as conn:  # the overlap is over
        conn.execute(webhooks.update().values(previous_secret_until=datetime.now(timezone.utc) - timedelta(seconds=1)))
    await env.api.post(f"/api/v1/projects/acme/webhooks/{hook['id']}/ping")
    last = env.receiver.requests[-1]
    assert len(last.headers["webhook-signature"].split(" ")) == 1
    Webhook(new_secret).verify(last.content, dict(last.headers))
    with pytest.raises(WebhookVerificationError):
        verifier.verify(last.content, dict(last.headers))


async def test_filters_formats_and_system_hooks(env: Env):
    await env.project("acme")
    await env.project("other")
    await env.hook("acme", format="harbor", event_types=["artifact"], repository_pattern="app/*", tag_pattern="v*")
    await env.hook(None, url="https://hooks.example/slack", format="slack", event_types=["artifact.deleted"])
    env.event("artifact.pushed", "acme/app/web", tag="v2")  # harbor hook
    env.event("artifact.pushed", "acme/app/web", tag="latest")  # tag glob: no
    env.event("artifact.pushed", "acme/lib", tag="v1")  # repository glob: no
    env.event("tag.deleted", "acme/app/web", tag="v1")  # type: no
    env.event("artifact.deleted", "other/x", tag="v1")  # system hook
    await env.pump(lambda: len(env.receiver.requests) == 2 and all(d.state == "succeeded" for d in env.deliveries()))
    harbor, slack = sorted(env.receiver.bodies(), key=lambda b: "text" in b)
    assert harbor["type"] == "PUSH_ARTIFACT" and harbor["operator"] == "alice"
    assert harbor["event_data"]["repository"] == {
        "date_created": harbor["occur_at"], "name": "app/web", "namespace": "acme", "repo_full_name": "acme/app/web",
        "repo_type": "private"}
    assert harbor["event_data"]["resources"][0]["resource_url"].endswith("/acme/app/web:v2")
    assert "artifact.deleted" in slack["text"] and "other/x:v1" in slack["text"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_repository_lane_is_delivered_in_order_and_a_dead_endpoint_is_disabled(tmp_path: Path, backend, database_url_for):
    async with await _open(tmp_path, max_attempts=2, disable_after=2, database_url=database_url_for(backend)) as env:
        await env.project("acme")
        hook = await env.hook("acme")
        env.receiver.statuses = [503]  # the first request fails once
        k1 = env.event("artifact.pushed", "acme/a")
        k2 = env.event("artifact.pushed", "acme/a")
        k3 = env.event("artifact.pushed", "acme/b")
        await anyio.to_thread.run_sync(env.services.feed.drain)
        parked = {d.event_key: d.next_attempt_at is None for d in env.deliveries()}
        assert parked == {k1: False, k2: True, k3: False}  # k2 waits behind k1 in lane acme/a
        await env.pump(lambda: all(d.state == "succeeded" for d in env.deliveries()))
        lane_a = [r.headers["webhook-id"] for r in env.receiver.requests if r.headers["webhook-id"] != k3]
        assert lane_a == [k1, k1, k2]

        # Every request fails now: two dead deliveries in a row disable the endpoint.
        env.receiver.statuses = [500] * 10
        env.event("artifact.pushed", "acme/c")
        env.event("artifact.pushed", "acme/d")
        await env.pump(lambda: sum(d.state == "dead" for d in env.deliveries()) == 2)
        r = await env.api.get(f"/api/v1/projects/acme/webhooks/{hook['id']}")
        assert r.json()["enabled"] is False and "2 consecutive dead deliveries" in r.json()["disabled_reason"]
        with env.services.db.read() as conn:
            disabled = conn.execute(select(events.c.data).where(events.c.type == "webhook.disabled")).scalars().all()
        assert len(disabled) == 1 and json.loads(disabled[0])["webhook"] == hook["id"]
        # While disabled nothing is sent; re-enabling sends what was queued meanwhile.
        sent = len(env.receiver.requests)
        k5 = env.event("artifact.pushed", "acme/e")
        await env.pump(lambda: True)
        assert len(env.receiver.requests) == sent
        r = await env.api.patch(f"/api/v1/projects/acme/webhooks/{hook['id']}", json={"enabled": True})
        assert r.json()["enabled"] is True and r.json()["consecutive_failures"] == 0
        env.receiver.statuses = []
        k6 = env.event("artifact.pushed", "acme/e")
        await env.pump(lambda: any(r.headers["webhook-id"] == k6 for r in env.receiver.requests))
        assert k5 not in [r.headers["webhook-id"] for r in env.receiver.requests]  # never matched: the hook was off


INTERNAL = ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x", "http://10.0.0.5/x", "http://inside.example/x", "http://metadata.example/x"]


async def test_project_admins_cannot_target_internal_addresses_and_see_only_their_hooks(env: Env):
    await env.project("acme")
    await env.project("other")
    pa = await env.user("pa", acme="admin")
    await env.user("dev", acme="developer")
    for url in INTERNAL:
        r = await env.api.post("/api/v1/projects/acme/webhooks", json={"url": url}, auth=pa)
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", (url, r.text)
    r = await env.api.get("/api/v1/system/webhooks", auth=pa)
    assert r.status_code == 403 and "project admins: name the project (--project" in r.json()["errors"][0]["message"]
    mine = await env.hook("acme", auth=pa)
    r = await env.api.patch(f"/api/v1/projects/acme/webhooks/{mine['id']}", json={"url": "http://127.0.0.1/"}, auth=pa)
    assert r.status_code == 403
    # A system administrator may, with webhook_allow_private_targets on (this app).
    admins = await env.hook("acme", url="http://127.0.0.1:9/hook")
    theirs = await env.hook("other")
    system = await env.hook(None)

    r = await env.api.get("/api/v1/projects/acme/webhooks", auth=pa)
    assert sorted(h["id"] for h in r.json()) == sorted([mine["id"], admins["id"]])
    assert all("secret" not in h for h in r.json())
    for path in (f"/api/v1/projects/other/webhooks", f"/api/v1/projects/other/webhooks/{theirs['id']}",
                 f"/api/v1/projects/acme/webhooks/{theirs['id']}", f"/api/v1/projects/acme/webhooks/{system['id']}",
                 f"/api/v1/projects/acme/webhooks/{theirs['id']}/deliveries"):
        r = await env.api.get(path, auth=pa)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NOT_FOUND", (path, r.text)
    r = await env.api.get("/api/v1/system/webhooks", auth=pa)
    assert r.status_code == 403
    r = await env.api.get("/api/v1/projects/acme/webhooks", auth=("dev", PASSWORD))
    assert r.status_code == 403


async def test_a_name_that_later_resolves_inside_is_refused_at_delivery(env: Env):
    await env.project("acme")
    pa = await env.user("pa", acme="admin")
    hook = await env.hook("acme", url="https://rebind.example/in", auth=pa)
    DNS_before = DNS["rebind.example"]
    env.services.webhooks.resolver = lambda host, port: ["127.0.0.1"] if host == "rebind.example" else DNS[host]
    try:
        env.event("artifact.pushed", "acme/app")
        await env.pump(lambda: env.deliveries() and env.deliveries()[0].state == "dead")
    finally:
        DNS["rebind.example"] = DNS_before
    assert env.receiver.requests == []
    r = await env.api.get(f"/api/v1/projects/acme/webhooks/{hook['id']}/deliveries", auth=pa)
    assert all(a["error"].startswith("target refused") for a in r.json()[0]["log"])


async def test_with_the_setting_off_not_even_an_admin_targets_loopback(tmp_path: Path):
    async with await _open(tmp_path, allow_private=False) as env:
        await env.project("acme")
        for project in ("acme", None):
            path = "/api/v1/system/webhooks" if project is None else "/api/v1/projects/acme/webhooks"
            r = await env.api.post(path, json={"url": "http://127.0.0.1:8080/x"})
            assert r.status_code == 403 and "webhook_allow_private_targets" in r.json()["errors"][0]["message"]
        r = await env.api.post("/api/v1/projects/acme/webhooks", json={"url": "ftp://hooks.example/x"})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_REQUEST"
        r = await env.api.post("/api/v1/projects/acme/webhooks", json={"url": "https://hooks.example/", "event_types": ["nope"]})
        assert r.status_code == 400
        r = await env.api.post("/api/v1/projects/acme/webhooks", json={"url": "https://hooks.example/", "format": "xml"})
        assert r.status_code == 400


async def test_secrets_survive_a_kek_rotation(tmp_path: Path, monkeypatch):
    """`dockyard admin rotate-kek` re-seals webhook secrets with the signing keys: after it, the
    hook still signs with the secret its receiver holds."""
    from typer.testing import CliRunner

    from dockyard.cli import app as cli

    monkeypatch.delenv("DOCKYARD_SECRET_KEY", raising=False)
    async with await _open(tmp_path) as env:
        await env.project("acme")
        hook = await env.hook("acme")
        rotated = (await env.api.post(f"/api/v1/projects/acme/webhooks/{hook['id']}/rotate-secret")).json()["secret"]
        with env.services.db.read() as conn:
            before = conn.execute(select(webhooks.c.secret_sealed)).scalar_one()
    result = CliRunner().invoke(cli, ["admin", "rotate-kek", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "1 webhook secret(s)" in result.output
    async with await _open(tmp_path) as env:
        with env.services.db.read() as conn:
            after = conn.execute(select(webhooks.c.secret_sealed)).scalar_one()
        assert after.split(":")[1] != before.split(":")[1]  # sealed under the new KEK
        r = await env.api.post(f"/api/v1/projects/acme/webhooks/{hook['id']}/ping")
        assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text
        last = env.receiver.requests[-1]
        Webhook(rotated).verify(last.content, dict(last.headers))
        Webhook(hook["secret"]).verify(last.content, dict(last.headers))  # the previous secret, re-sealed too


async def test_a_delivery_left_without_a_job_by_a_dead_worker_is_repaired(env: Env):
    """A job takes its lane's next delivery over without queueing a job for it; if the worker dies
    then, the next fan-out gives the overdue delivery a job again."""
    from datetime import timedelta

    from sqlalchemy import delete, update

    from dockyard.webhooks.lanes import WEBHOOK_JOB
    from dockyard.metadata.db import utcnow
    from dockyard.metadata.models import jobs

    await env.project("acme")
    await env.hook("acme")
    k1 = env.event("artifact.pushed", "acme/a")
    await anyio.to_thread.run_sync(env.services.feed.drain)
    with env.services.db.write() as conn:  # the state a dead worker leaves: taken over, no job
        conn.execute(delete(jobs).where(jobs.c.kind == WEBHOOK_JOB))
        conn.execute(update(webhook_deliveries).values(next_attempt_at=utcnow() - timedelta(hours=1)))
    await anyio.to_thread.run_sync(env.services.worker.run_pending)
    assert env.receiver.requests == []
    env.services.webhook_dispatcher.repair_grace_seconds = 60
    k2 = env.event("artifact.pushed", "acme/b")
    await env.pump(lambda: len(env.deliveries()) == 2 and all(d.state == "succeeded" for d in env.deliveries()))
    assert sorted(r.headers["webhook-id"] for r in env.receiver.requests) == sorted([k1, k2])


async def test_housekeeping_purges_old_finished_deliveries_but_not_queued_ones(tmp_path: Path):
    from datetime import timedelta

    from sqlalchemy import update

    from dockyard.metadata.db import utcnow
    from dockyard.metadata.webhook_tables import webhook_attempts

    async with await _open(tmp_path) as env:
        await env.project("acme")
        hook = await env.hook("acme")
        for _ in range(2):
            await env.api.post(f"/api/v1/projects/acme/webhooks/{hook['id']}/ping")
        env.event("artifact.pushed", "acme/app")
        await anyio.to_thread.run_sync(env.services.feed.drain)  # queued; no worker runs it
        with env.services.db.write() as conn:  # everything happened 31 days ago
            conn.execute(update(webhook_deliveries).values(
                created_at=utcnow() - timedelta(days=31), finished_at=utcnow() - timedelta(days=31)))
        with env.services.db.write() as conn:  # except the queued delivery, still unfinished
            conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.state == "queued").values(finished_at=None))
        result = env.services.housekeeping.handle({}, lambda _: None)
        assert result["webhook_deliveries_purged"] == 2
        [left] = env.deliveries()
        assert left.state == "queued"
        with env.services.db.read() as conn:
            assert conn.execute(select(webhook_attempts)).all() == []  # the pings' attempts went with them


async def test_outcome_listeners_see_every_attempt(tmp_path: Path):
    async with await _open(tmp_path, max_attempts=2) as env:
        seen: list[str] = []
        env.services.webhook_dispatcher.outcome_listeners.append(seen.append)
        await env.project("acme")
        await env.hook("acme")
        env.receiver.statuses = [500, 500, 500]
        env.event("artifact.pushed", "acme/a")  # 500, 500: dead
        await env.pump(lambda: [d.state for d in env.deliveries()] == ["dead"])
        env.event("artifact.pushed", "acme/b")  # 500, then 200
        await env.pump(lambda: [d.state for d in env.deliveries()] == ["dead", "succeeded"])
        assert seen == ["failed", "dead", "failed", "succeeded"]


async def test_a_tag_filter_fires_on_a_real_push_by_tag(env: Env):
    """docs/webhooks.md's example: --event artifact.pushed --repository 'app/**' --tag 'v*'."""
    from .helpers import Registry

    await env.project("acme")
    await env.hook("acme", format="harbor", event_types=["artifact.pushed"], repository_pattern="app/**",
                   tag_pattern="v*")
    reg = Registry(app=env.app, client=env.api, driver="filesystem", data_dir=Path())
    digest, _ = await reg.push_image("acme/app/web", "v1.2.0", seed=1)
    await reg.push_image("acme/app/web", "latest", seed=2)  # tag glob: no
    await env.pump(lambda: len(env.receiver.requests) == 1 and all(d.state == "succeeded" for d in env.deliveries()))
    assert len(env.deliveries()) == 1
    [body] = env.receiver.bodies()
    assert body["event_data"]["resources"] == [
        {"digest": digest, "tag": "v1.2.0", "resource_url": "127.0.0.1:5000/acme/app/web:v1.2.0"}]  # the default registry_url
    r = await env.api.get("/api/v1/events", params={"project": "acme", "type": "artifact.pushed"})
    assert [(e["tag"], e["data"]["tags"]) for e in r.json()] == [("v1.2.0", ["v1.2.0"]), ("latest", ["latest"])]


async def test_webhook_urls_never_reach_the_log(env: Env, caplog):
    """A Slack incoming-webhook URL's path is its secret: httpx's INFO "HTTP Request: POST <url>" is
    quieted (configure_logging), and Dockyard's own lines name no URL."""
    import logging

    await env.project("acme")
    hook = await env.hook("acme", url="https://hooks.example/services/T0/B0/SeCrEtPaTh", format="slack")
    env.receiver.statuses = [500] * 5  # every attempt fails: the dead delivery disables the hook's count
    from dockyard.safe_text import QUIET_LOGGERS, configure_logging

    names = ("", *QUIET_LOGGERS)
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        configure_logging("debug")  # what `dockyard serve` / `worker` do, at the most verbose level
        with caplog.at_level(logging.DEBUG):
            env.event("artifact.pushed", "acme/app")
            await env.pump(lambda: env.deliveries() and env.deliveries()[0].state == "dead")
            r = await env.api.post(f"/api/v1/projects/acme/webhooks/{hook['id']}/ping")
            assert r.status_code == 200, r.text
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
    assert len(env.receiver.requests) == 6
    assert "SeCrEtPaTh" not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith(("httpx", "httpcore"))]


async def test_a_push_request_id_is_carried_into_its_delivery_jobs(env: Env, caplog):
    """docs/metrics.md: the request id is carried into the jobs a request causes, webhook deliveries too."""
    import logging

    from dockyard.metadata.models import jobs
    from dockyard.webhooks.lanes import WEBHOOK_JOB

    from .helpers import Registry

    await env.project("acme")
    await env.hook("acme")
    reg = Registry(app=env.app, client=env.api, driver="filesystem", data_dir=Path())
    env.api.headers["X-Request-Id"] = "push-request-42"
    try:
        await reg.push_image("acme/app", "v1", seed=3)
    finally:
        del env.api.headers["X-Request-Id"]
    with caplog.at_level(logging.INFO, logger="dockyard"):
        await env.pump(lambda: env.deliveries() and env.deliveries()[0].state == "succeeded")
    with env.services.db.read() as conn:
        rids = conn.execute(select(jobs.c.request_id).where(jobs.c.kind == WEBHOOK_JOB)).scalars().all()
    assert rids == ["push-request-42"]
    assert any("started for request push-request-42" in r.getMessage() for r in caplog.records)


async def test_a_chain_sends_its_lane_in_order_and_parks_once_the_endpoint_is_disabled_mid_chain(env: Env):
    """A job takes its lane's next deliveries over without re-reading them (the webhook row comes from
    its settle transaction): disabling the endpoint while one is being sent stops the chain there."""
    from sqlalchemy import update

    await env.project("acme")
    hook = await env.hook("acme")
    keys = [env.event("artifact.pushed", "acme/a") for _ in range(4)]
    await anyio.to_thread.run_sync(env.services.feed.drain)
    assert [d.next_attempt_at is None for d in env.deliveries()] == [False, True, True, True]
    answer = env.receiver.__call__

    def disable_during_the_second(request: httpx.Request) -> httpx.Response:
        if len(env.receiver.requests) == 1:  # an admin turns the endpoint off meanwhile
            with env.services.db.write() as conn:
                conn.execute(update(webhooks).where(webhooks.c.id == hook["id"]).values(enabled=False))
        return answer(request)

    env.services.webhook_dispatcher.transport = httpx.MockTransport(disable_during_the_second)
    await env.pump(lambda: [d.state for d in env.deliveries()] == ["succeeded", "succeeded", "queued", "queued"])
    assert [r.headers["webhook-id"] for r in env.receiver.requests] == keys[:2]  # one job, in order
    third, fourth = env.deliveries()[2:]
    assert third.next_attempt_at is None and "disabled" in third.last_error  # parked, not sent
    assert fourth.next_attempt_at is None and fourth.attempts == 0
    r = await env.api.patch(f"/api/v1/projects/acme/webhooks/{hook['id']}", json={"enabled": True})
    assert r.json()["enabled"] is True
    await env.pump(lambda: all(d.state == "succeeded" for d in env.deliveries()))
    assert [r.headers["webhook-id"] for r in env.receiver.requests] == keys
    with env.services.db.read() as conn:
        attempts = conn.execute(select(webhook_deliveries.c.attempts)).scalars().all()
    assert attempts == [1, 1, 1, 1]


async def test_a_success_resets_the_count_of_dead_deliveries(tmp_path: Path):
    async with await _open(tmp_path, max_attempts=1, disable_after=2) as env:
        await env.project("acme")
        hook = await env.hook("acme")
        env.receiver.statuses = [500]
        env.event("artifact.pushed", "acme/a")
        await env.pump(lambda: [d.state for d in env.deliveries()] == ["dead"])
        r = await env.api.get(f"/api/v1/projects/acme/webhooks/{hook['id']}")
        assert r.json()["consecutive_failures"] == 1
        env.event("artifact.pushed", "acme/b")
        await env.pump(lambda: [d.state for d in env.deliveries()] == ["dead", "succeeded"])
        r = await env.api.get(f"/api/v1/projects/acme/webhooks/{hook['id']}")
        assert r.json()["consecutive_failures"] == 0 and r.json()["enabled"] is True
