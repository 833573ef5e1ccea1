#!/usr/bin/env python3
"""Feature cost: Dockyard with metrics and one webhook on vs the same Dockyard with them off.

    python benchmarks/run.py --feature-cost [--quick] [--reps N] [--workers N] [--out FILE]

Target (issue 10): the core benchmark's manifest GET and tag PUT rates with events, metrics and one webhook on
reach >= 0.9x the same build with them off.

Every write records its event in the change feed in both configurations: the feed is how scan-on-push and the
pull-gate caches learn of changes, so it has no off switch. What the "on" server adds is everything that reads
the feed or the requests:
  - "off": DOCKYARD_METRICS_ACCESS=off, no webhook;
  - "on":  DOCKYARD_METRICS_ACCESS=open with a scraper reading /metrics every 5 s during the load runs,
           DOCKYARD_LOG_FORMAT=json, and one system-wide webhook (every event type, CloudEvents, Standard Webhooks
           signatures) delivering to a local receiver (its own process) that answers 204 (DOCKYARD_WEBHOOK_ALLOW_PRIVATE_TARGETS=true
           lets the admin target 127.0.0.1).
Both servers run with auth off on /v2 (DOCKYARD_AUTH_MODE=none, as in the core benchmark); the webhook is created
through /api/v1 with the admin's Basic credentials. Each repetition starts both fresh, the order alternates per
scenario and repetition, and figures are medians. The receiver's count of deliveries is checked against the
number of pushes so a webhook that silently stopped cannot flatter the "on" column.
"""

from __future__ import annotations

import argparse
import datetime
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import Layout, build_layout  # noqa: E402
from load import MANIFEST_ACCEPT, check_200, put_manifest, run_wrk, skopeo_copy, small_manifest, wait_skopeo  # noqa: E402
from report import fmt, noise_note, publish, tool_versions  # noqa: E402
from scenarios import Config  # noqa: E402
from servers import BenchError, Dockyard, ForeignLoad, log, measured  # noqa: E402

TARGET = 0.9
REPO, TAG = "bench/app", "1"
CONFIGS = ("off", "on")
SCRAPE_SECONDS = 5.0


RECEIVER = r"""
import http.server, sys
count = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        self.rfile.read(int(self.headers.get("content-length", 0)))
        count += 1
        self.send_response(204)
        self.end_headers()
    def do_GET(self):
        body = str(count).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Receiver:
    """A local webhook endpoint in its own process (as a real receiver would be, so its work does not
    take the load generator's interpreter lock): answers 204 and counts what arrives."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def count(self) -> int:
        return int(httpx.get(f"http://127.0.0.1:{self.port}/count", timeout=10).text)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Scraper:
    """Reads /metrics every SCRAPE_SECONDS, as a Prometheus server would (5 s is an eager interval)."""

    def __init__(self, url: str):
        self.url, self.scrapes, self.failures = url, 0, 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self._stop.wait(SCRAPE_SECONDS):
                r = c.get(self.url)
                self.scrapes += 1
                if r.status_code != 200 or "registry_http_requests_total" not in r.text:
                    self.failures += 1

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=30)


def start_servers(rep_dir: Path, cfg: Config, password: str) -> dict[str, Dockyard]:
    common = {"DOCKYARD_AUTH_MODE": "none", "DOCKYARD_ADMIN_PASSWORD": password}
    off = Dockyard(rep_dir / "off", cfg.workers, {**common, "DOCKYARD_METRICS_ACCESS": "off"}, name="Dockyard off")
    on = Dockyard(
        rep_dir / "on", cfg.workers,
        {**common, "DOCKYARD_METRICS_ACCESS": "open", "DOCKYARD_LOG_FORMAT": "json",
         "DOCKYARD_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"},
        name="Dockyard on",
    )
    servers = {"off": off, "on": on}
    for s in servers.values():
        s.workdir.mkdir(parents=True)
        s.start()
    return servers


def prepare(server: Dockyard, app: Layout, password: str, receiver: Receiver | None) -> None:
    if receiver is not None:
        r = httpx.post(
            f"{server.url}/api/v1/system/webhooks",
            json={"url": receiver.url, "name": "bench", "format": "cloudevents"},
            auth=("admin", password), timeout=30,
        )
        if r.status_code != 201:
            raise BenchError(f"creating the webhook answered {r.status_code}: {r.text[:500]}")
    wait_skopeo([skopeo_copy(app.oci_ref, f"docker://{server.host}/{REPO}:{TAG}")], f"{server.name} push")
    with httpx.Client(timeout=30) as c:
        check_200(c, "GET", f"{server.url}/v2/{REPO}/manifests/{TAG}", MANIFEST_ACCEPT)


def sc_get(server: Dockyard, cfg: Config, tmp: Path) -> dict:
    url = f"{server.url}/v2/{REPO}/manifests/{TAG}"
    cpu0 = server.cpu_seconds()
    st = run_wrk(url, "GET", MANIFEST_ACCEPT, cfg.wrk_seconds, cfg.connections, cfg.wrk_threads, tmp)
    cpu = server.cpu_seconds() - cpu0
    return {"manifest_get_rps": st["rps"], "cpu_ms_per_get": cpu * 1000 / st["requests"]}


def sc_tag_puts(server: Dockyard, cfg: Config, tmp: Path) -> dict:
    with httpx.Client(timeout=30) as c:
        body = small_manifest(c, server.url, "bench/tags")
        put_manifest(c, server.url, "bench/tags", f"warmup{time.monotonic_ns()}", body)
        prefix = f"r{time.monotonic_ns() % 10**9}-"
        t0 = time.perf_counter()
        for i in range(cfg.tag_puts):
            put_manifest(c, server.url, "bench/tags", f"{prefix}{i:05d}", body)
        dt = time.perf_counter() - t0
    return {"tag_put_ops": cfg.tag_puts / dt}


