#!/usr/bin/env python3
"""Dockyard vs CNCF Distribution, side by side in one run. A benchmark, not a test.

Usage (from the repository root, with dockyard installed):

    python benchmarks/run.py                  # full size: ~380 MB image, 5 s wrk runs, 3 repetitions
    python benchmarks/run.py --quick          # smoke run: small images, short runs, 1 repetition
    python benchmarks/run.py --out docs/bench-table.md   # also write the table as markdown
    python benchmarks/run.py --reps 5 --workers 4        # more repetitions / Dockyard workers

Needs on PATH: skopeo, wrk, docker-registry (Debian's Distribution 2.8:
`apt-get install -y skopeo wrk docker-registry`). Everything listens on 127.0.0.1 only.

How it works: each repetition starts a fresh Dockyard (`python -m dockyard serve`, default workers, new temp data
dir) and a fresh Distribution (generated config: filesystem storage in a temp dir, delete enabled,
`cache: blobdescriptor: inmemory`, log level warn, access log off), both on new ports so no client-side blob cache
or server-side dedup can help. Within a repetition every scenario runs against both registries back to back, and
which registry goes first alternates per scenario and per repetition. Each number reported is the median over the
repetitions. Both registries get the same client and the same connection count.

Scenarios:
  1. push / pull of a ~380 MB five-layer image with skopeo (MB/s, MB = 10^6 bytes)
  2. 4 concurrent skopeo pushes of 4 different ~50 MB images to 4 repos (aggregate MB/s)
  3. manifest GET and HEAD by tag, wrk, 32 connections (req/s; any non-2xx fails the run)
  4. 1 KiB blob GET, wrk, 32 connections (req/s)
  5. 300 sequential manifest PUTs to distinct tags over one connection (ops/s)
  6. GET tags/list of a 500-tag repository, 200 sequential requests (req/s)
  7. server CPU (utime+stime of the server process tree from /proc) per MB pushed (scenario 1 push) and per
     manifest GET (scenario 3 GET run); lower is better.

Images are built once (deterministic random tar layers, see benchmarks/images.py) and cached under
~/.cache/dockyard-bench.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import Layout, build_layout  # noqa: E402

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTUP_TIMEOUT = 60.0
SKOPEO_TIMEOUT = 900.0


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# CPU accounting from /proc


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime+cutime+cstime in ticks) of one process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is state (field 3); ppid is field 4; utime..cstime are fields 14..17.
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used by `root` and all its live descendants (granian workers included)."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs), from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class ForeignLoad:
    """How much CPU other processes (not this script, its servers and clients) used: noise in the numbers."""

    def __init__(self):
        self.ncpu = os.cpu_count() or 1
        self.reset()

    def reset(self):
        self.t0, self.busy0, self.own0 = time.monotonic(), machine_busy_seconds(), tree_cpu_seconds(os.getpid())

    def share(self) -> float:
        """Fraction of the machine's CPU capacity used by other processes since reset()."""
        wall = time.monotonic() - self.t0
        foreign = (machine_busy_seconds() - self.busy0) - (tree_cpu_seconds(os.getpid()) - self.own0)
        return max(0.0, foreign) / (wall * self.ncpu) if wall > 0 else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Servers


class Registry:
    name = "?"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "server.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self) -> None:
        cmd, env = self.command()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.workdir
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited at start-up:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise BenchError(f"{self.name} did not answer /v2/ within {STARTUP_TIMEOUT}s")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own session: the server and its workers
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        self._log.close()
        self.proc = None


class Dockyard(Registry):
    name = "Dockyard"

    def __init__(self, workdir: Path, workers: int | None):
        super().__init__(workdir)
        self.workers = workers

    def command(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
        cmd = [sys.executable, "-m", "dockyard", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.workdir / "data")]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        return cmd, env


