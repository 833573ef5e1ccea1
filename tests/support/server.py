"""Start registries for tests: Dockyard itself and, as a reference, Distribution.

Only the standard library is used, so this module can be imported from any
test, benchmark or script. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = Path(os.environ.get("DOCKYARD_TOOLS") or Path.home() / ".cache" / "dockyard-tools")
TOOLS_BIN = TOOLS_DIR / "bin"
DISTRIBUTION_BINARY = "/usr/bin/docker-registry"
READY_TIMEOUT = 30.0

# Never send loopback traffic through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ToolNotFoundError(FileNotFoundError):
    pass


class ServerStartError(RuntimeError):
    pass


def tool(name: str) -> str:
    """Absolute path of a test tool: the tools bin dir first, then PATH."""
    candidate = TOOLS_BIN / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    raise ToolNotFoundError(
        f"test tool {name!r} not found in {TOOLS_BIN} or on PATH; "
        f"run `bash scripts/install-tools.sh`"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """A registry process started by :func:`run_dockyard` / :func:`run_distribution`."""

    proc: subprocess.Popen
    port: int
    data_dir: Path
    log_path: Path
    log_offset: int = 0  # where this run's output starts in log_path
    name: str = "server"
    _log_file: object = field(default=None, repr=False)
    _group_reaped: bool = field(default=False, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                data = f.read()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def _signal_group(self, sig: int) -> None:
        # The server runs in its own session: signal its whole process group
        # so worker processes it forked go too.
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL, no clean shutdown (crash simulation). Returns the exit code."""
        if self.alive():
            self._signal_group(signal.SIGKILL)
        code = self.proc.wait()
        self._close_log()
        return code

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Returns the exit code."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
        code = self.proc.wait()
        if not self._group_reaped:
            # Kill anything left in the group (e.g. workers of a killed master).
            self._group_reaped = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until ``GET /v2/`` answers with any status below 500."""
        deadline = time.monotonic() + timeout
        last_error: object = None
        while True:
            if not self.alive():
                raise ServerStartError(
                    f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with _opener.open(self.url + "/v2/", timeout=2) as resp:
                    if resp.status < 500:
                        return
                    last_error = f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    return
                last_error = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last_error = e
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} not ready on {self.url}/v2/ after {timeout:.0f}s "
                    f"(last: {last_error}); log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)


def start_server(
    cmd: Sequence[str],
    *,
    port: int,
    data_dir: Path,
    log_name: str,
    env: Mapping[str, str] | None = None,
    name: str = "server",
    wait: bool = True,
    ready_timeout: float = READY_TIMEOUT,
) -> ServerProcess:
    """Start ``cmd`` in its own session, logging to ``data_dir/log_name`` (appended)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / log_name
    log_file = open(log_path, "ab")
    offset = log_file.tell()
    log_file.write(f"=== {time.strftime('%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
    log_file.flush()
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    server = ServerProcess(
        proc=proc, port=port, data_dir=data_dir, log_path=log_path,
        log_offset=offset, name=name, _log_file=log_file,
    )
    if wait:
        try:
            server.wait_ready(ready_timeout)
        except BaseException:
            server.stop()
            raise
    return server


def dockyard_env(extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # Work from a source checkout even when the package is not installed.
    src = REPO_ROOT / "src"
    if importlib.util.find_spec("dockyard") is None and (src / "dockyard").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    if extra_env:
        env.update(extra_env)
    return env


@contextlib.contextmanager
def run_dockyard(
    data_dir: os.PathLike | str,
    *,
    database_url: str | None = None,
    port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT,
    auth_mode: str = "none",
    admin_password: str | None = None,
) -> Iterator[ServerProcess]:
    """Run ``python -m dockyard serve`` on 127.0.0.1 until the block exits.

    Access control is off unless `auth_mode` says otherwise ("token" or "basic"), so tests of
    the OCI API itself need no credentials; `admin_password` seeds the first admin user.

    The log (stdout and stderr) is appended to ``data_dir/dockyard.log``, so a
    restart on the same data dir keeps the earlier run's output.
    """
    data_dir = Path(data_dir)
    port = port or free_port()
    cmd = [
        sys.executable, "-m", "dockyard", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
    ]
    if database_url:
        cmd += ["--database-url", database_url]
    cmd += list(extra_args)
    env = {"DOCKYARD_AUTH_MODE": auth_mode}
    if admin_password:
        env["DOCKYARD_ADMIN_PASSWORD"] = admin_password
    env.update(extra_env or {})
    server = start_server(
        cmd, port=port, data_dir=data_dir, log_name="dockyard.log",
        env=dockyard_env(env), name="dockyard", ready_timeout=ready_timeout,
    )
    try:
        yield server
    finally:
        server.stop()


DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  secret: dockyard-tests-{port}
"""


@contextlib.contextmanager
def run_distribution(
    data_dir: os.PathLike | str,
    port: int | None = None,
    *,
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[ServerProcess]:
    """Run Debian's Distribution 2.8 (``docker-registry``) as a reference registry."""
    data_dir = Path(data_dir)
    port = port or free_port()
    binary = DISTRIBUTION_BINARY if os.access(DISTRIBUTION_BINARY, os.X_OK) else tool("docker-registry")
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "config.yml"
    config.write_text(DISTRIBUTION_CONFIG.format(root=data_dir / "storage", port=port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    server = start_server(
        [binary, "serve", str(config)], port=port, data_dir=data_dir,
        log_name="registry.log", env=env, name="docker-registry",
        ready_timeout=ready_timeout,
    )
    try:
        yield server
    finally:
        server.stop()
