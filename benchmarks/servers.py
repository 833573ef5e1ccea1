"""Servers under test (Dockyard, Distribution) and CPU accounting from /proc, shared by the benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTUP_TIMEOUT = 60.0


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


def measured(title: str, name: str, run, foreign: ForeignLoad, shares: list[float], into: dict[str, list[float]],
             width: int = 22) -> dict[str, float]:
    """Run one scenario on one target, note how busy the rest of the machine was, keep every metric
    under its key in `into`, and log the line; the one measurement step every script shares."""
    from report import fmt

    foreign.reset()
    got = run()
    share = foreign.share()
    shares.append(share)
    for key, value in got.items():
        into.setdefault(key, []).append(value)
    log(f"  {title:<{width}} {name:<12} " + "  ".join(f"{key}={fmt(v)}" for key, v in got.items())
        + f"  (other load {share:.0%})")
    return got


# ---------------------------------------------------------------------------------------------------------------
# Servers


class Registry:
    name = "?"
    # /v2/ answers that mean "up": 200 without access control, 401 (a challenge) with it.
    ready_statuses = (200,)

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
                if httpx.get(f"{self.url}/v2/", timeout=2).status_code in self.ready_statuses:
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
    """`python -m dockyard serve` in a fresh data dir. Every DOCKYARD_* variable of the caller's environment is
    dropped; `settings` (e.g. {"DOCKYARD_AUTH_MODE": "none"}) is what the server gets instead."""

    name = "Dockyard"

    def __init__(self, workdir: Path, workers: int | None, settings: dict[str, str] | None = None, name: str = ""):
        super().__init__(workdir)
        self.workers = workers
        self.settings = dict(settings or {})
        if name:
            self.name = name
        if self.settings.get("DOCKYARD_AUTH_MODE", "token") != "none":
            self.ready_statuses = (200, 401)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def command(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
        env.update(self.settings)
        cmd = [sys.executable, "-m", "dockyard", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir)]
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
