"""Helpers for the access-control end-to-end tests (tests/e2e/test_auth_clients.py) and the
conformance run with auth on (tests/conformance/test_conformance_auth.py).

- :class:`Directory`: creates projects, users, memberships and robots on a running server,
  through the management API (``/api/v1``, Basic auth as ``admin``) when the server serves it,
  otherwise directly in its database with the domain services.
- :class:`AuthClients`: the e2e ``Clients`` runner (private HOME / DOCKER_CONFIG /
  REGISTRY_AUTH_FILE / regctl config / podman storage) plus a private helm configuration.
- :func:`tiny_layout`: a small deterministic single-platform OCI image layout.
- :class:`AdminHttp`: plain HTTP checks against the registry as ``admin`` (Basic).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import httpx

from tests.e2e.conftest import MANIFEST_ACCEPT, ClientFailed, Clients, sha256_bytes  # noqa: F401
from tests.support.images import LayoutWriter, _layout_info, _small_files
from tests.support.server import ServerProcess
from tests.functional.helpers import API_CLIENT

ADMIN = "admin"


# --- identities -------------------------------------------------------------------------------


class SetupFailed(AssertionError):
    pass


class Directory:
    """Projects, users, members and robots on a running Dockyard.

    Uses the management API when ``GET /api/v1/openapi.json`` answers 200, else the domain
    services on the server's database (``database_url`` or ``<data_dir>/dockyard.db``).
    ``via`` tells which one was used ("api" or "db").
    """

    def __init__(self, server: ServerProcess, admin_password: str, database_url: str | None = None):
        self.server = server
        self.http = httpx.Client(headers=API_CLIENT, base_url=server.url, trust_env=False, timeout=60,
                                 auth=(ADMIN, admin_password))
        probe = self.http.get("/api/v1/openapi.json")
        self.via = "api" if probe.status_code == 200 else "db"
        self._db = None
        if self.via == "db":
            from dockyard.metadata.db import Database

            url = database_url or f"sqlite:///{(Path(server.data_dir) / 'dockyard.db').resolve()}"
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            self._db = Database(url)

    def close(self) -> None:
        self.http.close()
        if self._db is not None:
            self._db.engine.dispose()

    def _post(self, path: str, body: dict) -> dict:
        r = self.http.post(path, json=body)
        if r.status_code != 201:
            raise SetupFailed(f"POST {path} {body}: {r.status_code} {r.text[:500]}\n"
                              f"server log:\n{self.server.log_tail(30)}")
        return r.json()

    def create_project(self, name: str, *, public: bool = False) -> None:
        if self.via == "api":
            self._post("/api/v1/projects", {"name": name, "public": public})
            return
        from dockyard.domain.projects import ProjectService

        ProjectService(self._db).create(name, public=public)

    def create_user(self, username: str, password: str) -> None:
        if self.via == "api":
            self._post("/api/v1/users", {"username": username, "password": password})
            return
        from dockyard.domain.users import UserService

        UserService(self._db).create(username, password)

    def add_member(self, project: str, username: str, role: str) -> None:
        if self.via == "api":
            self._post(f"/api/v1/projects/{project}/members", {"username": username, "role": role})
            return
        from dockyard.domain.projects import ProjectService

        ProjectService(self._db).add_member(project, username, role)

    def create_robot(self, project: str, name: str, actions: list[str]) -> tuple[str, str]:
        """A project robot; returns (account name, secret)."""
        if self.via == "api":
            body = self._post("/api/v1/robots", {"name": name, "project": project, "actions": actions})
            return body["name"], body["secret"]
        from dockyard.domain.robots import RobotService

        robot, secret = RobotService(self._db).create(name, project=project, permissions=actions)
        return robot.name, secret


# --- HTTP checks as admin ---------------------------------------------------------------------


class AdminHttp:
    def __init__(self, server: ServerProcess, admin_password: str):
        self.server = server
        self.http = httpx.Client(headers=API_CLIENT, base_url=server.url, trust_env=False, timeout=60,
                                 auth=(ADMIN, admin_password))

    def close(self) -> None:
        self.http.close()

    def manifest(self, repo: str, ref: str) -> tuple[str, bytes]:
        """(Docker-Content-Digest, body) of ``repo:ref``; the body must hash to the digest."""
        r = self.http.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
        assert r.status_code == 200, f"GET /v2/{repo}/manifests/{ref} as admin: {r.status_code} {r.text[:300]}"
        digest = r.headers.get("Docker-Content-Digest")
        assert digest == sha256_bytes(r.content), f"{repo}:{ref}: header {digest} != body {sha256_bytes(r.content)}"
        return digest, r.content

    def absent(self, repo: str, ref: str) -> None:
        r = self.http.head(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
        assert r.status_code == 404, f"HEAD /v2/{repo}/manifests/{ref} as admin: {r.status_code}, expected 404"


# --- clients with private configuration ---------------------------------------------------------


class AuthClients(Clients):
    """``Clients`` (tests/e2e/conftest.py) plus helm, each instance with its own config dirs."""

    def __init__(self, root: Path, server: ServerProcess):
        super().__init__(root, server)
        # podman refuses a runroot longer than 50 characters: pytest's tmp paths are longer.
        self.podman_runroot = Path(tempfile.mkdtemp(prefix="dy-podman-run-", dir="/tmp"))
        conf = root / "podman"
        (conf / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.podman_root}"\nrunroot = "{self.podman_runroot}"\n')
        helm = root / "helm"
        for sub in ("cache", "config", "data"):
            (helm / sub).mkdir(parents=True, exist_ok=True)
        self.helm_registry_config = helm / "config" / "registry" / "config.json"
        self.env = {k: v for k, v in self.env.items() if not k.startswith("HELM_")}
        self.env.update({
            "HELM_CACHE_HOME": str(helm / "cache"),
            "HELM_CONFIG_HOME": str(helm / "config"),
            "HELM_DATA_HOME": str(helm / "data"),
            "HELM_REGISTRY_CONFIG": str(self.helm_registry_config),
        })
        self.docker_config = Path(self.env["DOCKER_CONFIG"]) / "config.json"
        self.auth_file = Path(self.env["REGISTRY_AUTH_FILE"])

    def cleanup_podman(self) -> None:
        super().cleanup_podman()
        shutil.rmtree(self.podman_runroot, ignore_errors=True)

    def fails(self, name: str, *args: str, **kwargs) -> str:
        """Run a command that must fail; returns its stdout+stderr."""
        proc = self.run(name, *args, check=False, **kwargs)
        if proc.returncode == 0:
            raise ClientFailed(f"expected failure but succeeded: {name} {' '.join(args)}\n"
                               f"--- stdout ---\n{proc.stdout[-2000:]}\n--- stderr ---\n{proc.stderr[-2000:]}")
        return proc.stdout + proc.stderr

    # logins

    def login(self, client: str, username: str, password: str, *, check: bool = True):
        host = self.host
        if client == "skopeo":
            args = ("login", "--tls-verify=false", "-u", username, "--password-stdin", host)
        elif client == "podman":
            args = ("login", "--tls-verify=false", "-u", username, "--password-stdin", host)
        elif client == "crane":
            args = ("auth", "login", host, "-u", username, "--password-stdin")
        elif client == "oras":
            args = ("login", "--plain-http", "-u", username, "--password-stdin", host)
        elif client == "regctl":
            args = ("registry", "login", "-u", username, "--pass-stdin", host)
        elif client == "helm":
            args = ("registry", "login", "--insecure", "--plain-http", "-u", username, "--password-stdin", host)
        else:
            raise ValueError(client)
        return self.run(client, *args, input=password + "\n", check=check)


# --- images -------------------------------------------------------------------------------------


def tiny_layout(path: Path, tag: str = "v1", seed: str = "auth") -> dict:
    """A deterministic linux/amd64 image (one small layer) as an OCI layout at ``path``.
    Returns its info (``digest``, ``mediaType``, ``config``, ``layers``)."""
    w = LayoutWriter(path)
    layer = w.layer(_small_files({
        "etc/hello": f"hello from the {seed} test image\n".encode(),
        "opt/data.bin": random.Random(seed).randbytes(8 * 1024),
    }))
    w.tag(w.image([layer], cmd=["cat", "/etc/hello"]), tag)
    return _layout_info(path, tag)


def tiny_chart(parent: Path, name: str = "authchart", version: str = "0.1.0") -> Path:
    """A minimal helm chart directory."""
    chart = parent / name
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {name}\ndescription: Dockyard auth test chart\ntype: application\n"
        f"version: {version}\nappVersion: \"1.0\"\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n")
    return chart


DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def find_digest(text: str, after: str = "") -> str:
    """The first sha256 digest in ``text`` following ``after`` (a regex)."""
    m = re.search(after + r".*?(sha256:[0-9a-f]{64})", text, re.S)
    assert m, f"no digest after {after!r} in: {text!r}"
    return m.group(1)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
