"""Load generators and small HTTP helpers shared by the benchmarks: skopeo, wrk, hey, httpx."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx

from servers import BenchError, log

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
SKOPEO_TIMEOUT = 900.0


def skopeo_copy(src: str, dst: str, src_creds: str | None = None, dest_creds: str | None = None) -> subprocess.Popen:
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
    if src_creds:
        cmd += ["--src-creds", src_creds]
    if dest_creds:
        cmd += ["--dest-creds", dest_creds]
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
{extra_headers}
done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"status\\":%d,\\"connect\\":%d,\\"read\\":%d," ..
    "\\"write\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d}}\\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    url: str,
    method: str,
    accept: str,
    seconds: float,
    connections: int,
    threads: int,
    tmp: Path,
    headers: dict[str, str] | None = None,
) -> dict:
    script = tmp / f"wrk-{method.lower()}.lua"
    # json.dumps gives a double-quoted string literal that Lua reads the same way (the values here are ASCII).
    extra = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items())
    script.write_text(WRK_LUA.format(method=method, accept=accept, extra_headers=extra))
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


def run_hey(
    url: str, method: str, accept: str, seconds: float, connections: int, headers: dict[str, str] | None = None
) -> dict:
    """HEAD load with `hey`: wrk cannot do HEAD (its parser waits for a body the HEAD response never sends)."""
    cmd = ["hey", "-z", f"{seconds:g}s", "-c", str(connections), "-m", method, "-t", "5", "-disable-redirects"]
    cmd += ["-H", f"Accept: {accept}"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    res = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60)
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


def check_200(
    client: httpx.Client, method: str, url: str, accept: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    r = client.request(method, url, headers={"Accept": accept, **(headers or {})})
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
