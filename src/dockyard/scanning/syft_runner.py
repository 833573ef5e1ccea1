"""Catalogue one image in a child process, so hostile content can cost the server nothing.

The parent (`run`) makes the job's temp dir, starts `python -m dockyard.scanning.syft_runner
<dir>` in its own session, and waits for it with the scan timeout and the worker's stop request;
on any exit it kills the whole process group (the child and syft) and removes the directory.
The child counts the layers against the caps (limits.py), lays out the image, runs syft under
RLIMIT_AS / RLIMIT_FSIZE with its temp dir watched against the disk budget, and parses syft's
output itself: the parent reads back only the compact package list and the SPDX document, both
capped, never the raw syft-json that grows with the package count.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from dockyard.scanning import sbom
from dockyard.scanning.limits import MiB, LayerCounter, SbomError, ScanLimitExceeded, ScanLimits, ScanTimedOut, human

REQUEST, MANIFEST, RESULT, LOG = "request.json", "manifest.bin", "result.json", "runner.log"
SYFT_STARTED = "syft.started"  # written by the child once syft runs (the parent and tests can tell)
POLL_SECONDS = 0.1
CONFIG_MAX_BYTES = 16 * MiB
TAIL_BYTES = 64 * 1024
CHILD = [sys.executable, "-m", "dockyard.scanning.syft_runner"]  # + the work dir
PR_SET_PDEATHSIG = 1
_OURS = re.compile(r"^dockyard-(?:sbom|scan)-(\d+)-")


class ScanInterrupted(Exception):
    """The worker was asked to stop: the scan was killed and its temp dir removed; not a failure."""


# --- the parent: the scan service's side ----------------------------------------------------


def run(
    request: dict,
    manifest: bytes,
    *,
    work_root: Path | None,
    timeout: float,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict, bytes]:
    """Run the child for `request`; return (its result, the SPDX bytes). Raises SbomError,
    ScanLimitExceeded (with `.usage`), or ScanInterrupted; the temp dir is gone on every path."""
    if work_root is not None:
        work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"dockyard-sbom-{os.getpid()}-", dir=work_root))
    proc = None
    try:
        (work / MANIFEST).write_bytes(manifest)
        (work / REQUEST).write_text(json.dumps(request))
        with open(work / LOG, "wb") as log:
            proc = subprocess.Popen(
                [*CHILD, str(work)],
                cwd=work, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if should_stop is not None and should_stop():
                raise ScanInterrupted(f"stopped while cataloguing {request['digest']}")
            if time.monotonic() >= deadline:
                raise ScanTimedOut(f"syft timed out after {timeout:g} s cataloguing {request['digest']}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.001)))
        return _collect(work, proc.returncode, request)
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # syft too, if it outlived the child
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def remove_stale(work_root: Path) -> int:
    """Remove scan dirs left by a process that no longer runs (a server killed mid-scan; its scan
    process died with it, see _die_with_parent). Returns how many were removed."""
    removed = 0
    for entry in work_root.iterdir() if work_root.is_dir() else []:
        match = _OURS.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        except PermissionError:
            pass  # alive, someone else's
    return removed


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so nothing outlives a killed server."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _collect(work: Path, returncode: int, request: dict) -> tuple[dict, bytes]:
    limits = ScanLimits(**request["limits"])
    result_path = work / RESULT
    if not result_path.is_file():
        raise SbomError(f"the scan process exited {returncode} without a result: {_tail(work / LOG) or 'no output'}")
    if result_path.stat().st_size > 2 * limits.max_sbom_bytes:
        raise ScanLimitExceeded(f"the package list is larger than {human(2 * limits.max_sbom_bytes)} (scan_max_sbom_bytes)")
    result = json.loads(result_path.read_bytes())
    if "error" in result:
        exc = (ScanLimitExceeded if result.get("kind") == "limit" else SbomError)(result["error"])
        exc.usage = result.get("usage") or {}
        raise exc
    spdx = (work / result["spdx"]).read_bytes()  # its size was checked by the child
    return result, spdx


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(fh.seek(0, os.SEEK_END) - TAIL_BYTES, 0))
            text = fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return sbom._tail(text)


# --- the child ----------------------------------------------------------------------------------


class _Usage:
    def __init__(self):
        self.max_disk_bytes = 0

    def as_dict(self) -> dict:
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return {"max_rss_bytes": max(_own_peak_kib(), children) * 1024, "max_disk_bytes": self.max_disk_bytes}


def _own_peak_kib() -> int:
    """This process's peak RSS. Not RUSAGE_SELF: Linux carries the forking parent's peak across
    exec into ru_maxrss, so a child of a large server would report the server's memory."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(work: Path) -> int:
    usage = _Usage()
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        request = json.loads((work / REQUEST).read_text())
        result = _catalogue(work, request, (work / MANIFEST).read_bytes(), usage)
    except ScanLimitExceeded as exc:
        result = {"error": str(exc), "kind": "limit"}
    except SbomError as exc:
        result = {"error": str(exc), "kind": "sbom"}
    except MemoryError:
        result = {"error": "parsing syft's output ran out of memory (scan_max_memory_bytes)", "kind": "limit"}
    result["usage"] = usage.as_dict()
    partial = work / (RESULT + ".part")
    partial.write_text(json.dumps(result))
    partial.rename(work / RESULT)
    return 0


