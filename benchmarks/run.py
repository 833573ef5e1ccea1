#!/usr/bin/env python3
"""Dockyard vs CNCF Distribution, side by side in one run. A benchmark, not a test.

Usage (from the repository root, with dockyard installed):

    python benchmarks/run.py                  # full size: ~380 MB image, 5 s wrk runs, 3 repetitions
    python benchmarks/run.py --quick          # smoke run: small images, short runs, 1 repetition
    python benchmarks/run.py --out docs/bench-table.md   # also write the table as markdown
    python benchmarks/run.py --reps 5 --workers 4        # more repetitions / Dockyard workers
    python benchmarks/run.py --auth-cost      # Dockyard with token / Basic auth vs auth off (see auth_cost.py)
    python benchmarks/run.py --feature-cost   # metrics + a webhook on vs off (see feature_cost.py)

Needs on PATH: skopeo, wrk, hey, docker-registry (Debian's Distribution 2.8:
`apt-get install -y skopeo wrk hey docker-registry`). Everything listens on 127.0.0.1 only.

How it works: each repetition starts a fresh Dockyard (`python -m dockyard serve`, default workers, new temp data
dir, DOCKYARD_AUTH_MODE=none because Distribution runs without auth too) and a fresh Distribution (generated config:
filesystem storage in a temp dir, delete enabled, `cache: blobdescriptor: inmemory`, log level warn, access log off),
both on new ports so no client-side blob cache or server-side dedup can help. Within a repetition every scenario
runs against both registries back to back, and which registry goes first alternates per scenario and per
repetition. Each number reported is the median over the repetitions. Both registries get the same client and the
same connection count.

Scenarios:
  1. push / pull of a ~380 MB five-layer image with skopeo (MB/s, MB = 10^6 bytes)
  2. 4 concurrent skopeo pushes of 4 different ~50 MB images to 4 repos (aggregate MB/s)
  3. manifest GET and HEAD by tag, wrk, 32 connections (req/s; any non-2xx fails the run)
  4. 1 KiB blob GET, wrk, 32 connections (req/s)
  5. 300 sequential manifest PUTs to distinct tags over one connection (ops/s)
  6. GET tags/list of a 500-tag repository, 200 sequential requests (req/s)
  7. server CPU (utime+stime of the server process tree from /proc) per MB pushed (scenario 1 push) and per
     manifest GET (scenario 3 GET run); lower is better.

Modules: servers.py (servers, CPU accounting), load.py (skopeo/wrk/hey/httpx helpers), scenarios.py (the
scenarios above), report.py (tables, versions), auth_cost.py (--auth-cost), feature_cost.py (--feature-cost); this file is the command line and the
comparison table. Images are built once (deterministic random tar layers, see images.py) and cached under
~/.cache/dockyard-bench.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import build_layout  # noqa: E402
from report import fmt, noise_note, publish, tool_versions  # noqa: E402
from scenarios import METRICS, SCENARIOS, Config, Ctx  # noqa: E402
from servers import BenchError, Distribution, Dockyard, ForeignLoad, Registry, log, measured  # noqa: E402

# The comparison runs Dockyard without access control: Distribution runs without auth too.
DOCKYARD_NO_AUTH = {"DOCKYARD_AUTH_MODE": "none"}


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


def compare(args: argparse.Namespace, cfg: Config) -> int:
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
                Dockyard(rep_dir / "dockyard", cfg.workers, DOCKYARD_NO_AUTH),
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
                        measured(title, reg.name, lambda: fn(reg, ctx), foreign, foreign_shares, results[reg.name])
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
    noise = noise_note(whole_run.share(), max(foreign_shares))

    table, misses = build_table(results)
    publish(table, misses, tool_versions(), noise, title=[
        f"Dockyard vs Distribution: median of {cfg.reps} rep(s), {elapsed:.0f} s; ratio = Dockyard / Distribution",
        f"(throughput: higher is better; CPU rows: lower is better). Dockyard workers: {cfg.workers or 'default'}",
    ], header=(
        f"Run {datetime.datetime.now().isoformat(timespec='seconds')}, {'quick' if args.quick else 'full'} size, "
        f"median of {cfg.reps} repetition(s), {cfg.connections} wrk connections, Dockyard workers "
        f"{cfg.workers or 'default'}. Ratio = Dockyard / Distribution; CPU rows: lower is better."
    ), out=args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small images, short runs, 1 repetition (smoke run)")
    ap.add_argument("--reps", type=int, help="repetitions per scenario (default 3, --quick 1)")
    ap.add_argument("--workers", type=int, help="Dockyard worker processes (default: Dockyard's own default)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (both registries), default 32")
    ap.add_argument("--out", type=Path, help="also write the table as markdown to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (server logs) after the run")
    ap.add_argument(
        "--auth-cost",
        action="store_true",
        help="instead of the comparison: Dockyard with bearer-token and Basic auth vs Dockyard with auth off",
    )
    ap.add_argument(
        "--feature-cost",
        action="store_true",
        help="instead of the comparison: Dockyard with metrics and one webhook on vs the same Dockyard with them off",
    )
    args = ap.parse_args(argv)

    tools = ("skopeo", "wrk", "hey") if args.auth_cost or args.feature_cost else ("skopeo", "wrk", "hey", "docker-registry")
    for tool in tools:
        if not shutil.which(tool):
            print(f"missing {tool}: apt-get install -y {tool}", file=sys.stderr)
            return 2
    if args.quick:
        cfg = Config(5, 4_000_000, 2, 2_000_000, 2, args.connections, 2, 60, 500, 50, args.reps or 1, args.workers)
    else:
        cfg = Config(5, 76_000_000, 2, 25_000_000, 5, args.connections, 2, 300, 500, 200, args.reps or 3, args.workers)
    if not 1 <= cfg.reps <= 20:
        ap.error("--reps must be 1..20")
    if args.auth_cost:
        from auth_cost import auth_cost

        return auth_cost(args, cfg)
    if args.feature_cost:
        from feature_cost import feature_cost

        return feature_cost(args, cfg)
    return compare(args, cfg)


if __name__ == "__main__":
    sys.exit(main())
