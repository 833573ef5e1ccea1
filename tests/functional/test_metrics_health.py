"""/metrics, /healthz, /readyz and request ids, in-process: counters after real requests, the access
setting, readiness failures, and the request id carried into responses, audit entries and jobs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from dockyard.domain.events import record
from dockyard.settings import Settings

from .conftest import open_registry
from .helpers import OCI_MANIFEST, pattern

ADMIN = ("admin", "admin-password-1")
TOKEN = "metrics-token-0123456789"


def samples(body: str) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(reg, **headers) -> dict:
    r = await reg.client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(r.text)


@pytest.fixture
async def reg(tmp_path: Path):
    async with open_registry(tmp_path / "data", "filesystem", metrics_access="open", worker_enabled=False) as r:
        yield r


async def test_http_and_byte_counters_after_pushes_and_pulls(reg):
    digests = []
    for seed in range(3):
        digest, _ = await reg.push_image("team/app", f"v{seed}", seed=seed)
        digests.append(digest)
    for _ in range(2):
        for seed in range(3):
            r = await reg.client.get(f"/v2/team/app/manifests/v{seed}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200
    layer = pattern(100, seed=0)
    blob = await reg.client.get("/v2/team/app/blobs/sha256:" + __import__("hashlib").sha256(layer).hexdigest())
    assert blob.status_code == 200 and blob.content == layer
    assert (await reg.client.get("/v2/team/app/manifests/missing")).status_code == 404
    found = await scrape(reg)
    assert value(found, "registry_http_requests_total", handler="manifest", method="PUT", code="201") == 3
    assert value(found, "registry_http_requests_total", handler="manifest", method="GET", code="200") == 6
    assert value(found, "registry_http_requests_total", handler="manifest", method="GET", code="404") == 1
    assert value(found, "registry_http_requests_total", handler="blob_upload", method="POST", code="202") == 6
    assert value(found, "registry_http_requests_total", handler="blob_upload_chunk", method="PUT", code="201") == 6
    assert value(found, "registry_http_request_duration_seconds_count", handler="manifest", method="GET") == 7
    # The scrape itself is in flight while it is answered, nothing else is.
    assert value(found, "registry_http_in_flight_requests", handler="metrics") == 1
    assert value(found, "registry_http_in_flight_requests", handler="manifest") == 0
    pushed = sum(reg.scalar("SELECT size FROM blobs WHERE digest = :d", d=d) for (d,) in reg.sql("SELECT digest FROM blobs"))
    assert value(found, "dockyard_pushed_bytes_total", project="team") == pushed
    assert value(found, "dockyard_pulled_bytes_total", project="team") == len(layer)
    assert value(found, "registry_http_response_size_bytes_sum", handler="blob", method="GET") == len(layer)
    assert value(found, "dockyard_storage_action_seconds_count", driver="filesystem", action="move") == 6
    assert value(found, "dockyard_upload_sessions_open") == 0
    # No label names a digest, a tag or a path.
    for name, labels in found:
        assert not any(v.startswith("sha256:") or v.startswith("/") or v.startswith("v") and v[1:].isdigit()
                       for _, v in labels), (name, labels)


async def test_feed_consumer_counts_pushed_and_pulled_events(reg):
    services = reg.services
    with services.db.write() as conn:
        record(conn, "artifact.pushed", repository="synthetic/app", digest="sha256:" + "1" * 64)
        record(conn, "artifact.pushed", repository="synthetic/app", digest="sha256:" + "2" * 64)
        record(conn, "artifact.pulled", repository="synthetic/app", data={"count": 5})
    await services.db.run(services.feed.drain)
    found = await scrape(reg)
    assert value(found, "dockyard_pushes_total", project="synthetic") == 2
    assert value(found, "dockyard_pulls_total", project="synthetic") == 5
    assert value(found, "dockyard_event_feed_lag", consumer="metrics") == 0


async def test_a_server_without_a_job_worker_still_runs_the_metrics_consumer(tmp_path):
    async with open_registry(tmp_path / "data", "memory", metrics_access="open", worker_enabled=False,
                             event_poll_seconds=0.05) as reg:
        with reg.services.db.write() as conn:
            record(conn, "artifact.pushed", repository="alone/app", digest="sha256:" + "3" * 64)
        deadline = asyncio.get_running_loop().time() + 10
        while value(found := await scrape(reg), "dockyard_pushes_total", project="alone") < 1:
            assert asyncio.get_running_loop().time() < deadline, "the metrics consumer never ran"
            await asyncio.sleep(0.05)
        assert value(found, "dockyard_pushes_total", project="alone") == 1


async def test_open_uploads_and_job_queue_are_read_at_scrape_time(reg):
    await reg.start_upload("team/app")
    await reg.start_upload("team/app")
    reg.services.jobs.enqueue("gc", {"dry_run": True})
    found = await scrape(reg)
    assert value(found, "dockyard_upload_sessions_open") == 2
    assert value(found, "dockyard_job_queue_depth", kind="gc", state="queued") == 1
    assert ("dockyard_job_queue_latency_seconds", (("kind", "gc"),)) in found


async def test_quota_use_per_project(reg):
    reg.services.projects.create("quota", public=True)  # open metrics name public projects only
    await reg.push_image("quota/app", "v1")
    reg.services.quotas.set("quota", 10_000_000)
    found = await scrape(reg)
    assert value(found, "dockyard_quota_limit_bytes", project="quota") == 10_000_000
    used = reg.services.quotas.get("quota").used_bytes
    assert used > 0 and value(found, "dockyard_quota_used_bytes", project="quota") == used


async def test_a_job_runs_under_the_request_id_that_enqueued_it_and_is_counted(tmp_path, caplog):
    async with open_registry(tmp_path / "data", "filesystem", metrics_access="open", worker_enabled=False,
                             admin_password=ADMIN[1]) as reg:
        r = await reg.client.post("/api/v1/system/gc", json={"dry_run": True}, auth=ADMIN,
                                  headers={"X-Request-Id": "gc-request-7"})
        assert r.status_code == 202, r.text
        assert reg.scalar("SELECT request_id FROM jobs WHERE id = :i", i=r.json()["id"]) == "gc-request-7"
        with caplog.at_level(logging.INFO, logger="dockyard.jobs"):
            assert await reg.services.db.run(reg.services.worker.run_pending) == 1
        assert f"job {r.json()['id']} (gc) started for request gc-request-7" in caplog.text
        found = await scrape(reg)
        assert value(found, "dockyard_jobs_total", kind="gc", outcome="succeeded") == 1
        assert value(found, "dockyard_job_duration_seconds_count", kind="gc", outcome="succeeded") == 1
        assert value(found, "dockyard_gc_runs_total", dry_run="true") == 1


async def test_healthz_and_readyz(reg):
    r = await reg.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await reg.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}
    assert reg.services.storage.stat("health/ready") == 3  # the probe object, outside blobs/ and uploads/


async def test_readyz_503_when_storage_fails(reg, monkeypatch):
    def broken(key):
        raise OSError("input/output error")

    monkeypatch.setattr(reg.services.storage.inner, "stat", broken)
    r = await reg.client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"status": "unavailable", "checks": {"database": "ok", "storage": "failed (OSError)"}}


async def test_readyz_503_when_database_unreachable(reg, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def refused(*args, **kwargs):
        raise OperationalError("connect", {}, Exception("connection refused"))

    monkeypatch.setattr(reg.services.db.engine, "connect", refused)
    r = await reg.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"] == {"database": "failed (OperationalError)", "storage": "ok"}


async def test_readyz_503_when_migrations_are_not_current(reg):
    with reg.services.db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0013_webhooks'"))
    r = await reg.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["database"].startswith("migrations not current: database at ['0013_webhooks']")
    assert (await reg.client.get("/healthz")).status_code == 200  # liveness does not look at the database


async def test_metrics_access_token(tmp_path):
    async with open_registry(tmp_path / "data", "memory", metrics_access="token", metrics_token=TOKEN) as reg:
        assert (await reg.client.get("/metrics")).status_code == 401
        wrong = await reg.client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"})
        assert wrong.status_code == 401
        assert wrong.json()["errors"][0]["message"] == "a valid metrics bearer token is required"
        assert (await reg.client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})).status_code == 401
        found = await scrape(reg, Authorization=f"Bearer {TOKEN}")
        assert value(found, "registry_http_requests_total", handler="metrics", method="GET", code="401") == 3


async def test_metrics_access_off_answers_404_and_health_stays_open(tmp_path):
    async with open_registry(tmp_path / "data", "memory", metrics_access="off") as reg:
        assert (await reg.client.get("/metrics")).status_code == 404
        await reg.client.get("/v2/")
        reg.services.metrics.flush()
        assert "registry_http_requests_total{" not in reg.services.metrics.exposition().decode()  # not collected
        assert (await reg.client.get("/healthz")).status_code == 200
        assert (await reg.client.get("/readyz")).status_code == 200


async def test_metrics_access_is_off_by_default_and_token_needs_a_token(tmp_path):
    assert Settings(data_dir=tmp_path).metrics_access == "off"
    with pytest.raises(ValueError, match="metrics_token"):
        Settings(data_dir=tmp_path, metrics_access="token")
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, metrics_access="token", metrics_token="short")


@pytest.mark.parametrize("path", ["/v2/", "/v2/team/app/manifests/missing", "/api/v1/nothing", "/healthz"])
async def test_request_id_is_echoed_or_made(reg, path):
    r = await reg.client.get(path, headers={"X-Request-Id": "client-id-1"})
    assert r.headers["x-request-id"] == "client-id-1"
    made = (await reg.client.get(path)).headers["x-request-id"]
    assert len(made) == 32 and made.isalnum()
    for bad in ("two words", "x" * 129, "semi;colon"):
        replaced = (await reg.client.get(path, headers={"X-Request-Id": bad})).headers["x-request-id"]
        assert replaced != bad and len(replaced) == 32


async def test_audit_entries_carry_the_request_id(tmp_path):
    async with open_registry(tmp_path / "data", "filesystem", auth_mode="token", admin_password=ADMIN[1]) as reg:
        reg.services.projects.create("team")
        config = b'{"os":"linux"}'
        digest = "sha256:" + __import__("hashlib").sha256(config).hexdigest()
        r = await reg.client.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=config,
                                  auth=ADMIN, headers={"X-Request-Id": "audit-req-1"})
        assert r.status_code == 201, r.text
        rows = reg.sql("SELECT action, request_id FROM audit_events WHERE request_id = 'audit-req-1'")
        assert rows, reg.sql("SELECT action, request_id FROM audit_events")
        r = await reg.client.get("/api/v1/audit", auth=ADMIN)
        assert any(e.get("request_id") == "audit-req-1" for e in r.json()), r.json()