def _catalogue(work: Path, request: dict, manifest: bytes, usage: _Usage) -> dict:
    limits = ScanLimits(**request["limits"])
    blobs: dict[str, str] = request["blobs"]

    def blob_path(digest: str) -> Path:
        if digest not in blobs:
            raise SbomError(f"blob {digest} is not available")
        return Path(blobs[digest])

    parsed, doc = sbom._image_manifest(manifest)
    config_size = sbom._blob(blob_path, doc["config"]["digest"]).stat().st_size
    if config_size > CONFIG_MAX_BYTES:
        raise ScanLimitExceeded(f"image config {doc['config']['digest']} is {human(config_size)}, more than {human(CONFIG_MAX_BYTES)}")
    layers = sbom._layers_by_diff_id(doc, blob_path)
    counter = LayerCounter(limits)
    for layer in doc.get("layers", []):  # a repeated layer is unpacked again by syft: count it again
        counter.count(layer["digest"], sbom._blob(blob_path, layer["digest"]))
    layout = sbom._write_layout(work / "layout", manifest, parsed.media_type, parsed.digest, doc, blob_path)
    spdx_path, report = _run_syft(request, layout, work, limits, usage)
    resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory_bytes, limits.max_memory_bytes))
    packages = sbom._packages(report, layers)
    return {
        "packages": [asdict(p) for p in packages],
        "distro": sbom._distro_label(report.get("distro") or {}),
        "tool": sbom._tool_label(report.get("descriptor") or {}),
        "spdx": spdx_path.name,
    }


def _run_syft(request: dict, layout: Path, work: Path, limits: ScanLimits, usage: _Usage) -> tuple[Path, dict]:
    syft_json, spdx_json, scratch = work / "sbom.syft.json", work / "sbom.spdx.json", work / "tmp"
    scratch.mkdir()
    # An empty config file pins syft's defaults: a stray ~/.syft.yaml must not change what a
    # registry scan reports. TMPDIR keeps syft's unpacked layers in the job's directory.
    config = work / "syft.yaml"
    config.write_text("check-for-app-update: false\n")
    digest = request["digest"]
    cmd = [
        request["syft"], "scan", f"oci-dir:{layout}",
        "--config", str(config),
        "--scope", "squashed",
        "--source-name", request["name"],
        "--source-version", digest,
        "--output", f"syft-json={syft_json}",
        "--output", f"spdx-json={spdx_json}",
    ]  # fmt: skip
    env = {
        **os.environ,
        "SYFT_CHECK_FOR_APP_UPDATE": "false",
        "NO_COLOR": "1",
        "TMPDIR": str(scratch),
        "GOMEMLIMIT": str(limits.max_memory_bytes // 2),  # collect hard well before RLIMIT_AS
    }

    def rlimits() -> None:
        _die_with_parent()
        resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory_bytes, limits.max_memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_limit, limits.file_size_limit))

    started = time.monotonic()
    with open(work / "syft.stderr", "wb") as stderr:
        try:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, preexec_fn=rlimits)
        except OSError as exc:
            raise SbomError(f"cannot run syft at {request['syft']}: {exc.strerror or exc}") from exc
        (work / SYFT_STARTED).write_text(str(proc.pid))
        budget = limits.disk_budget
        while proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.25)
            usage.max_disk_bytes = max(usage.max_disk_bytes, _disk_usage(work))
            if usage.max_disk_bytes > budget:
                proc.kill()
                proc.wait()
                raise ScanLimitExceeded(
                    f"syft wrote more than {human(budget)} to its temp dir cataloguing {digest} "
                    "(twice scan_max_unpacked_bytes plus twice scan_max_sbom_bytes)"
                )
    text = _tail(work / "syft.stderr")
    if proc.returncode != 0:
        fatal = _fatal(work / "syft.stderr")  # a Go crash says why on top, then dumps every goroutine
        text = f"{fatal} … {text}" if fatal and fatal not in text else text
        if proc.returncode == -signal.SIGXFSZ or "file too large" in text:
            raise ScanLimitExceeded(
                f"syft wrote a file larger than {human(limits.file_size_limit)} cataloguing {digest} (scan_max_unpacked_bytes)"
            )
        if "out of memory" in text or "cannot allocate memory" in text:
            raise ScanLimitExceeded(
                f"syft needed more than {human(limits.max_memory_bytes)} of memory cataloguing {digest} (scan_max_memory_bytes)"
            )
        raise SbomError(f"syft failed (exit {proc.returncode}) cataloguing {digest}: {text or 'no output'}")
    for path, what in ((syft_json, "syft-json"), (spdx_json, "SPDX")):
        size = path.stat().st_size if path.is_file() else 0
        if size > limits.max_sbom_bytes:
            raise ScanLimitExceeded(
                f"the {what} document syft wrote for {digest} is {human(size)}, more than "
                f"{human(limits.max_sbom_bytes)} (scan_max_sbom_bytes)"
            )
    resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory_bytes, limits.max_memory_bytes))
    try:
        report = json.loads(syft_json.read_bytes())
        spdx_version = json.loads(spdx_json.read_bytes()).get("spdxVersion", "")
    except (OSError, ValueError) as exc:
        raise SbomError(f"syft exited 0 but its output is unusable: {exc}") from exc
    if not str(spdx_version).startswith("SPDX-2."):
        raise SbomError(f"syft wrote an unexpected SPDX version {spdx_version!r}")
    found = len(report.get("artifacts") or [])
    if found > limits.max_packages:
        raise ScanLimitExceeded(f"syft found {found} packages in {digest}, more than {limits.max_packages} (scan_max_packages)")
    print(f"syft catalogued {digest} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return spdx_json, report


def _fatal(path: Path) -> str:
    """The first `fatal error:` or `panic:` line in the first 64 KiB of syft's stderr, if any."""
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        for line in fh.read(TAIL_BYTES).decode("utf-8", "replace").splitlines():
            if line.startswith(("fatal error:", "panic:")):
                return line.strip()
    return ""


def _disk_usage(root: Path) -> int:
    """Bytes allocated under `root` (symlinks to blobs are not followed)."""
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
