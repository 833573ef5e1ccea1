"""Database restart (issue 9 part 2): a real PostgreSQL is restarted while pushes and pulls run
against a real `dockyard serve` (two worker processes).

- Every response is a success or a clean failure: 503 UNAVAILABLE in OCI JSON with Retry-After
  (never a 500 UNKNOWN, never a dropped connection).
- The server reconnects by itself: the same process serves pushes and pulls after the restart.
- Afterwards every tag that got a 201 pulls, digest-verified, and the invariants hold.

PostgreSQL here is the test's own (scripts/postgres.sh in a private directory), so restarting it
disturbs no other test. SQLite has no server to restart; its outage is a full disk
(tests/functional/test_faults_disk_full.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from dockyard.metadata.db import Database
from dockyard.settings import Settings
from dockyard.storage.filesystem import FilesystemDriver
from tests.conftest import POSTGRES_SH
from tests.support.invariants import assert_invariants
from tests.support.server import free_port, run_dockyard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PUSHERS, PULLERS = 3, 2


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pg(*args: str) -> str:
    proc = subprocess.run(["bash", str(POSTGRES_SH), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


class Traffic:
    def __init__(self, url: str):
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[str, str] = {}
        self.statuses: Counter = Counter()
        self.after_restart: Counter = Counter()
        self.restarted = threading.Event()
        self.bad: list[str] = []

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        """Poll the counters (not the clock) until `condition` holds; fail if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if condition():
                    return
            assert time.monotonic() < deadline, f"no {what} within {timeout} s: {dict(self.statuses)}"
            assert not self.bad, "unclean failures:\n" + "\n".join(self.bad[:20])
            time.sleep(0.05)

    def check(self, r: httpx.Response, ok: tuple[int, ...]) -> bool:
        with self.lock:
            self.statuses[r.status_code] += 1
            if self.restarted.is_set():
                self.after_restart[r.status_code] += 1
        if r.status_code in ok:
            return True
        try:
            codes = [e["code"] for e in r.json()["errors"]]
        except Exception:
            codes = None
        if r.status_code != 503 or codes != ["UNAVAILABLE"] or "retry-after" not in r.headers:
            with self.lock:
                self.bad.append(f"{r.request.method} {r.request.url.path} -> {r.status_code} {r.text[:200]}")
        return False

    def pusher(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as client:
            k = 0
            while not self.stop.is_set():
                k += 1
                config = json.dumps({"pusher": n, "k": k}).encode()
                layer = f"layer {n} {k} ".encode() * 300
                manifest = json.dumps({
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)}],
                }).encode()
                try:
                    if not all(self.check(client.post("/v2/db/app/blobs/uploads/", params={"digest": sha(d)}, content=d), (201,))
                               for d in (config, layer)):
                        time.sleep(0.05)
                        continue
                    tag = f"p{n}-{k}"
                    r = client.put(f"/v2/db/app/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
                except httpx.TransportError as exc:
                    with self.lock:
                        self.bad.append(f"pusher {n}: connection failed: {exc!r}")
                    return
                if self.check(r, (201,)):
                    with self.lock:
                        self.acked[tag] = sha(manifest)

    def puller(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as client:
            while not self.stop.is_set():
                with self.lock:
                    choices = sorted(self.acked.items())[-20:]
                if not choices:
                    time.sleep(0.02)
                    continue
                tag, digest = choices[n % len(choices)]
                try:
                    r = client.get(f"/v2/db/app/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
                    if self.check(r, (200,)):
                        assert sha(r.content) == digest
                        for desc in r.json()["layers"]:
                            b = client.get(f"/v2/db/app/blobs/{desc['digest']}")
                            if self.check(b, (200,)):
                                assert sha(b.content) == desc["digest"]
                except httpx.TransportError as exc:
                    with self.lock:
                        self.bad.append(f"puller {n}: connection failed: {exc!r}")
                    return


@pytest.mark.slow
def test_db_restart_postgresql_during_pushes_and_pulls_fails_cleanly_and_reconnects(tmp_path: Path):
    pg_dir = Path(tempfile.mkdtemp(prefix="dockyard-pg-restart-"))
    pg_dir.chmod(0o755)
    port = str(free_port())
    try:
        url = pg("start", str(pg_dir), port)
        data_dir = tmp_path / "data"
        env = {"DOCKYARD_WORKERS": "2", "DOCKYARD_WORKER_POLL_SECONDS": "0.2"}
        with run_dockyard(data_dir, database_url=url, extra_env=env) as server:
            traffic = Traffic(server.url)
            threads = [threading.Thread(target=traffic.pusher, args=(n,)) for n in range(PUSHERS)]
            threads += [threading.Thread(target=traffic.puller, args=(n,)) for n in range(PULLERS)]
            for t in threads:
                t.start()
            traffic.wait_for(lambda: traffic.statuses[201] >= 10 and traffic.statuses[200] >= 5, "traffic before the outage")
            before = len(traffic.acked)
            pg("stop", str(pg_dir))  # fast shutdown: every open connection is terminated
            traffic.wait_for(lambda: traffic.statuses[503] > 0, "a request that finds no database at all")
            pg("start", str(pg_dir), port)
            traffic.restarted.set()
            traffic.wait_for(lambda: traffic.after_restart[201] >= 5 and traffic.after_restart[200] >= 5,
                             "pushes and pulls after the restart")
            traffic.stop.set()
            for t in threads:
                t.join(60)
            assert not any(t.is_alive() for t in threads)
            assert server.alive(), "the server died instead of reconnecting"
            assert not traffic.bad, "unclean failures:\n" + "\n".join(traffic.bad[:20])
            print(f"\nstatuses {dict(traffic.statuses)}; after the restart {dict(traffic.after_restart)}; "
                  f"acked {len(traffic.acked)} (before the restart {before})")
            # The same server process reconnected: pushes and pulls succeed again without a restart of its own.
            assert traffic.after_restart[201] > 0 and traffic.after_restart[200] > 0
            assert traffic.statuses[503] > 0, "the outage never reached a request"
            with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
                for tag, digest in sorted(traffic.acked.items()):
                    r = client.get(f"/v2/db/app/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
                    assert r.status_code == 200 and sha(r.content) == digest, (tag, r.status_code)
                    for desc in [r.json()["config"], *r.json()["layers"]]:
                        b = client.get(f"/v2/db/app/blobs/{desc['digest']}")
                        assert b.status_code == 200 and sha(b.content) == desc["digest"]
        settings = Settings(data_dir=data_dir, database_url=url)
        db = Database(settings.resolved_database_url)
        try:
            assert_invariants(db.engine, FilesystemDriver(settings.resolved_storage_root))
        finally:
            db.dispose()
    finally:
        subprocess.run(["bash", str(POSTGRES_SH), "stop", str(pg_dir)], capture_output=True, timeout=120)
        shutil.rmtree(pg_dir, ignore_errors=True)
