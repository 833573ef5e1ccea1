"""Webhooks against a real `dockyard serve` (acceptance 2 of issue 10).

A local HTTP receiver started by the test gets a CloudEvents event within 2 s of a `skopeo copy`,
signed per Standard Webhooks (verified with the `standardwebhooks` package); it also gets the events
of a promotion and of a retention delete; and a delivery still pending when the server stops (its
receiver answered 503) goes out after the restart.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from tests.e2e.auth_support import ADMIN, AuthClients, Directory, tiny_layout
from tests.functional.helpers import API_CLIENT
from tests.support.server import ServerProcess, dockyard_env, run_dockyard

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "webhooks-admin-pw"
SERVER_ENV = {
    "DOCKYARD_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # the receiver listens on 127.0.0.1
    "DOCKYARD_WEBHOOK_BACKOFF_BASE_SECONDS": "0.5",
    "DOCKYARD_LOGIN_SLOWDOWN_AFTER": "1000",
}
ECR_KEEP_ONE = {"rules": [{
    "rulePriority": 1, "description": "keep the newest v*",
    "selection": {"tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan", "countNumber": 1},
    "action": {"type": "expire"},
}]}


class Receiver:
    """A local HTTP endpoint: keeps (arrival time, headers, body) of every POST; answers `status`."""

    def __init__(self):
        self.received: list[tuple[float, dict[str, str], bytes]] = []
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.received.append((time.monotonic(), dict(self.headers.items()), body))
                    status = receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[tuple[float, dict[str, str], dict]]:
        with self.lock:
            return [(t, h, json.loads(b)) for t, h, b in self.received]

    def wait_for(self, predicate, timeout: float = 30.0):
        """The first received event (time, headers, body) for which `predicate(body)` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.events():
                if predicate(item[2]):
                    return item
            time.sleep(0.02)
        raise AssertionError(f"no matching event within {timeout} s; received: {[e[2].get('type') for e in self.events()]}")


class Env:
    def __init__(self, server: ServerProcess, tmp: Path, receiver: Receiver):
        self.server, self.tmp, self.receiver = server, tmp, receiver
        self.host = server.host
        self.http = httpx.Client(headers=API_CLIENT, base_url=server.url, trust_env=False, timeout=60,
                                 auth=(ADMIN, ADMIN_PASSWORD))
        self.clients = AuthClients(tmp / "clients", server)
        self.hook: dict = {}

    def push(self, seed: str, ref: str) -> str:
        path = self.tmp / "layouts" / seed
        info = tiny_layout(path, "v1", seed=f"webhooks-{seed}")
        self.clients.run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{path}:v1", f"docker://{self.host}/{ref}")
        return info["digest"]

    def verify(self, headers: dict[str, str], body: dict) -> None:
        raw = [b for _, h, b in self.receiver.received if h.get("webhook-id") == headers["webhook-id"]][-1]
        assert Webhook(self.hook["secret"]).verify(raw, headers)["id"] == body["id"]


@contextlib.contextmanager
def started(tmp: Path):
    """A token-auth server, a receiver, and a system-wide hook (CloudEvents) pointing at it."""
    receiver = Receiver()
    with run_dockyard(tmp / "data", auth_mode="token", admin_password=ADMIN_PASSWORD, extra_env=SERVER_ENV) as server:
        directory = Directory(server, ADMIN_PASSWORD)
        for project in ("hooks", "prod"):
            directory.create_project(project)
        directory.close()
        e = Env(server, tmp, receiver)
        r = e.http.post("/api/v1/system/webhooks", json={
            "url": receiver.url, "name": "e2e receiver",
            "event_types": ["artifact.pushed", "artifact.promoted", "artifact.deleted", "retention.completed"]})
        assert r.status_code == 201, r.text
        e.hook = r.json()
        e.clients.login("skopeo", ADMIN, ADMIN_PASSWORD)
        try:
            yield e
        finally:
            e.http.close()
            e.clients.cleanup_podman()
            receiver.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with started(tmp_path_factory.mktemp("webhooks")) as e:
        yield e


def _is(type_: str, repository: str):
    return lambda body: body.get("type") == f"io.dockyard.{type_}" and body.get("data", {}).get("repository") == repository


def test_a_push_arrives_within_two_seconds_signed(env: Env):
    digest = env.push("push", "hooks/app:v1")
    pushed_at = time.monotonic()
    arrived, headers, body = env.receiver.wait_for(_is("artifact.pushed", "hooks/app"))
    assert arrived - pushed_at <= 2.0, f"the push event arrived {arrived - pushed_at:.2f} s after skopeo returned"
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert body["specversion"] == "1.0" and body["data"]["digest"] == digest and body["source"].endswith("/hooks")
    assert headers["webhook-id"] == body["id"]
    env.verify(headers, body)


