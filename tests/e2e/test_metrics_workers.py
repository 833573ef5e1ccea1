"""Metrics and readiness against a real `dockyard serve` with two worker processes on PostgreSQL
(issue 10 acceptance 4): after a known sequence of pushes and pulls spread over both workers, the
scraped counters are exactly right (multiprocess mode sums every worker), and /readyz answers 503
while PostgreSQL is stopped and 200 again after it is back.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import POSTGRES_SH
from tests.support.server import free_port, run_dockyard

pytestmark = pytest.mark.e2e

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TOKEN = "e2e-metrics-token-0123456789"
PUSHES, PULLS = 8, 20
ENV = {
    "DOCKYARD_WORKERS": "2",
    "DOCKYARD_METRICS_ACCESS": "token",
    "DOCKYARD_METRICS_TOKEN": TOKEN,
    "DOCKYARD_PULL_FLUSH_SECONDS": "1",
    "DOCKYARD_EVENT_POLL_SECONDS": "0.2",
}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fresh(url: str):
    """A client per request with Connection: close, so requests land on either worker."""
    return httpx.Client(base_url=url, timeout=30, trust_env=False, headers={"Connection": "close"})


def scrape(url: str) -> dict[tuple, float]:
    with fresh(url) as client:
        r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape_until(url: str, done, timeout: float = 30) -> dict[tuple, float]:
    """Scrape until `done(samples)` or the deadline; the caller asserts exact values on the last one."""
    deadline = time.monotonic() + timeout
    while True:
        found = scrape(url)
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def push(url: str, k: int) -> int:
    """Push one image (config + layer + manifest) as tag t<k>; returns the blob bytes sent."""
    config = json.dumps({"k": k}).encode()
    layer = f"layer {k} ".encode() * 200
    for blob in (config, layer):
        with fresh(url) as client:
            r = client.post("/v2/metrics/app/blobs/uploads/", params={"digest": sha(blob)}, content=blob)
        assert r.status_code == 201, r.text
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)}],
    }).encode()
    with fresh(url) as client:
        r = client.put(f"/v2/metrics/app/manifests/t{k}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return len(config) + len(layer)


def pull(url: str, k: int) -> None:
    with fresh(url) as client:
        r = client.get(f"/v2/metrics/app/manifests/t{k}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, r.text


def manifest_requests_per_process(data_dir: Path) -> dict[int, float]:
    """registry_http_requests_total{handler="manifest"} as each worker's own file holds it."""
    per_pid: dict[int, float] = {}
    for path in data_dir.glob("tmp/metrics-*/counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, val, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            _metric, sample, labels, _help = json.loads(key)
            if sample == "registry_http_requests_total" and labels.get("handler") == "manifest":
                per_pid[pid] = per_pid.get(pid, 0) + val
    return per_pid


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory, postgres_server):
    """One server (2 workers, PostgreSQL) that has served PUSHES pushes and then PULLS pulls."""
    data_dir = tmp_path_factory.mktemp("metrics") / "data"
    with run_dockyard(data_dir, database_url=postgres_server.create_database(), extra_env=ENV) as server:
        wait_for_workers(server)  # so requests spread over both
        url = server.url
        with ThreadPoolExecutor(4) as pool:
            pushed = sum(pool.map(lambda k: push(url, k), range(PUSHES)))
            list(pool.map(lambda i: pull(url, i % PUSHES), range(PULLS)))
        layer = f"layer {0} ".encode() * 200
        with fresh(url) as client:  # a zero-copy send (http.response.pathsend) under granian
            r = client.get(f"/v2/metrics/app/blobs/{sha(layer)}")
        assert r.status_code == 200 and r.content == layer
        yield server, data_dir, pushed