SCENARIOS = [("manifest GET", sc_get), ("sequential tag PUTs", sc_tag_puts)]
METRICS = [
    ("manifest_get_rps", "manifest GET by tag (wrk, 32 conns)", "req/s", True, True),
    ("tag_put_ops", "sequential manifest PUTs to new tags (1 conn)", "ops/s", True, True),
    ("cpu_ms_per_get", "server CPU per manifest GET (lower is better)", "CPU ms/req", False, False),
]


def build_table(results: dict[str, dict[str, list[float]]]) -> tuple[list[list[str]], list[str]]:
    header = ["metric", "unit", "off", "on", "on/off", "target", "verdict", "samples off | on"]
    rows, misses = [], []
    for key, label, unit, higher, has_target in METRICS:
        off_s, on_s = results["off"].get(key, []), results["on"].get(key, [])
        if not off_s or not on_s:
            continue
        off, on = statistics.median(off_s), statistics.median(on_s)
        ratio = on / off if off else float("inf")
        verdict = "-" if not has_target else ("PASS" if ratio >= TARGET else "MISS")
        if verdict == "MISS":
            misses.append(f"{label}: {fmt(on)} vs {fmt(off)} {unit} = {ratio:.2f}x (target >= {TARGET:g}x)")
        samples = " ".join(fmt(v) for v in off_s) + " | " + " ".join(fmt(v) for v in on_s)
        rows.append([label, unit, fmt(off), fmt(on), f"{ratio:.2f}x", f">= {TARGET:g}x" if has_target else "-",
                     verdict, samples])
    return [header] + rows, misses


def wait_deliveries(receiver: Receiver, expected: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := receiver.count) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    if got < expected:
        raise BenchError(f"the webhook receiver got {got} deliveries, expected at least {expected}")


def feature_cost(args: argparse.Namespace, cfg: Config) -> int:
    app = build_layout("app", 2, 1_000_000, ref="latest")
    log(f"feature cost: {cfg.reps} rep(s), {cfg.wrk_seconds:g} s load runs, {cfg.tag_puts} tag PUTs")
    results: dict[str, dict[str, list[float]]] = {c: {} for c in CONFIGS}
    started = time.monotonic()
    whole_run, foreign = ForeignLoad(), ForeignLoad()
    foreign_shares: list[float] = []
    tmp_root = Path(tempfile.mkdtemp(prefix="dockyard-featurebench-"))
    delivered, scrapes = [], []
    try:
        for rep in range(cfg.reps):
            rep_dir = tmp_root / f"rep{rep}"
            password = secrets.token_urlsafe(18)
            receiver = Receiver()
            servers = start_servers(rep_dir, cfg, password)
            scraper = None
            try:
                log(f"rep {rep + 1}/{cfg.reps}: off on {servers['off'].host}, on on {servers['on'].host}")
                prepare(servers["off"], app, password, None)
                prepare(servers["on"], app, password, receiver)
                scraper = Scraper(f"{servers['on'].url}/metrics")
                for si, (title, fn) in enumerate(SCENARIOS):
                    order = list(CONFIGS) if (rep + si) % 2 == 0 else list(reversed(CONFIGS))
                    for name in order:
                        measured(title, name, lambda: fn(servers[name], cfg, rep_dir), foreign, foreign_shares,
                                 results[name], width=6)
                # 1 skopeo push + warm-up + tag PUTs, each at least one event delivered.
                wait_deliveries(receiver, 2 + cfg.tag_puts)
                delivered.append(receiver.count)
                scraper.stop()
                if scraper.failures:
                    raise BenchError(f"{scraper.failures} of {scraper.scrapes} /metrics scrapes failed")
                scrapes.append(scraper.scrapes)
            finally:
                if scraper is not None:
                    scraper.stop()
                receiver.close()
                for s in servers.values():
                    s.stop()
                if not args.keep:
                    shutil.rmtree(rep_dir, ignore_errors=True)
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        print(f"(server logs under {tmp_root})", file=sys.stderr)
        return 1
    finally:
        if not args.keep and tmp_root.exists() and not any(tmp_root.iterdir()):
            tmp_root.rmdir()
    elapsed = time.monotonic() - started
    noise = noise_note(whole_run.share(), max(foreign_shares))
    table, misses = build_table(results)
    extra = f"webhook deliveries received per rep: {delivered}; /metrics scrapes per rep: {scrapes}"
    publish(table, misses, tool_versions(peer=False), noise, title=[
        f"Dockyard feature cost: median of {cfg.reps} rep(s), {elapsed:.0f} s; ratio = metrics+webhook on / off",
        f"Dockyard workers: {cfg.workers or 'default'}; {extra}",
    ], header=(
        f"Run {datetime.datetime.now().isoformat(timespec='seconds')}, feature cost, median of {cfg.reps} "
        f"repetition(s), {cfg.wrk_seconds:g} s load runs, {cfg.connections} connections, {cfg.tag_puts} tag PUTs, "
        f"Dockyard workers {cfg.workers or 'default'}. Ratio = on / off; target >= {TARGET:g}x. {extra}."
    ), out=args.out)
    return 0


if __name__ == "__main__":
    from run import main

    sys.exit(main(["--feature-cost", *sys.argv[1:]]))