def test_promotion_and_retention_delete_events(env: Env):
    env.push("promote", "hooks/svc:v1")
    r = env.http.post("/api/v1/promotions", json={"source": "hooks/svc:v1", "destination": "prod/svc", "tags": ["v1"]})
    assert r.status_code == 201, r.text
    _, headers, body = env.receiver.wait_for(_is("artifact.promoted", "prod/svc"))
    env.verify(headers, body)

    old = env.push("ret-1", "hooks/ret:v1")
    time.sleep(1.1)  # distinct push times for the retention rule's order, not synchronisation
    env.push("ret-2", "hooks/ret:v2")
    r = env.http.post("/api/v1/projects/hooks/retention-policies",
                      json={"name": "keep-one", "format": "ecr", "document": ECR_KEEP_ONE, "repository_pattern": "ret"})
    assert r.status_code == 201, r.text
    r = env.http.post(f"/api/v1/projects/hooks/retention-policies/{r.json()['id']}/run", params={"sync": "true"})
    assert r.status_code == 200, r.text
    _, headers, body = env.receiver.wait_for(
        lambda b: _is("artifact.deleted", "hooks/ret")(b) and b["data"].get("digest") == old)
    assert body["data"].get("via") == "retention"
    env.verify(headers, body)
    env.receiver.wait_for(lambda b: b.get("type") == "io.dockyard.retention.completed" and b["data"].get("project") == "hooks")


def test_pending_deliveries_go_out_after_a_restart(tmp_path: Path):
    with started(tmp_path) as env:
        _restart(env)


def _restart(env: Env) -> None:
    env.receiver.status = 503
    env.push("restart", "hooks/restart:v1")
    env.receiver.wait_for(_is("artifact.pushed", "hooks/restart"))  # the first attempt failed
    env.server.stop()
    env.receiver.status = 200
    r_count = len(env.receiver.events())
    with run_dockyard(env.server.data_dir, port=env.server.port, auth_mode="token", admin_password=ADMIN_PASSWORD,
                      extra_env=SERVER_ENV) as server:
        env.server = server
        deadline = time.monotonic() + 60
        while True:
            r = env.http.get(f"/api/v1/system/webhooks/{env.hook['id']}/deliveries")
            assert r.status_code == 200, r.text
            mine = [d for d in r.json() if d["repository"] == "hooks/restart" and d["event_type"] == "artifact.pushed"]
            if mine and mine[0]["state"] == "succeeded":
                break
            assert time.monotonic() < deadline, f"the pending delivery did not go out after the restart: {mine}"
            time.sleep(0.1)
        assert len(env.receiver.events()) > r_count
        log = mine[0]["log"]
        assert log[0]["status_code"] == 503 and log[-1]["status_code"] == 200 and log[-1]["outcome"] == "succeeded"
        _, headers, body = [e for e in env.receiver.events() if _is("artifact.pushed", "hooks/restart")(e[2])][-1]
        env.verify(headers, body)


def test_the_cli_manages_a_project_hook(env: Env):
    def dockyard(*args: str) -> str:
        run_env = dockyard_env({"DOCKYARD_URL": env.server.url, "DOCKYARD_USERNAME": ADMIN,
                                "DOCKYARD_PASSWORD": ADMIN_PASSWORD, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"})
        proc = subprocess.run([sys.executable, "-m", "dockyard", "webhooks", *args], capture_output=True, text=True,
                              env=run_env, timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"webhooks {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    created = json.loads(dockyard("create", env.receiver.url + "/cli", "--project", "hooks", "--name", "cli hook",
                                  "--event", "artifact.pushed", "--repository", "cli/*", "--json"))
    hook_id, secret = str(created["id"]), created["secret"]
    assert created["event_types"] == ["artifact.pushed"] and created["repository_pattern"] == "cli/*"
    assert "cli hook" in dockyard("list", "--project", "hooks")

    def last_ping(secret_: str) -> dict:
        _, headers, body = env.receiver.wait_for(
            lambda b: b.get("type") == "io.dockyard.webhook.ping" and b["data"].get("webhook") == int(hook_id))
        raw = [b for _, h, b in env.receiver.received if h.get("webhook-id") == headers["webhook-id"]][-1]
        Webhook(secret_).verify(raw, headers)
        return body

    dockyard("ping", hook_id, "--project", "hooks")
    first = last_ping(secret)
    deliveries = json.loads(dockyard("deliveries", hook_id, "--project", "hooks", "--json"))
    [ping] = [d for d in deliveries if d["event_key"] == first["id"]]
    assert ping["state"] == "succeeded" and ping["log"][0]["status_code"] == 200
    sent = len(env.receiver.received)
    dockyard("redeliver", hook_id, str(ping["id"]), "--project", "hooks")
    deadline = time.monotonic() + 30
    while len([h for _, h, _ in env.receiver.received if h.get("webhook-id") == first["id"]]) < 2:
        assert time.monotonic() < deadline, "the redelivery did not arrive"
        time.sleep(0.05)
    assert len(env.receiver.received) > sent

    rotated = json.loads(dockyard("rotate-secret", hook_id, "--project", "hooks", "--json"))
    assert rotated["secret"] != secret
    env.receiver.received.clear()
    dockyard("ping", hook_id, "--project", "hooks")
    last_ping(rotated["secret"])
    dockyard("delete", hook_id, "--project", "hooks", "--yes")
    assert "cli hook" not in dockyard("list", "--project", "hooks")