class Distribution(Registry):
    name = "Distribution"

    def command(self):
        root = self.workdir / "data"
        root.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(
            f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{self.port}
  headers:
    X-Content-Type-Options: [nosniff]
"""
        )
        return [shutil.which("docker-registry") or "/usr/bin/docker-registry", "serve", str(config)], dict(os.environ)


# ---------------------------------------------------------------------------------------------------------------
# Clients


def skopeo_copy(src: str, dst: str) -> subprocess.Popen:
    # --preserve-digests: push and pull the uncompressed tar layers byte for byte. Without it skopeo gzips every
    # layer on its way to a registry, and the benchmark would measure the client's gzip, not the registry.
    cmd = ["skopeo", "copy", "--quiet", "--retry-times", "0", "--preserve-digests"]
    if src.startswith("docker://"):
        cmd.append("--src-tls-verify=false")
    if dst.startswith("docker://"):
        cmd.append("--dest-tls-verify=false")
    if dst.startswith("oci:"):
        # Keep the pulled layers as they are: by default skopeo would gzip them, and the client's gzip would be
        # what the pull measures.
        cmd.append("--dest-oci-accept-uncompressed-layers")
    return subprocess.Popen(cmd + [src, dst], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_skopeo(procs: list[subprocess.Popen], what: str, timeout: float = SKOPEO_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise BenchError(f"{what}: skopeo timed out after {timeout}s")
        if p.returncode != 0:
            raise BenchError(f"{what}: skopeo failed ({p.returncode}): {out.decode(errors='replace')[-2000:]}")


WRK_LUA = """
wrk.method = "{method}"
wrk.headers["Accept"] = "{accept}"
done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"status\\":%d,\\"connect\\":%d,\\"read\\":%d," ..
    "\\"write\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d}}\\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(url: str, method: str, accept: str, seconds: float, connections: int, threads: int, tmp: Path) -> dict:
    script = tmp / f"wrk-{method.lower()}.lua"
    script.write_text(WRK_LUA.format(method=method, accept=accept))
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "5s"]
    cmd += ["-s", str(script), url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^WRKJSON (\{.*\})$", res.stdout, re.M)
    if res.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({res.returncode}): {res.stdout}\n{res.stderr}")
    stats = json.loads(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", res.stdout)
    bad = stats["status"] + (int(non2xx.group(1)) if non2xx else 0)
    if bad:
        raise BenchError(f"wrk {method} {url}: {bad} non-2xx responses; refusing to count them as throughput")
    sock = stats["connect"] + stats["read"] + stats["write"] + stats["timeout"]
    if sock:
        log(f"  warning: wrk {method} {url}: {sock} socket errors (not counted as requests): {stats}")
    if stats["requests"] == 0:
        raise BenchError(f"wrk {method} {url}: no request completed:\n{res.stdout}")
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def run_hey(url: str, method: str, accept: str, seconds: float, connections: int) -> dict:
    """HEAD load with `hey`: wrk cannot do HEAD (its parser waits for a body the HEAD response never sends)."""
    cmd = ["hey", "-z", f"{seconds:g}s", "-c", str(connections), "-m", method, "-t", "5", "-disable-redirects"]
    cmd += ["-H", f"Accept: {accept}", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", res.stdout)}
    rps = re.search(r"Requests/sec:\s*([\d.]+)", res.stdout)
    if res.returncode != 0 or not rps or not statuses:
        raise BenchError(f"hey failed ({res.returncode}): {res.stdout[-3000:]}\n{res.stderr[-2000:]}")
    bad = {c: n for c, n in statuses.items() if not 200 <= c < 300}
    if bad:
        raise BenchError(f"hey {method} {url}: non-2xx responses {bad}; refusing to count them as throughput")
    if "Error distribution" in res.stdout:
        log(f"  warning: hey {method} {url}: errors (not counted): {res.stdout.split('Error distribution')[1][:500]}")
    return {"requests": sum(statuses.values()), "rps": float(rps.group(1))}


def check_200(client: httpx.Client, method: str, url: str, accept: str) -> httpx.Response:
    r = client.request(method, url, headers={"Accept": accept})
    if r.status_code != 200:
        raise BenchError(f"{method} {url} answered {r.status_code} before measuring: {r.text[:500]}")
    return r


def upload_blob(client: httpx.Client, base: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = client.post(f"{base}/v2/{repo}/blobs/uploads/")
    if r.status_code != 202:
        raise BenchError(f"POST upload to {repo}: {r.status_code} {r.text[:300]}")
    loc = r.headers["Location"]
    loc = loc if loc.startswith("http") else base + loc
    loc += ("&" if "?" in loc else "?") + f"digest={digest}"  # keep Distribution's _state query parameter
    r = client.put(loc, content=data, headers={"Content-Type": "application/octet-stream"})
    if r.status_code != 201:
        raise BenchError(f"PUT upload to {repo}: {r.status_code} {r.text[:300]}")
    return digest


def small_manifest(client: httpx.Client, base: str, repo: str) -> bytes:
    """Upload a config + one layer to `repo`; return the bytes of an OCI manifest referencing them."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    layer = os.urandom(1024)
    cd = upload_blob(client, base, repo, config.encode())
    ld = upload_blob(client, base, repo, layer)
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}],
        }
    ).encode()


def put_manifest(client: httpx.Client, base: str, repo: str, tag: str, body: bytes) -> None:
    r = client.put(
        f"{base}/v2/{repo}/manifests/{tag}",
        content=body,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    if r.status_code != 201:
        raise BenchError(f"PUT manifest {repo}:{tag}: {r.status_code} {r.text[:300]}")


# ---------------------------------------------------------------------------------------------------------------
# Scenarios: each takes (registry, ctx) and returns {metric: value}


@dataclass
class Config:
    big_layers: int
    big_layer_bytes: int
    conc_layers: int
    conc_layer_bytes: int
    wrk_seconds: float
    connections: int
    wrk_threads: int
    tag_puts: int
    list_tags: int
    list_gets: int
    reps: int
    workers: int | None


@dataclass
class Ctx:
    cfg: Config
    big: Layout
    conc: list[Layout]
    tmp: Path
    state: dict = field(default_factory=dict)  # per (registry name) scratch


def sc_push_big(reg: Registry, ctx: Ctx) -> dict:
    cpu0, t0 = reg.cpu_seconds(), time.perf_counter()
    wait_skopeo([skopeo_copy(ctx.big.oci_ref, f"docker://{reg.host}/bench/big:1")], f"{reg.name} push")
    dt, cpu = time.perf_counter() - t0, reg.cpu_seconds() - cpu0
    mb = ctx.big.total_bytes / 1e6
    return {"push_mbps": mb / dt, "cpu_s_per_mb": cpu / mb}


def sc_pull_big(reg: Registry, ctx: Ctx) -> dict:
    dest = ctx.tmp / f"pull-{reg.name}"
    shutil.rmtree(dest, ignore_errors=True)
    t0 = time.perf_counter()
    wait_skopeo([skopeo_copy(f"docker://{reg.host}/bench/big:1", f"oci:{dest}:big")], f"{reg.name} pull")
    dt = time.perf_counter() - t0
    missing = [d for d in ctx.big.layer_digests if not (dest / "blobs" / "sha256" / d.split(":")[1]).exists()]
    pulled = json.loads((dest / "index.json").read_text())["manifests"][0]["digest"]
    shutil.rmtree(dest, ignore_errors=True)
    if missing or pulled != ctx.big.manifest_digest:
        raise BenchError(
            f"{reg.name} pull: not the pushed image (manifest {pulled}, expected {ctx.big.manifest_digest}; "
            f"missing layers {missing})"
        )
    return {"pull_mbps": ctx.big.total_bytes / 1e6 / dt}


def sc_push_concurrent(reg: Registry, ctx: Ctx) -> dict:
    t0 = time.perf_counter()
    procs = [skopeo_copy(img.oci_ref, f"docker://{reg.host}/bench/conc{i}:1") for i, img in enumerate(ctx.conc)]
    wait_skopeo(procs, f"{reg.name} concurrent push")
    dt = time.perf_counter() - t0
    return {"push4_mbps": sum(img.total_bytes for img in ctx.conc) / 1e6 / dt}


def sc_manifest_get(reg: Registry, ctx: Ctx) -> dict:
    url = f"{reg.url}/v2/bench/big/manifests/1"
    with httpx.Client(timeout=30) as c:
        check_200(c, "GET", url, MANIFEST_ACCEPT)
    cpu0 = reg.cpu_seconds()
    st = run_wrk(url, "GET", MANIFEST_ACCEPT, ctx.cfg.wrk_seconds, ctx.cfg.connections, ctx.cfg.wrk_threads, ctx.tmp)
    cpu = reg.cpu_seconds() - cpu0
    return {"manifest_get_rps": st["rps"], "cpu_ms_per_get": cpu * 1000 / st["requests"]}


def sc_manifest_head(reg: Registry, ctx: Ctx) -> dict:
    url = f"{reg.url}/v2/bench/big/manifests/1"
    with httpx.Client(timeout=30) as c:
        check_200(c, "HEAD", url, MANIFEST_ACCEPT)
    st = run_hey(url, "HEAD", MANIFEST_ACCEPT, ctx.cfg.wrk_seconds, ctx.cfg.connections)
    return {"manifest_head_rps": st["rps"]}


def sc_small_blob(reg: Registry, ctx: Ctx) -> dict:
    with httpx.Client(timeout=30) as c:
        data = os.urandom(1024)
        digest = upload_blob(c, reg.url, "bench/small", data)
        url = f"{reg.url}/v2/bench/small/blobs/{digest}"
        r = check_200(c, "GET", url, "*/*")
        if r.content != data:
            raise BenchError(f"{reg.name}: small blob GET returned different bytes")
    st = run_wrk(url, "GET", "*/*", ctx.cfg.wrk_seconds, ctx.cfg.connections, ctx.cfg.wrk_threads, ctx.tmp)
    return {"blob1k_get_rps": st["rps"]}


def sc_tag_puts(reg: Registry, ctx: Ctx) -> dict:
    with httpx.Client(timeout=30) as c:
        body = small_manifest(c, reg.url, "bench/tags")
        put_manifest(c, reg.url, "bench/tags", "warmup", body)
        t0 = time.perf_counter()
        for i in range(ctx.cfg.tag_puts):
            put_manifest(c, reg.url, "bench/tags", f"t{i:05d}", body)
        dt = time.perf_counter() - t0
    return {"tag_put_ops": ctx.cfg.tag_puts / dt}


def sc_tags_list(reg: Registry, ctx: Ctx) -> dict:
    n = ctx.cfg.list_tags
    with httpx.Client(timeout=30) as c:
        body = small_manifest(c, reg.url, "bench/list")
        for i in range(n):
            put_manifest(c, reg.url, "bench/list", f"v{i:05d}", body)
        url = f"{reg.url}/v2/bench/list/tags/list"
        got = check_200(c, "GET", url, "application/json").json().get("tags") or []
        if len(got) != n:
            raise BenchError(f"{reg.name}: tags/list returned {len(got)} tags, expected {n}")
        t0 = time.perf_counter()
        for _ in range(ctx.cfg.list_gets):
            r = c.get(url)
            if r.status_code != 200:
                raise BenchError(f"{reg.name}: tags/list answered {r.status_code}")
        dt = time.perf_counter() - t0
    return {"tags_list_rps": ctx.cfg.list_gets / dt}


SCENARIOS = [
    ("push ~380 MB image", sc_push_big),
    ("pull ~380 MB image", sc_pull_big),
    ("4 concurrent pushes", sc_push_concurrent),
    ("manifest GET", sc_manifest_get),
    ("manifest HEAD", sc_manifest_head),
    ("1 KiB blob GET", sc_small_blob),
    ("sequential tag PUTs", sc_tag_puts),
    ("tags/list (500 tags)", sc_tags_list),
]

# metric key -> (label, unit, higher_is_better, target ratio or None)
METRICS = [
    ("push_mbps", "push ~380 MB image (skopeo)", "MB/s", True, 1.0),
    ("pull_mbps", "pull ~380 MB image (skopeo)", "MB/s", True, 1.0),
    ("push4_mbps", "4 concurrent pushes, 4x~50 MB (aggregate)", "MB/s", True, 1.0),
    ("manifest_get_rps", "manifest GET by tag (wrk, 32 conns)", "req/s", True, 3.0),
    ("manifest_head_rps", "manifest HEAD by tag (hey, 32 conns)", "req/s", True, 3.0),
    ("blob1k_get_rps", "1 KiB blob GET (wrk, 32 conns)", "req/s", True, 3.0),
    ("tag_put_ops", "sequential manifest PUTs to new tags (1 conn)", "ops/s", True, None),
    ("tags_list_rps", "GET tags/list, 500 tags (1 conn)", "req/s", True, None),
    ("cpu_s_per_mb", "server CPU per MB pushed (lower is better)", "CPU s/MB", False, 1.0),
    ("cpu_ms_per_get", "server CPU per manifest GET (lower is better)", "CPU ms/req", False, None),
]


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.4f}"


def build_table(results: dict[str, dict[str, list[float]]]) -> tuple[list[list[str]], list[str]]:
    header = ["metric", "unit", "Dockyard", "Distribution", "ratio D/Dist", "target", "verdict", "samples D | Dist"]
    rows, misses = [], []
    for key, label, unit, higher, target in METRICS:
        d, r = results["Dockyard"].get(key, []), results["Distribution"].get(key, [])
        if not d or not r:
            continue
        dm, rm = statistics.median(d), statistics.median(r)
        ratio = dm / rm if rm else float("inf")
        if target is None:
            tgt, verdict = "-", "-"
        elif higher:
            tgt, verdict = f">= {target:g}x", "PASS" if ratio >= target else "MISS"
        else:
            tgt, verdict = f"<= {target:g}x", "PASS" if ratio <= target else "MISS"
        if verdict == "MISS":
            misses.append(f"{label}: {fmt(dm)} vs {fmt(rm)} {unit} = {ratio:.2f}x (target {tgt})")
        samples = " ".join(fmt(x) for x in d) + " | " + " ".join(fmt(x) for x in r)
        rows.append([label, unit, fmt(dm), fmt(rm), f"{ratio:.2f}x", tgt, verdict, samples])
    return [header] + rows, misses


def render_text(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for n, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_md(table: list[list[str]]) -> str:
    out = ["| " + " | ".join(table[0]) + " |", "|" + "|".join("---" for _ in table[0]) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table[1:]]
    return "\n".join(out)


def tool_versions() -> dict[str, str]:
    def first_line(cmd):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (res.stdout or res.stderr).strip().splitlines()[0]
        except Exception as exc:  # noqa: BLE001 - informational only
            return f"unknown ({exc})"

    import granian

    from dockyard import __version__

    return {
        "dockyard": __version__,
        "granian": granian.__version__,
        "python": platform.python_version(),
        "docker-registry": first_line(["docker-registry", "--version"]),
        "skopeo": first_line(["skopeo", "--version"]),
        "wrk": first_line(["wrk", "-v"]),
        "hey": first_line(["dpkg-query", "-W", "-f", "${Version}", "hey"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small images, short runs, 1 repetition (smoke run)")
    ap.add_argument("--reps", type=int, help="repetitions per scenario (default 3, --quick 1)")
    ap.add_argument("--workers", type=int, help="Dockyard worker processes (default: Dockyard's own default)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (both registries), default 32")
    ap.add_argument("--out", type=Path, help="also write the table as markdown to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (server logs) after the run")
    args = ap.parse_args(argv)

    for tool in ("skopeo", "wrk", "hey", "docker-registry"):
        if not shutil.which(tool):
            print(f"missing {tool}: apt-get install -y {tool}", file=sys.stderr)
            return 2
    if args.quick:
        cfg = Config(5, 4_000_000, 2, 2_000_000, 2, args.connections, 2, 60, 500, 50, args.reps or 1, args.workers)
    else:
        cfg = Config(5, 76_000_000, 2, 25_000_000, 5, args.connections, 2, 300, 500, 200, args.reps or 3, args.workers)
    if not 1 <= cfg.reps <= 20:
        ap.error("--reps must be 1..20")

    log("building / loading cached images")
    big = build_layout("big", cfg.big_layers, cfg.big_layer_bytes, ref="big")
    conc = [build_layout(f"conc{i}", cfg.conc_layers, cfg.conc_layer_bytes, ref="latest") for i in range(4)]
    log(f"big image {big.total_bytes / 1e6:.1f} MB; concurrent images {conc[0].total_bytes / 1e6:.1f} MB each")

    results: dict[str, dict[str, list[float]]] = {"Dockyard": {}, "Distribution": {}}
    started = time.monotonic()
    whole_run, foreign = ForeignLoad(), ForeignLoad()
    foreign_shares: list[float] = []
    tmp_root = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    try:
        for rep in range(cfg.reps):
            rep_dir = tmp_root / f"rep{rep}"
            regs: list[Registry] = [
                Dockyard(rep_dir / "dockyard", cfg.workers),
                Distribution(rep_dir / "distribution"),
            ]
            for reg in regs:
                reg.workdir.mkdir(parents=True)
            ctx = Ctx(cfg, big, conc, rep_dir)
            try:
                for reg in regs:
                    reg.start()
                log(f"rep {rep + 1}/{cfg.reps}: Dockyard on {regs[0].host}, Distribution on {regs[1].host}")
                for si, (title, fn) in enumerate(SCENARIOS):
                    order = regs if (rep + si) % 2 == 0 else regs[::-1]
                    for reg in order:
                        foreign.reset()
                        got = fn(reg, ctx)
                        share = foreign.share()
                        foreign_shares.append(share)
                        for k, v in got.items():
                            results[reg.name].setdefault(k, []).append(v)
                        log(
                            f"  {title:<22} {reg.name:<12} "
                            + "  ".join(f"{k}={fmt(v)}" for k, v in got.items())
                            + f"  (other load {share:.0%})"
                        )
            finally:
                for reg in regs:
                    reg.stop()
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
    other = whole_run.share()
    noise = (
        f"Other processes used {other:.0%} of the machine's CPU during the run "
        f"(worst scenario {max(foreign_shares):.0%})"
        + ("; numbers are noisy." if other > 0.05 else ".")
    )

    table, misses = build_table(results)
    versions = tool_versions()
    print()
    print(f"Dockyard vs Distribution: median of {cfg.reps} rep(s), {elapsed:.0f} s; ratio = Dockyard / Distribution")
    print(f"(throughput: higher is better; CPU rows: lower is better). Dockyard workers: {cfg.workers or 'default'}")
    print(render_text(table))
    print(noise)
    if misses:
        print("\nMISSED TARGETS:")
        for m in misses:
            print(f"  - {m}")
    print("\n" + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if args.out:
        header = (
            f"Run {datetime.datetime.now().isoformat(timespec='seconds')}, {'quick' if args.quick else 'full'} size, "
            f"median of {cfg.reps} repetition(s), {cfg.connections} wrk connections, Dockyard workers "
            f"{cfg.workers or 'default'}. Ratio = Dockyard / Distribution; CPU rows: lower is better. {noise}\n\n"
        )
        args.out.write_text(header + render_md(table) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in versions.items()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
