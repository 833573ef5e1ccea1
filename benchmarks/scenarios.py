"""Scenarios of the core benchmark (Dockyard vs Distribution): each takes (registry, ctx) and returns {metric: value}."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from images import Layout
from load import (
    MANIFEST_ACCEPT,
    check_200,
    put_manifest,
    run_hey,
    run_wrk,
    skopeo_copy,
    small_manifest,
    upload_blob,
    wait_skopeo,
)
from servers import BenchError, Registry


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
