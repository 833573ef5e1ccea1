"""Soak test: many clients push, pull, retag and delete against a real `dockyard serve` for a long
time while GC, retention and scans run; nothing may fail, and nothing may leak.

    python benchmarks/soak.py                          # 32 clients, 30 minutes, SQLite
    python benchmarks/soak.py --duration 120 --json    # the CI version (tests/e2e/test_soak.py)
    python benchmarks/soak.py --database-url postgresql+psycopg://u:p@127.0.0.1:5432/soak

Every client owns one repository (`soak/c<N>`) and knows exactly which tags it holds there, so any
unexpected answer is an error: a pull that is not 200 with the right digest and verified blobs, a
push that is not 201 (a MANIFEST_BLOB_UNKNOWN after GC took a blob the client skipped is the
protocol's clean failure: the client uploads again and it is counted as a retry), a retag or a
delete that does not succeed. Meanwhile GC runs every --gc-interval seconds (grace --gc-grace),
retention every --retention-interval (expires all but the newest 3 `tmp-*` images per repository),
and on-demand scans every --scan-interval.

Reported: the error count (must be 0); p50/p99 latency per operation and per minute; RSS and open
file descriptors of the server processes, sampled every few seconds, with a growth verdict
(the last third of the run after warm-up against the first third); background work done; and the
invariant check of tests/support/invariants.py on the stopped server's data. Exit status 1 when
errors occurred, invariants failed, or RSS or fds grew.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import random
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from tests.support.invariants import check_invariants  # noqa: E402
from tests.support.server import run_dockyard  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# State-changing /api/v1 requests need a JSON body or this header (CSRF protection).
API_HEADERS = {"X-Dockyard-Client": "soak"}
ADMIN = ("admin", "soak-admin-password-1")
OPS = {"push": 0.35, "pull": 0.40, "retag": 0.10, "delete": 0.15}
MAX_TAGS = 24
RETENTION = {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["tmp-"],
                                                         "countType": "imageCountMoreThan", "countNumber": 3},
                        "action": {"type": "expire"}}]}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(label: str, size: int, rnd: random.Random) -> bytes:
    """A real gzipped tar (so scans have something to catalogue), deterministic for a label."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        payload = rnd.randbytes(size)
        info = tarfile.TarInfo(f"data/{label}.bin")
        info.size, info.mtime = len(payload), 0
        tar.addfile(info, io.BytesIO(payload))
    return gzip.compress(raw.getvalue(), mtime=0)


