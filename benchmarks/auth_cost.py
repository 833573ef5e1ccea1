#!/usr/bin/env python3
"""Auth cost: Dockyard with bearer-token auth (and Basic auth) vs the same Dockyard with auth off.

    python benchmarks/run.py --auth-cost [--quick] [--reps N] [--workers N] [--out FILE]
    python benchmarks/auth_cost.py [same options]

Target (from the issue): the core manifest GET/HEAD benchmark, run with bearer-token auth on, reaches >= 0.8x the
rate of the same server with auth off.

Each repetition starts two fresh Dockyards on 127.0.0.1, same code, same workers, new temp data dirs:
  - "auth off":   DOCKYARD_AUTH_MODE=none
  - "token":      DOCKYARD_AUTH_MODE=token, DOCKYARD_ADMIN_PASSWORD=<random> (the admin user is created with it
                  on first start), DOCKYARD_TOKEN_TTL_SECONDS=3600 (the default 300 s could expire mid-run)
On the token server the script creates project `bench` (POST /api/v1/projects with Basic admin credentials; if
the management API is not there, a row in the server's SQLite DB), pushes a small image to bench/app:1 with skopeo
and the admin credentials, checks that an anonymous manifest GET is refused (401), and fetches a pull token
(GET /token?service=dockyard&scope=repository:bench/app:pull, Basic admin credentials). The auth-off server gets the
same image without credentials.

Load: manifest GET by tag (wrk) and HEAD by tag (hey), 32 connections, with three clients taking turns (the order
rotates per scenario and per repetition):
  - auth off: no Authorization header, auth-off server
  - token:    `Authorization: Bearer <token>`, token server
  - basic:    `Authorization: Basic admin:<pw>` on /v2 directly, token server (Basic is accepted on /v2 in token
              mode; verified credentials are cached by the server, DOCKYARD_CREDENTIAL_CACHE_SECONDS default 60 s)
Every client must get a 200 before measuring, and any non-2xx during a run fails the benchmark. Figures are medians
over the repetitions; ratios are token/off and basic/off.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import Layout, build_layout  # noqa: E402
from load import MANIFEST_ACCEPT, check_200, run_hey, run_wrk, skopeo_copy, wait_skopeo  # noqa: E402
from report import fmt, noise_note, publish, tool_versions  # noqa: E402
from scenarios import Config  # noqa: E402
from servers import BenchError, Dockyard, ForeignLoad, log, measured  # noqa: E402

TARGET = 0.8
PROJECT, REPO, TAG = "bench", "bench/app", "1"
TOKEN_TTL = "3600"
CLIENTS = ("auth off", "token", "basic")


class Client:
    """One column: a server and the headers every request of this client carries."""

    def __init__(self, name: str, server: Dockyard, headers: dict[str, str]):
        self.name, self.server, self.headers = name, server, headers

    @property
    def manifest_url(self) -> str:
        return f"{self.server.url}/v2/{REPO}/manifests/{TAG}"


def create_project(server: Dockyard, creds: tuple[str, str]) -> str:
    """Create the private project `bench` on the token server; returns how it was done."""
    r = httpx.post(f"{server.url}/api/v1/projects", json={"name": PROJECT, "public": False}, auth=creds, timeout=30)
    if r.status_code in (200, 201):
        return "POST /api/v1/projects"
    if r.status_code not in (404, 405):
        raise BenchError(f"POST /api/v1/projects answered {r.status_code}: {r.text[:500]}")
    # No management API in this build: a row in the server's own database (admins may push to any project).
    db = server.data_dir / "dockyard.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO projects (name, public, created_at) VALUES (?, 0, CURRENT_TIMESTAMP)", (PROJECT,)
        )
    return f"INSERT INTO projects in {db.name} (management API answered {r.status_code})"


def prepare_off(server: Dockyard, app: Layout) -> Client:
    wait_skopeo([skopeo_copy(app.oci_ref, f"docker://{server.host}/{REPO}:{TAG}")], f"{server.name} push")
    client = Client("auth off", server, {})
    with httpx.Client(timeout=30) as c:
        check_200(c, "GET", client.manifest_url, MANIFEST_ACCEPT)
    return client


def prepare_token(server: Dockyard, app: Layout, password: str) -> tuple[Client, Client]:
    creds = ("admin", password)
    how = create_project(server, creds)
    log(f"  token server: project '{PROJECT}' created by {how}")
    wait_skopeo(
        [skopeo_copy(app.oci_ref, f"docker://{server.host}/{REPO}:{TAG}", dest_creds=f"admin:{password}")],
        f"{server.name} push",
    )
    url = f"{server.url}/v2/{REPO}/manifests/{TAG}"
    with httpx.Client(timeout=30) as c:
        anon = c.get(url, headers={"Accept": MANIFEST_ACCEPT})
        if anon.status_code != 401:
            raise BenchError(f"token server: anonymous manifest GET answered {anon.status_code}, expected 401")
        r = c.get(
            f"{server.url}/token",
            params={"service": "dockyard", "scope": f"repository:{REPO}:pull"},
            auth=creds,
        )
        if r.status_code != 200 or not r.json().get("token"):
            raise BenchError(f"GET /token answered {r.status_code}: {r.text[:500]}")
        token = r.json()["token"]
        basic = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
        clients = (Client("token", server, {"Authorization": f"Bearer {token}"}), Client("basic", server, {"Authorization": basic}))
        for client in clients:
            for method in ("GET", "HEAD"):
                check_200(c, method, client.manifest_url, MANIFEST_ACCEPT, client.headers)
    return clients


def sc_get(client: Client, cfg: Config, tmp: Path) -> dict:
    with httpx.Client(timeout=30) as c:
        check_200(c, "GET", client.manifest_url, MANIFEST_ACCEPT, client.headers)
    cpu0 = client.server.cpu_seconds()
    st = run_wrk(
        client.manifest_url, "GET", MANIFEST_ACCEPT, cfg.wrk_seconds, cfg.connections, cfg.wrk_threads, tmp,
        client.headers,
    )
    cpu = client.server.cpu_seconds() - cpu0
    return {"manifest_get_rps": st["rps"], "cpu_ms_per_get": cpu * 1000 / st["requests"]}


def sc_head(client: Client, cfg: Config, tmp: Path) -> dict:
    with httpx.Client(timeout=30) as c:
        check_200(c, "HEAD", client.manifest_url, MANIFEST_ACCEPT, client.headers)
    st = run_hey(client.manifest_url, "HEAD", MANIFEST_ACCEPT, cfg.wrk_seconds, cfg.connections, client.headers)
    return {"manifest_head_rps": st["rps"]}


SCENARIOS = [("manifest GET", sc_get), ("manifest HEAD", sc_head)]

# metric key, label, unit, higher is better, target applies
METRICS = [
    ("manifest_get_rps", "manifest GET by tag (wrk, 32 conns)", "req/s", True, True),
    ("manifest_head_rps", "manifest HEAD by tag (hey, 32 conns)", "req/s", True, True),
    ("cpu_ms_per_get", "server CPU per manifest GET (lower is better)", "CPU ms/req", False, False),
]


def build_table(results: dict[str, dict[str, list[float]]]) -> tuple[list[list[str]], list[str]]:
    header = ["metric", "unit", "auth off", "token", "basic", "token/off", "basic/off", "target", "verdict tok | bas"]
    header.append("samples off | token | basic")
    rows, misses = [], []
    for key, label, unit, higher, has_target in METRICS:
        cols = [results[c].get(key, []) for c in CLIENTS]
        if not all(cols):
            continue
        off, tok, bas = (statistics.median(x) for x in cols)
        ratios = [tok / off if off else float("inf"), bas / off if off else float("inf")]
        verdicts = []
        for name, ratio in zip(("token", "basic"), ratios):
            if not has_target:
                verdicts.append("-")
            elif ratio >= TARGET:
                verdicts.append("PASS")
            else:
                verdicts.append("MISS")
                misses.append(f"{label}, {name}: {fmt(tok if name == 'token' else bas)} vs {fmt(off)} {unit} "
                              f"with auth off = {ratio:.2f}x (target >= {TARGET:g}x)")
        samples = " | ".join(" ".join(fmt(v) for v in x) for x in cols)
        tgt = f">= {TARGET:g}x" if has_target else "-"
        rows.append([label, unit, fmt(off), fmt(tok), fmt(bas), f"{ratios[0]:.2f}x", f"{ratios[1]:.2f}x", tgt,
                     " | ".join(verdicts), samples])
    return [header] + rows, misses


def auth_cost(args: argparse.Namespace, cfg: Config) -> int:
    app = build_layout("app", 2, 1_000_000, ref="latest")
    log(f"auth cost: small image {app.total_bytes / 1e6:.1f} MB, {cfg.reps} rep(s), {cfg.wrk_seconds:g} s load runs")
    results: dict[str, dict[str, list[float]]] = {c: {} for c in CLIENTS}
    started = time.monotonic()
    whole_run, foreign = ForeignLoad(), ForeignLoad()
    foreign_shares: list[float] = []
    tmp_root = Path(tempfile.mkdtemp(prefix="dockyard-authbench-"))
    try:
        for rep in range(cfg.reps):
            rep_dir = tmp_root / f"rep{rep}"
            password = secrets.token_urlsafe(18)
            off = Dockyard(rep_dir / "off", cfg.workers, {"DOCKYARD_AUTH_MODE": "none"}, name="Dockyard auth off")
            tok = Dockyard(
                rep_dir / "token",
                cfg.workers,
                {
                    "DOCKYARD_AUTH_MODE": "token",
                    "DOCKYARD_ADMIN_PASSWORD": password,
                    "DOCKYARD_TOKEN_TTL_SECONDS": TOKEN_TTL,
                },
                name="Dockyard token",
            )
            servers = [off, tok]
            for s in servers:
                s.workdir.mkdir(parents=True)
            try:
                for s in servers:
                    s.start()
                log(f"rep {rep + 1}/{cfg.reps}: auth off on {off.host}, token auth on {tok.host}")
                clients = [prepare_off(off, app), *prepare_token(tok, app, password)]
                for si, (title, fn) in enumerate(SCENARIOS):
                    k = (rep + si) % len(clients)
                    for client in clients[k:] + clients[:k]:
                        measured(title, client.name, lambda: fn(client, cfg, rep_dir), foreign, foreign_shares,
                                 results[client.name], width=14)
            finally:
                for s in servers:
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
    publish(table, misses, tool_versions(peer=False), noise, title=[
        f"Dockyard auth cost: median of {cfg.reps} rep(s), {elapsed:.0f} s; ratio = with auth / auth off",
        f"(token: Bearer JWT; basic: Basic on /v2; both on a DOCKYARD_AUTH_MODE=token server). "
        f"Dockyard workers: {cfg.workers or 'default'}",
    ], header=(
        f"Run {datetime.datetime.now().isoformat(timespec='seconds')}, auth cost, median of {cfg.reps} "
        f"repetition(s), {cfg.wrk_seconds:g} s load runs, {cfg.connections} connections, Dockyard workers "
        f"{cfg.workers or 'default'}. Ratio = with auth / auth off; target >= {TARGET:g}x."
    ), out=args.out)
    return 0


if __name__ == "__main__":
    from run import main

    sys.exit(main(["--auth-cost", *sys.argv[1:]]))
