"""Acceptance 1 of issue 10: the change feed survives SIGKILL, on SQLite and PostgreSQL.

- Between the change and its delivery: a real `dockyard serve` without a worker (so no durable
  consumer runs) takes concurrent pushes and is killed with SIGKILL, several times. With the server
  dead, the feed holds exactly one artifact.pushed per manifest that committed: none lost, none for
  a push that did not commit. Then the worker's durable consumers run (as `dockyard worker` runs
  them) and scan on push queues exactly one scan per committed image of the auto-scan project.
- A rolled-back change emits no event: a push refused by a tag rule or by the quota leaves no
  artifact.pushed (the refusal's quota.exceeded is kept), and on PostgreSQL a server killed while its
  push transaction is blocked after writing the event (the test holds a lock the transaction needs
  next) leaves neither the manifest nor its event. tests/functional/test_events.py crashes a push
  at the same point in-process on both databases.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from dockyard.domain.events import EventLog
from dockyard.metadata.db import Database
from dockyard.settings import Settings
from tests.support.server import run_dockyard

ADMIN = ("admin", "events-crash-pw-1")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ENV = {"DOCKYARD_WORKER_ENABLED": "false", "DOCKYARD_WORKERS": "2"}
ITERATIONS = 3
PUSHERS = 3


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(label: str) -> tuple[list[bytes], bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "label": label}).encode()
    layer = label.encode() * 100
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)}],
    }).encode()
    return [config, layer], manifest


def push_blobs(client: httpx.Client, repo: str, blobs: list[bytes]) -> None:
    for data in blobs:
        r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha(data)}, content=data)
        assert r.status_code == 201, r.text


class Pushers:
    def __init__(self, url: str, iteration: int):
        self.url, self.iteration = url, iteration
        self.acked: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False, auth=ADMIN) as client:
            k = 0
            while not self.stop.is_set():
                k += 1
                label = f"it{self.iteration}-p{n}-{k}"
                blobs, manifest = image(label)
                try:
                    push_blobs(client, "crash/keep", blobs)
                    r = client.put(f"/v2/crash/keep/manifests/{label}", content=manifest,
                                   headers={"Content-Type": OCI_MANIFEST})
                except (httpx.HTTPError, AssertionError):
                    return  # the server was killed
                if r.status_code == 201:
                    with self.lock:
                        self.acked[label] = sha(manifest)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def committed_manifests(db: Database, repository: str) -> set[str]:
    with db.engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id WHERE r.name = :n"
        ), {"n": repository}).scalars())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_between_change_and_delivery_loses_no_event(backend, tmp_path: Path, database_url_for):
    data_dir = tmp_path / "data"
    database_url = database_url_for(backend)
    acked: dict[str, str] = {}
    for iteration in range(ITERATIONS):
        with run_dockyard(data_dir, database_url=database_url, auth_mode="basic", admin_password=ADMIN[1],
                          extra_env=ENV) as server:
            if iteration == 0:
                with httpx.Client(base_url=server.url, timeout=30, trust_env=False, auth=ADMIN) as client:
                    assert client.post("/api/v1/projects", json={"name": "crash"}).status_code == 201
                    r = client.patch("/api/v1/projects/crash/security", json={"auto_scan": True})
                    assert r.status_code == 200, r.text
            pushers = Pushers(server.url, iteration)
            threads = [threading.Thread(target=pushers.run, args=(n,)) for n in range(PUSHERS)]
            for t in threads:
                t.start()
            # Kill while the pushers are mid-flight, once each iteration has made real progress.
            wait_for(lambda: len(pushers.acked) >= 10, 60, "pushes")
            server.kill()
            pushers.stop.set()
            for t in threads:
                t.join(30)
            assert not any(t.is_alive() for t in threads)
            acked.update(pushers.acked)

    settings = Settings(data_dir=data_dir, database_url=database_url)
    db = Database(settings.resolved_database_url)
    try:
        committed = committed_manifests(db, "crash/keep")
        pushed = EventLog(db).query(repository="crash/keep", types=["artifact.pushed"], limit=100_000)
        assert set(acked.values()) <= committed  # every acknowledged push committed
        assert len(committed) >= ITERATIONS * 10
        # Exactly the committed changes: no event lost to a kill, none for a push that rolled back.
        assert sorted(e.digest for e in pushed) == sorted(committed)
        assert len({e.key for e in pushed}) == len(pushed)
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM jobs WHERE kind = 'scan'")).scalar_one() == 0
    finally:
        db.dispose()

    # The worker's durable consumers now run, as `dockyard worker` runs them (cursor created at the
    # first server's start, before any push): scan on push sees every event once.
    from dockyard.app import build_services

    services = build_services(settings)
    try:
        services.feed.start()
        assert services.feed.drain() >= len(committed)
        assert services.feed.drain() == 0
        with services.db.engine.connect() as conn:
            payloads = [json.loads(p) for p in conn.execute(
                text("SELECT payload FROM jobs WHERE kind = 'scan'")).scalars()]
        assert sorted(p["digest"] for p in payloads) == sorted(committed)
        assert {p["repository"] for p in payloads} == {"crash/keep"}
        lag = services.feed.lag()  # scan on push, and the webhooks and metrics consumers: all caught up
        assert "scan-on-push" in lag and set(lag.values()) == {0}, lag
    finally:
        services.feed.stop()
        services.db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_rolled_back_change_emits_no_event(backend, tmp_path: Path, database_url_for):
    data_dir = tmp_path / "data"
    database_url = database_url_for(backend)
    settings = Settings(data_dir=data_dir, database_url=database_url)
    with run_dockyard(data_dir, database_url=database_url, auth_mode="basic", admin_password=ADMIN[1],
                      extra_env=ENV) as server:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False, auth=ADMIN) as client:
            assert client.post("/api/v1/projects", json={"name": "crash"}).status_code == 201
            r = client.post("/api/v1/projects/crash/tag-rules",
                            json={"kind": "immutable", "tag_pattern": "v*", "repository_pattern": "**"})
            assert r.status_code == 201, r.text
            blobs, first = image("first")
            push_blobs(client, "crash/app", blobs)
            assert client.put("/v2/crash/app/manifests/v1", content=first,
                              headers={"Content-Type": OCI_MANIFEST}).status_code == 201
            blobs, refused = image("refused")
            push_blobs(client, "crash/app", blobs)
            r = client.put("/v2/crash/app/manifests/v1", content=refused, headers={"Content-Type": OCI_MANIFEST})
            assert r.status_code == 403, r.text  # v1 is immutable
            r = client.put("/api/v1/projects/crash/quota", json={"quota_bytes": 1})
            assert r.status_code == 200, r.text
            r = client.put("/v2/crash/app/manifests/v9", content=refused, headers={"Content-Type": OCI_MANIFEST})
            assert r.status_code == 403 and "quota" in r.text, r.text
            listed = client.get("/api/v1/events", params={"project": "crash", "limit": 1000}).json()
            assert [e["digest"] for e in listed if e["type"] == "artifact.pushed"] == [sha(first)]
            assert sha(refused) not in {e["digest"] for e in listed}
            assert [e["type"] for e in listed][-1] == "quota.exceeded"
            assert client.put("/api/v1/projects/crash/quota", json={"quota_bytes": None}).status_code == 200

            if backend == "postgresql":
                killed_mid_transaction(server, client, settings)


def killed_mid_transaction(server, client: httpx.Client, settings: Settings) -> None:
    """SIGKILL while a push transaction has written its manifest and event but not committed: the
    test holds a lock on security_generations, the statement that follows the event in the push."""
    blobs, manifest = image("in-flight")
    push_blobs(client, "crash/app", blobs)
    db = Database(settings.resolved_database_url)
    try:
        with db.engine.connect() as locker:
            locker.execute(text("LOCK TABLE security_generations IN EXCLUSIVE MODE"))
            outcome: list = []

            def push() -> None:
                try:
                    with httpx.Client(base_url=server.url, timeout=30, trust_env=False, auth=ADMIN) as c:
                        outcome.append(c.put("/v2/crash/app/manifests/in-flight", content=manifest,
                                             headers={"Content-Type": OCI_MANIFEST}).status_code)
                except httpx.HTTPError as exc:
                    outcome.append(exc)

            pusher = threading.Thread(target=push)
            pusher.start()

            def blocked() -> bool:
                with db.engine.connect() as probe:
                    return bool(probe.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query ILIKE '%security_generations%' AND datname = current_database()"
                    )).scalar_one())

            wait_for(blocked, 30, "the push to block after writing its event")
            with db.engine.connect() as probe:  # the event row exists, uncommitted, in the blocked transaction
                assert probe.execute(text("SELECT count(*) FROM events WHERE digest = :d"),
                                     {"d": sha(manifest)}).scalar_one() == 0
            server.kill()
            locker.rollback()  # the orphaned backend finds its client gone and rolls back
        pusher.join(30)
        assert outcome and outcome[0] != 201, outcome

        def settled() -> bool:
            with db.engine.connect() as probe:
                return not probe.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%security_generations%'"
                    " AND state <> 'idle' AND datname = current_database() AND pid <> pg_backend_pid()"
                )).scalar_one()

        wait_for(settled, 30, "the killed server's transaction to end")
        assert sha(manifest) not in committed_manifests(db, "crash/app")
        pushed = EventLog(db).query(repository="crash/app", types=["artifact.pushed"], limit=1000)
        assert [e.digest for e in pushed] == [sha(image("first")[1])]
    finally:
        db.dispose()
