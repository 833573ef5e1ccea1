#!/usr/bin/env python3
"""Supply-chain security cost: Debian image scan time, rescan time, and manifest GET rate with pull gates off / on.

    python benchmarks/security.py [--reps 3] [--seconds 5] [--out results.json] [--workers N] [--keep]

A benchmark, not a test: it prints absolute numbers and ratios, all measured in the same run.

Each repetition:
  - imports the OSV fixtures into a fresh data dir (`python -m dockyard vulndb update --from tests/fixtures/osv
    --data-dir <dir>`, not timed), then starts `dockyard serve` on it (DOCKYARD_AUTH_MODE=none, so /v2 is open;
    DOCKYARD_ADMIN_PASSWORD=<random>, because /api/v1 still needs admin Basic credentials);
  - creates project `bench` (POST /api/v1/projects; auto_scan stays off, the project default) and pushes the Debian
    bookworm fixture (debootstrap minbase + umoci, tests/support/images.py, cached under
    ~/.cache/dockyard-fixtures) to bench/debian:bookworm with skopeo;
  - scan: POST /api/v1/repositories/bench/debian/artifacts/bookworm/scan, then GET …/scan every 0.1 s until
    `scanned` is true and nothing is in progress; wall time from the POST (syft SBOM + OSV match) and the package
    count of the report;
  - rescan: POST /api/v1/system/scans/rescan, GET /api/v1/system/jobs/{id} every 0.1 s until `succeeded`; it
    re-matches the stored package lists, no syft;
  - signs the image (`python -m dockyard generate-key-pair`, `python -m dockyard sign --key …`, bundle layout,
    COSIGN_PASSWORD for the key) and trusts the public key in the project; before signing, a GET with
    require_signature on must be refused (so the gate is known to be live);
  - manifest GET by tag, `wrk -t2 -c32`, three policy states of the same project on the same server and tag, set
    with PATCH /api/v1/projects/bench/security (the order rotates per repetition):
      off:      block_severity null, unscanned allow, require_signature false
      gate:     block_severity critical, unscanned block
      gate+sig: the same plus require_signature true
    After each PATCH the script waits DOCKYARD_SECURITY_CACHE_SECONDS (default 2 s) + 0.5 s, so every worker sees
    the new policy, then one GET must answer 200; any non-2xx during a run fails the benchmark. If the gate refuses
    the image, the script allowlists the findings at or above Critical (and says so).

Figures are medians over the repetitions; ratios are gate/off and gate+sig/off.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from load import MANIFEST_ACCEPT, check_200, run_wrk, skopeo_copy, wait_skopeo  # noqa: E402
from report import fmt, noise_note, render_md, render_text, tool_versions  # noqa: E402
from servers import BenchError, Dockyard, ForeignLoad, log  # noqa: E402

OSV = REPO_ROOT / "tests" / "fixtures" / "osv"
PROJECT, REPO, TAG = "bench", "bench/debian", "bookworm"
KEY_PASSWORD = "bench-key-pw"
CACHE_SECONDS = 2.0  # Dockyard's security_cache_seconds default; the server gets it explicitly below
POLL = 0.1
SCAN_TIMEOUT = 600.0
STATES = {
    "off": {"block_severity": None, "unscanned": "allow", "require_signature": False},
    "gate": {"block_severity": "critical", "unscanned": "block", "require_signature": False},
    "gate+sig": {"block_severity": "critical", "unscanned": "block", "require_signature": True},
}


def debian_image():
    """The Debian bookworm OCI layout of the test fixtures (built by tests/support/images.py if not cached)."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.support.images import debian_oci_layout

    return debian_oci_layout()


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKYARD_", "COSIGN_"))}
    res = subprocess.run([sys.executable, "-m", "dockyard", *args], env={**base, **(env or {})}, cwd=cwd,
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise BenchError(f"dockyard {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return res.stdout + res.stderr


class Api:
    def __init__(self, server: Dockyard, password: str):
        self.server = server
        self.http = httpx.Client(base_url=f"{server.url}/api/v1", auth=("admin", password), timeout=60, trust_env=False)

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kw) -> dict:
        r = self.http.request(method, path, **kw)
        if r.status_code not in expect:
            raise BenchError(f"{method} /api/v1{path} answered {r.status_code}: {r.text[:800]}")
        return r.json() if r.content else {}

    def policy(self, changes: dict) -> None:
        self.call("PATCH", f"/projects/{PROJECT}/security", json=changes)
        time.sleep(CACHE_SECONDS + 0.5)  # other workers keep a cached policy/verdict this long

    def close(self) -> None:
        self.http.close()


def timed_scan(api: Api) -> tuple[float, dict]:
    path = f"/repositories/{REPO}/artifacts/{TAG}/scan"
    t0 = time.perf_counter()
    api.call("POST", path, expect=(202,))
    while True:
        status = api.call("GET", path)
        if status["scanned"] and not status["in_progress"]:
            return time.perf_counter() - t0, status
        if time.perf_counter() - t0 > SCAN_TIMEOUT:
            raise BenchError(f"scan not done in {SCAN_TIMEOUT:g} s: {json.dumps(status)[:800]}")
        time.sleep(POLL)


def timed_rescan(api: Api) -> tuple[float, dict]:
    t0 = time.perf_counter()
    job_id = api.call("POST", "/system/scans/rescan", expect=(202,))["job_id"]
    while True:
        job = api.call("GET", f"/system/jobs/{job_id}")
        if job["state"] == "succeeded":
            return time.perf_counter() - t0, job
        if job["state"] == "failed":
            raise BenchError(f"rescan job {job_id} failed: {job.get('error')}")
        if time.perf_counter() - t0 > SCAN_TIMEOUT:
            raise BenchError(f"rescan job {job_id} not done in {SCAN_TIMEOUT:g} s: {job}")
        time.sleep(POLL)


def get_status(url: str) -> httpx.Response:
    with httpx.Client(timeout=30, trust_env=False) as c:
        return c.get(url, headers={"Accept": MANIFEST_ACCEPT})


def ensure_200(api: Api, url: str, state: str, notes: list[str]) -> None:
    """One GET must be 200 in this policy state; if the vulnerability gate refuses the image, allowlist what
    blocks it (findings at or above Critical) once, and say so."""
    r = get_status(url)
    if r.status_code == 200:
        return
    if state == "off" or r.status_code not in (401, 403):
        raise BenchError(f"{state}: manifest GET answered {r.status_code} before measuring: {r.text[:500]}")
    status = api.call("GET", f"/repositories/{REPO}/artifacts/{TAG}/scan")
    blocking = sorted({f["id"] for img in status["images"] for f in (img["report"] or {}).get("findings", [])
                       if str(f.get("severity", "")).lower() == "critical"})
    if not blocking:
        raise BenchError(f"{state}: manifest GET answered {r.status_code} and no Critical finding explains it: {r.text[:500]}")
    for vuln in blocking:
        api.call("PUT", f"/projects/{PROJECT}/security/allowlist/{vuln}", json={"reason": "benchmark"})
    notes.append(f"allowlisted {', '.join(blocking)} (the gate refused the image: {r.text[:200]})")
    time.sleep(CACHE_SECONDS + 0.5)
    with httpx.Client(timeout=30, trust_env=False) as c:
        check_200(c, "GET", url, MANIFEST_ACCEPT)


def sign_and_trust(api: Api, server: Dockyard, work: Path, url: str) -> None:
    env = {"COSIGN_PASSWORD": KEY_PASSWORD, "DOCKYARD_CREDENTIALS_FILE": str(work / "credentials.json"),
           "DOCKER_CONFIG": str(work / "docker")}
    cli("generate-key-pair", "--output-key-prefix", str(work / "bench"), env=env)
    api.call("POST", f"/projects/{PROJECT}/security/trusted-keys", expect=(201,),
             json={"name": "bench", "public_key": (work / "bench.pub").read_text()})
    # The gate must be live: unsigned, require_signature on -> refused.
    api.policy(STATES["gate+sig"])
    r = get_status(url)
    if r.status_code == 200:
        raise BenchError("require_signature is on and the image is unsigned, but the manifest GET answered 200")
    log(f"  unsigned image with require_signature: GET {r.status_code} (expected a refusal): {r.text[:160]}")
    api.policy(STATES["off"])  # `dockyard sign` reads the manifest first, which the gate would refuse
    cli("sign", "--key", str(work / "bench.key"), f"{server.host}/{REPO}:{TAG}", env=env)


def measure_get(server: Dockyard, url: str, seconds: float, connections: int, threads: int, tmp: Path) -> dict:
    with httpx.Client(timeout=30, trust_env=False) as c:
        check_200(c, "GET", url, MANIFEST_ACCEPT)
    cpu0 = server.cpu_seconds()
    st = run_wrk(url, "GET", MANIFEST_ACCEPT, seconds, connections, threads, tmp)
    cpu = server.cpu_seconds() - cpu0
    return {"rps": st["rps"], "cpu_ms_per_get": cpu * 1000 / st["requests"], "requests": st["requests"]}


def one_rep(rep: int, args: argparse.Namespace, image, rep_dir: Path, res: dict, notes: list[str],
            foreign: ForeignLoad, shares: list[float]) -> None:
    password = secrets.token_urlsafe(18)
    server = Dockyard(
        rep_dir / "dockyard", args.workers,
        {"DOCKYARD_AUTH_MODE": "none", "DOCKYARD_ADMIN_PASSWORD": password,
         "DOCKYARD_SECURITY_CACHE_SECONDS": f"{args.cache_seconds:g}"},
        name="Dockyard",
    )
    server.workdir.mkdir(parents=True)
    cli("admin", "migrate", "--data-dir", str(server.data_dir))  # vulndb update never creates one
    cli("vulndb", "update", "--from", str(OSV), "--data-dir", str(server.data_dir))
    server.start()
    api = Api(server, password)
    try:
        log(f"rep {rep + 1}/{args.reps}: Dockyard on {server.host} (auth none, OSV fixtures imported)")
        api.call("POST", "/projects", expect=(200, 201), json={"name": PROJECT, "public": True})
        t0 = time.perf_counter()
        wait_skopeo([skopeo_copy(image.ref, f"docker://{server.host}/{REPO}:{TAG}")], "push debian")
        log(f"  push debian ({image.info['total_layer_bytes'] / 1e6:.0f} MB layer): {time.perf_counter() - t0:.1f} s")

        foreign.reset()
        dt, status = timed_scan(api)
        shares.append(foreign.share())
        reports = [img["report"] for img in status["images"]]
        pkgs = sum(r["package_count"] for r in reports)
        res.setdefault("scan_s", []).append(dt)
        res.setdefault("packages", []).append(pkgs)
        res.setdefault("findings", []).append(sum(status["summary"].values()))
        log(f"  scan: {dt:.2f} s, {pkgs} packages, findings {status['summary']}  (other load {shares[-1]:.0%})")

        foreign.reset()
        dt, job = timed_rescan(api)
        shares.append(foreign.share())
        res.setdefault("rescan_s", []).append(dt)
        log(f"  rescan job {job['id']}: {dt:.2f} s, result {job.get('result')}  (other load {shares[-1]:.0%})")

        url = f"{server.url}/v2/{REPO}/manifests/{TAG}"
        sign_and_trust(api, server, rep_dir, url)
        names = list(STATES)
        k = rep % len(names)
        for state in names[k:] + names[:k]:
            api.policy(STATES[state])
            ensure_200(api, url, state, notes)
            foreign.reset()
            got = measure_get(server, url, args.seconds, args.connections, args.threads, rep_dir)
            shares.append(foreign.share())
            res.setdefault(f"get_rps[{state}]", []).append(got["rps"])
            res.setdefault(f"cpu_ms_per_get[{state}]", []).append(got["cpu_ms_per_get"])
            log(f"  GET {state:<8} {fmt(got['rps'])} req/s, {got['cpu_ms_per_get']:.4f} CPU ms/GET, "
                f"{got['requests']} requests, all 2xx  (other load {shares[-1]:.0%})")
    finally:
        api.close()
        server.stop()
        log_text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        if "Traceback" in log_text:
            notes.append(f"rep {rep + 1}: the server logged a traceback (see {server.log_path})")


def build_table(res: dict[str, list[float]]) -> list[list[str]]:
    def med(key):
        return statistics.median(res[key])

    def samples(key):
        return " ".join(str(v) if isinstance(v, int) else fmt(v) for v in res[key])

    rows = [["metric", "value (median)", "unit", "ratio vs off", "samples"]]
    rows.append(["Debian scan (POST scan -> scanned)", f"{med('scan_s'):.2f}", "s", "-", samples("scan_s")])
    rows.append(["  packages in the report", f"{med('packages'):.0f}", "packages", "-", samples("packages")])
    rows.append(["  findings (fixture OSV DB)", f"{med('findings'):.0f}", "findings", "-", samples("findings")])
    rows.append(["rescan job (re-match, no syft)", f"{med('rescan_s'):.2f}", "s", "-", samples("rescan_s")])
    off = med("get_rps[off]")
    for state, label in (("off", "manifest GET, no policy"), ("gate", "manifest GET, block critical + unscanned block"),
                         ("gate+sig", "manifest GET, gate + require_signature")):
        v = med(f"get_rps[{state}]")
        rows.append([f"{label} (wrk)", fmt(v), "req/s", f"{v / off:.2f}x", samples(f"get_rps[{state}]")])
    off_cpu = med("cpu_ms_per_get[off]")
    for state in STATES:
        v = med(f"cpu_ms_per_get[{state}]")
        rows.append([f"server CPU per GET, {state}", f"{v:.4f}", "CPU ms/req", f"{v / off_cpu:.2f}x",
                     samples(f"cpu_ms_per_get[{state}]")])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions (fresh server each), default 3")
    ap.add_argument("--seconds", type=float, default=5, help="length of each wrk run, default 5")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections, default 32")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads, default 2")
    ap.add_argument("--workers", type=int, help="Dockyard worker processes (default: Dockyard's own default)")
    ap.add_argument("--out", type=Path, help="also write results (samples, medians, table) as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (server logs) after the run")
    ap.add_argument("--cache-seconds", type=float, default=CACHE_SECONDS,
                    help="the server's security_cache_seconds; 0 makes every GET decide its verdict cold "
                         "(policy, scan report and signature verification read afresh), default 2")
    args = ap.parse_args(argv)
    if not 1 <= args.reps <= 20:
        ap.error("--reps must be 1..20")
    for tool in ("skopeo", "wrk", "syft"):
        if not shutil.which(tool):
            print(f"missing {tool} on PATH", file=sys.stderr)
            return 2

    image = debian_image()
    log(f"Debian image {image.ref} ({image.info.get('packages')} dpkg packages), {args.reps} rep(s), "
        f"{args.seconds:g} s wrk runs")
    res: dict[str, list[float]] = {}
    notes: list[str] = []
    shares: list[float] = []
    whole_run, foreign = ForeignLoad(), ForeignLoad()
    started = time.monotonic()
    tmp_root = Path(tempfile.mkdtemp(prefix="dockyard-secbench-"))
    try:
        for rep in range(args.reps):
            rep_dir = tmp_root / f"rep{rep}"
            rep_dir.mkdir()
            try:
                one_rep(rep, args, image, rep_dir, res, notes, foreign, shares)
            finally:
                if not args.keep:
                    shutil.rmtree(rep_dir, ignore_errors=True)
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        print(f"(server logs under {tmp_root}; rerun with --keep to keep them)", file=sys.stderr)
        return 1
    finally:
        if not args.keep and tmp_root.exists() and not any(tmp_root.iterdir()):
            tmp_root.rmdir()
    elapsed = time.monotonic() - started
    noise = noise_note(whole_run.share(), max(shares))

    table = build_table(res)
    versions = tool_versions(peer=False)
    print()
    print(f"Dockyard supply-chain security: median of {args.reps} rep(s), {elapsed:.0f} s; "
          f"GET ratio = with gate / no policy. Dockyard workers: {args.workers or 'default'}")
    print(render_text(table))
    print(noise)
    for note in dict.fromkeys(notes):
        print(f"NOTE: {note}")
    print("\n" + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if args.out:
        medians = {k: statistics.median(v) for k, v in res.items()}
        off = medians["get_rps[off]"]
        args.out.write_text(json.dumps({
            "run": datetime.datetime.now().isoformat(timespec="seconds"),
            "reps": args.reps, "seconds": args.seconds, "connections": args.connections,
            "workers": args.workers, "elapsed_s": elapsed, "samples": res, "medians": medians,
            "ratios": {"gate/off": medians["get_rps[gate]"] / off, "gate+sig/off": medians["get_rps[gate+sig]"] / off},
            "noise": noise, "notes": list(dict.fromkeys(notes)), "versions": versions,
            "table_md": render_md(table),
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