BASE_LAYER = layer_tar("base", 32 * 1024, random.Random(0))


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.latency: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.counts: Counter = Counter()
        self.retries: Counter = Counter()
        self.errors = 0
        self.error_samples: list[str] = []
        self.background: Counter = Counter()

    def record(self, op: str, seconds: float) -> None:
        minute = int((time.monotonic() - self.start) // 60)
        with self.lock:
            self.latency[op][minute].append(seconds)
            self.counts[op] += 1

    def error(self, op: str, message: str) -> None:
        with self.lock:
            self.errors += 1
            if len(self.error_samples) < 50:
                self.error_samples.append(f"{op}: {message}")


class Client:
    def __init__(self, n: int, url: str, rec: Recorder, stop: threading.Event, seed: int):
        self.n, self.url, self.rec, self.stop = n, url, rec, stop
        self.rnd = random.Random(seed * 1000 + n)
        self.repo = f"soak/c{n}"
        self.tags: dict[str, str] = {}  # tag -> manifest digest, exactly what the registry holds
        self.k = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120, trust_env=False) as http, \
                httpx.Client(base_url=self.url, timeout=120, trust_env=False, auth=ADMIN, headers=API_HEADERS) as api:
            self.http, self.api = http, api
            while not self.stop.is_set():
                op = self.rnd.choices(list(OPS), weights=list(OPS.values()))[0]
                if op != "push" and not self.tags:
                    op = "push"
                if op == "push" and len(self.tags) >= MAX_TAGS:
                    op = "delete"
                started = time.monotonic()
                try:
                    ok = getattr(self, op)()
                except httpx.HTTPError as exc:
                    ok = f"transport error {exc!r}"
                if ok is True:
                    self.rec.record(op, time.monotonic() - started)
                else:
                    self.rec.error(op, f"{self.repo}: {ok}")

    def upload(self, data: bytes) -> str | bool:
        r = self.http.post(f"/v2/{self.repo}/blobs/uploads/", params={"digest": sha(data)}, content=data)
        return True if r.status_code == 201 else f"upload {r.status_code} {r.text[:200]}"

    def push(self):
        self.k += 1
        label = f"c{self.n}-{self.k}"
        tmp = self.rnd.random() < 0.3
        tag = f"tmp-{self.k}" if tmp else f"keep-{self.k}"
        config = json.dumps({"architecture": "amd64", "os": "linux", "label": label,
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        layer = layer_tar(label, self.rnd.choice([1024, 8 * 1024, 64 * 1024]), self.rnd)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(d), "size": len(d)}
                       for d in (BASE_LAYER, layer)],
        }).encode()
        for attempt in range(4):
            if self.http.head(f"/v2/{self.repo}/blobs/{sha(BASE_LAYER)}").status_code != 200:
                if (ok := self.upload(BASE_LAYER)) is not True:
                    return ok
            for data in (config, layer):
                if (ok := self.upload(data)) is not True:
                    return ok
            r = self.http.put(f"/v2/{self.repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
            if r.status_code == 201:
                if not tmp:  # retention may expire tmp-* images at any time: not tracked
                    self.tags[tag] = sha(manifest)
                return True
            if r.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in r.text:
                with self.rec.lock:
                    self.rec.retries["push"] += 1
                continue  # GC took a blob we skipped: upload again (the protocol's clean failure)
            return f"manifest PUT {r.status_code} {r.text[:200]}"
        return "manifest PUT kept failing with MANIFEST_BLOB_UNKNOWN"

    def pull(self):
        tag = self.rnd.choice(sorted(self.tags))
        r = self.http.get(f"/v2/{self.repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        if r.status_code != 200 or sha(r.content) != self.tags[tag]:
            return f"pull {tag}: {r.status_code} {r.text[:200]}"
        doc = r.json()
        for desc in [doc["config"], *doc["layers"]]:
            b = self.http.get(f"/v2/{self.repo}/blobs/{desc['digest']}")
            if b.status_code != 200 or sha(b.content) != desc["digest"]:
                return f"pull {tag} blob {desc['digest']}: {b.status_code}"
        return True

    def retag(self):
        source = self.rnd.choice(sorted(self.tags))
        self.k += 1
        tag = f"keep-{self.k}-r"
        r = self.api.put(f"/api/v1/repositories/{self.repo}/tags/{tag}", json={"digest": self.tags[source]})
        if r.status_code not in (200, 201):
            return f"retag {source} -> {tag}: {r.status_code} {r.text[:200]}"
        self.tags[tag] = self.tags[source]
        return True

    def delete(self):
        tag = self.rnd.choice(sorted(self.tags))
        r = self.http.delete(f"/v2/{self.repo}/manifests/{tag}")
        if r.status_code != 202:
            return f"delete {tag}: {r.status_code} {r.text[:200]}"
        del self.tags[tag]
        return True


def background(url: str, rec: Recorder, stop: threading.Event, args, policy_id: int, clients: list[Client]) -> None:
    """GC, retention and scans on their intervals, through the management API like an operator would."""
    rnd = random.Random(args.seed)
    due = {"gc": args.gc_interval, "retention": args.retention_interval, "scan": args.scan_interval}
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=120, trust_env=False, auth=ADMIN, headers=API_HEADERS) as api:
        while not stop.wait(1.0):
            elapsed = time.monotonic() - started
            try:
                if elapsed >= due["gc"]:
                    due["gc"] += args.gc_interval
                    r = api.post("/api/v1/system/gc", json={"dry_run": False})
                    _count(rec, "gc_runs", r, 202)
                if elapsed >= due["retention"]:
                    due["retention"] += args.retention_interval
                    r = api.post(f"/api/v1/projects/soak/retention-policies/{policy_id}/run")
                    _count(rec, "retention_runs", r, 202)
                if elapsed >= due["scan"]:
                    due["scan"] += args.scan_interval
                    client = rnd.choice(clients)
                    tags = sorted(client.tags)
                    if tags:  # the tag may be deleted meanwhile: a 404 is not an error of the registry
                        r = api.post(f"/api/v1/repositories/{client.repo}/artifacts/{rnd.choice(tags)}/scan")
                        if r.status_code != 404:
                            _count(rec, "scans", r, 202)
            except httpx.HTTPError as exc:
                rec.error("background", repr(exc))


def _count(rec: Recorder, name: str, r: httpx.Response, expected: int) -> None:
    if r.status_code == expected:
        with rec.lock:
            rec.background[name] += 1
    else:
        rec.error(name, f"{r.status_code} {r.text[:200]}")


def server_processes(pgid: int) -> list[int]:
    """The Python processes of the server's process group (scanner children such as syft excluded)."""
    exe = os.path.realpath(sys.executable)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            if os.path.realpath(f"/proc/{entry}/exe") == exe:
                pids.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def sample(pgid: int) -> dict:
    rss = fds = 0
    pids = server_processes(pgid)
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return {"rss_bytes": rss, "fds": fds, "processes": len(pids)}


def sampler(pgid: int, rec: Recorder, stop: threading.Event, every: float, out: list) -> None:
    while True:
        point = sample(pgid)
        point["t"] = round(time.monotonic() - rec.start, 1)
        out.append(point)
        if stop.wait(every):
            return


def growth(samples: list[dict], duration: float, warmup: float) -> dict:
    """Compare the last third of the samples after warm-up with the first third."""
    steady = [s for s in samples if s["t"] >= warmup and s["processes"]]
    if len(steady) < 6:
        return {"rss_growing": False, "fds_growing": False, "note": "too few samples"}
    third = len(steady) // 3
    first, last = steady[:third], steady[-third:]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    rss_first, rss_last = mean([s["rss_bytes"] for s in first]), mean([s["rss_bytes"] for s in last])
    fds_first, fds_last = max(s["fds"] for s in first), max(s["fds"] for s in last)
    rss_ratio = rss_last / rss_first if rss_first else 1.0
    return {
        "warmup_seconds": warmup,
        "rss_first_third_mib": round(rss_first / 2**20, 1), "rss_last_third_mib": round(rss_last / 2**20, 1),
        "rss_ratio": round(rss_ratio, 3),
        "fds_first_third_max": fds_first, "fds_last_third_max": fds_last,
        # Allocator noise and warm caches move RSS by a few percent; a leak under this load grows steadily.
        "rss_growing": rss_ratio > 1.15,
        "fds_growing": fds_last > fds_first + 16,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def run(args) -> dict:
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="dockyard-soak-")) / "data"
    env = {"DOCKYARD_WORKERS": str(args.workers), "DOCKYARD_GC_GRACE_SECONDS": str(args.gc_grace),
           "DOCKYARD_WORKER_POLL_SECONDS": "0.5", "DOCKYARD_LOG_LEVEL": "warning"}
    env.update(item.split("=", 1) for item in args.server_env)
    rec = Recorder()
    samples: list[dict] = []
    started_at = datetime.now(UTC)
    with run_dockyard(data_dir, database_url=args.database_url, admin_password=ADMIN[1], extra_env=env) as server:
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False, auth=ADMIN, headers=API_HEADERS) as api:
            assert api.post("/api/v1/projects", json={"name": "soak"}).status_code == 201
            r = api.post("/api/v1/projects/soak/retention-policies",
                         json={"name": "tmp", "repository_pattern": "**", "format": "ecr", "document": RETENTION})
            assert r.status_code == 201, r.text
            policy_id = r.json()["id"]
        stop, sampling_stop = threading.Event(), threading.Event()
        rec.start = time.monotonic()
        clients = [Client(n, server.url, rec, stop, args.seed) for n in range(args.clients)]
        threads = [threading.Thread(target=c.run, name=f"client-{c.n}") for c in clients]
        threads.append(threading.Thread(target=background, args=(server.url, rec, stop, args, policy_id, clients)))
        probe = threading.Thread(target=sampler, args=(server.pid, rec, sampling_stop, args.sample_seconds, samples))
        probe.start()
        for t in threads:
            t.start()
        time.sleep(args.duration)
        stop.set()
        for t in threads:
            t.join(300)
        sampling_stop.set()
        probe.join()
        alive = server.alive()
        log_tail = server.log_tail(40)
    # Invariants on the stopped server's data (bytes verified).
    from dockyard.metadata.db import Database
    from dockyard.settings import Settings
    from dockyard.storage.filesystem import FilesystemDriver

    settings = Settings(data_dir=data_dir, database_url=args.database_url)
    db = Database(settings.resolved_database_url)
    try:
        violations = check_invariants(db.engine, FilesystemDriver(settings.resolved_storage_root))
    finally:
        db.dispose()
    latency = {
        op: [{"minute": m, "count": len(v), "p50_ms": round(percentile(v, 0.5) * 1000, 1),
              "p99_ms": round(percentile(v, 0.99) * 1000, 1)} for m, v in sorted(per_minute.items())]
        for op, per_minute in sorted(rec.latency.items())
    }
    overall = {}
    for op, per_minute in sorted(rec.latency.items()):
        values = [x for v in per_minute.values() for x in v]
        overall[op] = {"count": len(values), "p50_ms": round(percentile(values, 0.5) * 1000, 1),
                       "p99_ms": round(percentile(values, 0.99) * 1000, 1)}
    warmup = min(300.0, max(30.0, args.duration * 0.25))
    resources = growth(samples, args.duration, warmup)
    return {
        "started": started_at.isoformat(timespec="seconds"),
        "duration_seconds": args.duration,
        "clients": args.clients,
        "database": "postgresql" if args.database_url else "sqlite",
        "server_workers": args.workers,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "server_alive_at_end": alive,
        "errors": rec.errors + (0 if alive else 1),
        "error_samples": rec.error_samples + ([] if alive else [f"server died:\n{log_tail}"]),
        "operations": dict(rec.counts),
        "retries": dict(rec.retries),
        "background": dict(rec.background),
        "latency_overall": overall,
        "latency_per_minute": latency,
        "resources": {**resources, "samples": [{"t": s["t"], "rss_mib": round(s["rss_bytes"] / 2**20, 1),
                                                "fds": s["fds"], "processes": s["processes"]} for s in samples]},
        "invariant_violations": violations,
        "ok": rec.errors == 0 and alive and not violations and not resources["rss_growing"] and not resources["fds_growing"],
    }


