"""Attack review of issue 10 (metrics, request ids, readiness, multiprocess dir): findings as tests."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from dockyard.safe_text import JsonFormatter

from .conftest import open_registry
from .test_metrics_health import scrape, value


@pytest.fixture
async def reg(tmp_path: Path):
    async with open_registry(tmp_path / "data", "filesystem", metrics_access="open", worker_enabled=False) as r:
        yield r


async def test_an_unhandled_error_is_counted_as_500_and_carries_the_request_id(reg, monkeypatch, caplog):
    """An unexpected exception is answered by Starlette's ServerErrorMiddleware, which sits outside the
    user middleware: the metrics must not count the 500 as a client disconnect (499), the response must
    still echo X-Request-Id, and the error's log line must carry that request id."""
    await reg.push_image("team/app", "v1", seed=1)

    async def broken_stat(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(reg.app.state.services.blobs, "stat", broken_stat)
    digest = "sha256:" + hashlib.sha256(b"x").hexdigest()
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(JsonFormatter().format(record))

    handler = Capture(level=logging.ERROR)
    logging.getLogger().addHandler(handler)
    try:
        r = await reg.client.get(f"/v2/team/app/blobs/{digest}", headers={"X-Request-Id": "boom-req-1"})
    finally:
        logging.getLogger().removeHandler(handler)
    assert r.status_code == 500
    assert r.headers.get("x-request-id") == "boom-req-1"
    assert any(json.loads(line).get("request_id") == "boom-req-1" for line in records), records
    found = await scrape(reg)
    assert value(found, "registry_http_requests_total", handler="blob", method="GET", code="500") == 1
    assert value(found, "registry_http_requests_total", handler="blob", method="GET", code="499") == 0


async def test_concurrent_readyz_probes_share_one_check(reg, monkeypatch):
    """/readyz is unauthenticated and each probe costs a database round trip and a storage stat on the
    default thread pool (a handful of threads): a flood of probes must not queue one check each, or the
    load balancer's own probe waits behind them, times out, and the instance is taken out of rotation."""
    import asyncio
    import threading
    import time

    storage = reg.services.storage.inner
    real_stat = storage.stat
    calls = []
    lock = threading.Lock()

    def slow_stat(key):
        with lock:
            calls.append(key)
        time.sleep(0.2)  # an object store's round trip
        return real_stat(key)

    monkeypatch.setattr(storage, "stat", slow_stat)
    answers = await asyncio.gather(*(reg.client.get("/readyz") for _ in range(30)))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert len(calls) <= 2, len(calls)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_an_event_recorded_under_the_longest_accepted_request_id_is_stored(tmp_path, database_url_for, backend):
    """X-Request-Id is accepted up to 128 characters (api/request_id.py) and events.record stores it with
    every event; events.request_id was VARCHAR(64), which PostgreSQL enforces: the write failed."""
    from dockyard import request_context
    from dockyard.api.request_id import MAX_LENGTH
    from dockyard.domain.events import record

    rid = "r" * MAX_LENGTH
    async with open_registry(tmp_path / "data", "memory", database_url=database_url_for(backend),
                             worker_enabled=False) as reg:
        with request_context.acting_as("alice", rid), reg.services.db.write() as conn:
            record(conn, "artifact.pushed", repository="team/app")
        assert reg.scalar("SELECT request_id FROM events WHERE type = 'artifact.pushed'") == rid


async def test_open_metrics_do_not_name_a_private_project_to_an_anonymous_client(tmp_path):
    """docs/security.md's threat model: an anonymous client must not get anything of a private project,
    even its name (the /v2 gate answers NAME_UNKNOWN alike for missing and private projects). With
    metrics_access = "open", /metrics has per-project labels (quota, pushed/pulled bytes, pushes)."""
    async with open_registry(tmp_path / "data", "memory", auth_mode="token", admin_password="admin-password-1",
                             metrics_access="open", worker_enabled=False) as reg:
        reg.services.projects.create("secret-merger-2027", public=False)
        reg.services.quotas.set("secret-merger-2027", 10_000_000)
        reg.services.projects.create("open-source", public=True)
        reg.services.quotas.set("open-source", 20_000_000)
        r = await reg.client.get("/metrics")  # no credentials
        assert r.status_code == 200
        assert "secret-merger-2027" not in r.text
        assert 'dockyard_quota_limit_bytes{project="(private)"} 1e+07' in r.text
        assert 'dockyard_quota_limit_bytes{project="open-source"} 2e+07' in r.text


@pytest.mark.parametrize("schedule", ["* * * * * *", "*/1 * * * * */1", "@every 1s"])
async def test_a_retention_schedule_cannot_run_every_second(tmp_path, schedule):
    """A project admin sets a retention policy's schedule, and the threat model keeps the server's resources
    from a project admin. croniter also accepts six fields (the sixth is seconds): a per-second schedule would
    enqueue a retention run of the project every second. The message already says five fields."""
    from dockyard.errors import InvalidRequest

    from .test_retention import SEED_ECR

    async with open_registry(tmp_path / "data", "memory", worker_enabled=False) as reg:
        reg.services.projects.create("acme")
        with pytest.raises(InvalidRequest):
            reg.services.retention.create("acme", name="fast", format="ecr", document=SEED_ECR, schedule=schedule)
        assert reg.sql("SELECT name FROM schedules WHERE kind = 'retention'") == []


async def test_concurrent_scrapes_share_one_exposition(reg, monkeypatch):
    """A scrape runs the database collectors (quota use is one query per project with a quota, up to 500)
    on the default thread pool; with metrics_access = "open" anyone can send scrapes. Concurrent scrapes
    must share one exposition instead of each running the collectors."""
    import asyncio
    import threading
    import time

    metrics = reg.services.metrics
    real = metrics.exposition
    calls = []
    lock = threading.Lock()

    def slow_exposition():
        with lock:
            calls.append(1)
        time.sleep(0.2)  # the collectors' queries
        return real()

    monkeypatch.setattr(metrics, "exposition", slow_exposition)
    answers = await asyncio.gather(*(reg.client.get("/metrics") for _ in range(30)))
    assert all(r.status_code == 200 and "registry_http_requests_total" in r.text for r in answers)
    assert len(calls) <= 2, len(calls)