def test_http_counters_are_exact_across_two_workers(traffic):
    server, data_dir, pushed = traffic
    # Each worker writes its request numbers every second (observability/http_stats.py): poll for them.
    found = scrape_until(server.url, lambda f: (
        value(f, "registry_http_requests_total", handler="manifest", method="GET", code="200") >= PULLS
        and value(f, "registry_http_requests_total", handler="manifest", method="PUT", code="201") >= PUSHES))
    assert value(found, "registry_http_requests_total", handler="manifest", method="PUT", code="201") == PUSHES
    assert value(found, "registry_http_requests_total", handler="manifest", method="GET", code="200") == PULLS
    assert value(found, "registry_http_requests_total", handler="blob_upload", method="POST", code="201") == 2 * PUSHES
    assert value(found, "registry_http_request_duration_seconds_count", handler="manifest", method="GET") == PULLS
    assert value(found, "dockyard_pushed_bytes_total", project="metrics") == pushed
    assert value(found, "registry_http_in_flight_requests", handler="manifest") == 0
    layer_size = len(b"layer 0 " * 200)
    found = scrape_until(server.url, lambda f: value(f, "dockyard_pulled_bytes_total", project="metrics") > 0)
    assert value(found, "dockyard_pulled_bytes_total", project="metrics") == layer_size
    assert value(found, "registry_http_response_size_bytes_sum", handler="blob", method="GET") == layer_size
    assert value(found, "dockyard_upload_sessions_open") == 0
    # Both workers answered some of them: the totals above are sums over two processes.
    per_pid = manifest_requests_per_process(data_dir)
    assert len([n for n in per_pid.values() if n > 0]) == 2, per_pid
    assert sum(per_pid.values()) == PUSHES + PULLS


def test_push_and_pull_counts_from_the_event_feed_are_exact(traffic):
    """artifact.pushed, and artifact.pulled as pull times are flushed, counted once each by the one
    process that holds the "metrics" consumer's cursor."""
    server, _data_dir, _pushed = traffic
    found = scrape_until(server.url, lambda f: (
        value(f, "dockyard_pulls_total", project="metrics") >= PULLS
        and value(f, "dockyard_pushes_total", project="metrics") >= PUSHES))
    assert value(found, "dockyard_pushes_total", project="metrics") == PUSHES
    assert value(found, "dockyard_pulls_total", project="metrics") == PULLS
    assert value(found, "dockyard_event_feed_lag", consumer="metrics") == 0


def pg(*args: str) -> str:
    proc = subprocess.run(["bash", str(POSTGRES_SH), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def ready(url: str) -> httpx.Response:
    with fresh(url) as client:
        return client.get("/readyz")


def wait_for_status(url: str, status: int, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = ready(url)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def wait_for_workers(server, count: int = 2, timeout: float = 60) -> None:
    """The harness waits for the port, which the first worker opens; a worker still in its start-up
    needs the database (a failed start-up makes granian stop the whole server)."""
    deadline = time.monotonic() + timeout
    while Path(server.log_path).read_text(errors="replace").count("Started worker-") < count:
        assert time.monotonic() < deadline, "the workers did not all start"
        time.sleep(0.1)


def test_readyz_turns_503_while_postgresql_is_stopped(tmp_path: Path):
    pg_dir = Path(tempfile.mkdtemp(prefix="dockyard-pg-ready-"))
    pg_dir.chmod(0o755)
    port = str(free_port())
    try:
        url = pg("start", str(pg_dir), port)
        with run_dockyard(tmp_path / "data", database_url=url, extra_env=ENV) as server:
            wait_for_workers(server)
            r = ready(server.url)
            assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "storage": "ok"}, r.text
            pg("stop", str(pg_dir))
            r = wait_for_status(server.url, 503)
            assert r.status_code == 503, r.text
            assert r.json()["status"] == "unavailable"
            assert r.json()["checks"]["database"].startswith("failed (") and r.json()["checks"]["storage"] == "ok"
            with fresh(server.url) as client:
                assert client.get("/healthz").status_code == 200  # alive, just not ready
            pg("start", str(pg_dir), port)
            r = wait_for_status(server.url, 200)
            assert r.status_code == 200 and r.json()["status"] == "ready", r.text
            assert server.alive()
    finally:
        subprocess.run(["bash", str(POSTGRES_SH), "stop", str(pg_dir)], capture_output=True, timeout=120)
        shutil.rmtree(pg_dir, ignore_errors=True)