def print_text(report: dict) -> None:
    print(f"soak: {report['clients']} clients, {report['duration_seconds']} s, {report['database']}, "
          f"{report['server_workers']} server workers, {report['machine']['cpus']} cpus, started {report['started']}")
    print(f"errors: {report['errors']}   operations: {report['operations']}   retries: {report['retries']}")
    print(f"background: {report['background']}")
    print("p99 latency (ms) per minute:")
    for op, rows in report["latency_per_minute"].items():
        print(f"  {op:7s} " + " ".join(f"{r['p99_ms']:.0f}" for r in rows)
              + f"   overall p50 {report['latency_overall'][op]['p50_ms']} p99 {report['latency_overall'][op]['p99_ms']}")
    res = report["resources"]
    print("server RSS MiB / fds over time: " + " ".join(f"{s['t']:.0f}s:{s['rss_mib']:.0f}/{s['fds']}" for s in res["samples"][::max(1, len(res['samples']) // 20)]))
    print(f"growth after warm-up: rss {res.get('rss_first_third_mib')} -> {res.get('rss_last_third_mib')} MiB "
          f"(x{res.get('rss_ratio')}), fds max {res.get('fds_first_third_max')} -> {res.get('fds_last_third_max')}; "
          f"growing: rss={res['rss_growing']} fds={res['fds_growing']}")
    print(f"invariants: {'hold' if not report['invariant_violations'] else report['invariant_violations'][:10]}")
    for sample in report["error_samples"][:10]:
        print(f"  error: {sample}")
    print("OK" if report["ok"] else "FAILED")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=1800, help="seconds of load (default 1800)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="server worker processes")
    p.add_argument("--database-url", default=None, help="PostgreSQL URL; default SQLite in the data dir")
    p.add_argument("--data-dir", default=None, help="default: a new temporary directory")
    p.add_argument("--gc-interval", type=float, default=20)
    p.add_argument("--gc-grace", type=int, default=10, help="the server's gc_grace_seconds")
    p.add_argument("--retention-interval", type=float, default=15)
    p.add_argument("--scan-interval", type=float, default=20)
    p.add_argument("--sample-seconds", type=float, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the server")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_text(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
