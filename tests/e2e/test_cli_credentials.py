"""Client-side credentials end to end: `dockyard login`, `dockyard get-login-password` and the
`docker-credential-dockyard` helper against a real `dockyard serve` with token auth, used by real
clients (crane, skopeo).

One server for the module: a PRIVATE project with a developer member, created through the
management API as admin. Every test runs its commands with a private HOME / DOCKER_CONFIG /
REGISTRY_AUTH_FILE / DOCKYARD_CREDENTIALS_FILE (tests/e2e/auth_support.AuthClients), with the
Python environment's bin directory (where `docker-credential-dockyard` is installed) first on PATH.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.auth_support import AdminHttp, AuthClients, Directory, find_digest, tiny_layout
from tests.e2e.conftest import verify_layout
from tests.support.server import ServerProcess, run_dockyard

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "Adm1n-credentials-pw"
PROJECT = "creds"
DEV, DEV_PW = "dev", "dev-long-lived-password"
NOT_FOUND = "credentials not found in native keychain"
# Wrong passwords are part of the tests; the throttle itself is tested elsewhere.
THROTTLE_ENV = {"DOCKYARD_LOGIN_SLOWDOWN_AFTER": "1000", "DOCKYARD_LOGIN_LOCKOUT_AFTER": "2000"}
BIN_DIR = Path(sys.executable).parent
HELPER = BIN_DIR / "docker-credential-dockyard"


@dataclass
class Env:
    server: ServerProcess
    admin: AdminHttp
    layout: Path
    image: dict

    @property
    def host(self) -> str:
        return self.server.host


@pytest.fixture(scope="module")
def module_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-credentials")
    with run_dockyard(tmp / "data", auth_mode="token", admin_password=ADMIN_PASSWORD,
                      extra_env=THROTTLE_ENV) as server:
        directory = Directory(server, ADMIN_PASSWORD)
        assert directory.via == "api", "the management API must be served"
        directory.create_project(PROJECT, public=False)
        directory.create_user(DEV, DEV_PW)
        directory.add_member(PROJECT, DEV, "developer")
        admin = AdminHttp(server, ADMIN_PASSWORD)
        layout = tmp / "layout"
        image = tiny_layout(layout, "v1", seed="cli-credentials")
        yield Env(server, admin, layout, image)
        admin.close()
        directory.close()


@pytest.fixture
def env(module_env: Env):
    offset = os.path.getsize(module_env.server.log_path)
    yield module_env
    with open(module_env.server.log_path, "rb") as f:
        f.seek(offset)
        log = f.read().decode("utf-8", "replace")
    assert module_env.server.alive(), f"dockyard died during the test; log:\n{log[-4000:]}"
    assert "Traceback" not in log, f"dockyard logged a traceback during the test:\n{log[-6000:]}"


class CredClients(AuthClients):
    """AuthClients plus Dockyard's own commands, with a private credential store."""

    def __init__(self, root: Path, server: ServerProcess):
        super().__init__(root, server)
        self.env = {k: v for k, v in self.env.items() if not k.startswith("DOCKYARD_")}
        self.credentials_file = root / "dockyard-credentials.json"
        self.env["DOCKYARD_CREDENTIALS_FILE"] = str(self.credentials_file)
        self.env["PATH"] = os.pathsep.join([str(BIN_DIR), self.env.get("PATH", "")])

    def cmd(self, *argv: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)

    def dockyard(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return self.cmd(sys.executable, "-m", "dockyard", *args, input=input)

    def helper(self, action: str, input: str = "") -> subprocess.CompletedProcess:
        return self.cmd(str(HELPER), action, input=input)

    def docker_config_json(self) -> dict:
        return json.loads(self.docker_config.read_text())

    def write_docker_config(self, config: dict) -> None:
        self.docker_config.write_text(json.dumps(config))


@pytest.fixture
def new_clients(tmp_path: Path):
    made: list[CredClients] = []

    def make(env: Env, name: str = "c") -> CredClients:
        c = CredClients(tmp_path / name, env.server)
        made.append(c)
        return c

    yield make
    for c in made:
        c.cleanup_podman()


def _ok(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc


def _crane_push(c: CredClients, env: Env, ref: str) -> str:
    return find_digest(c.run("crane", "--insecure", "push", str(env.layout), ref).stdout, "@")


def _crane_pull(c: CredClients, ref: str, out: Path) -> str:
    c.run("crane", "--insecure", "pull", "--format", "oci", ref, str(out))
    return verify_layout(out).top


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _login_password(env: Env, user: str = DEV, password: str = DEV_PW) -> str:
    r = httpx.post(f"{env.server.url}/api/v1/auth/login-password", auth=(user, password), trust_env=False)
    assert r.status_code == 200, r.text
    return r.json()["password"]


# --- dockyard login ----------------------------------------------------------------------------


def test_login_writes_docker_config_then_crane_pushes_and_pulls(env, new_clients, tmp_path):
    c = new_clients(env, "login")
    proc = _ok(c.dockyard("login", env.host, "-u", DEV, "--password-stdin", input=DEV_PW + "\n"), "dockyard login")
    assert "Login Succeeded" in proc.stderr + proc.stdout

    auths = c.docker_config_json()["auths"]
    assert auths[env.host] == {"auth": base64.b64encode(f"{DEV}:{DEV_PW}".encode()).decode()}
    assert _mode(c.docker_config) == 0o600
    stored = json.loads(c.credentials_file.read_text())
    assert stored == {env.host: {"username": DEV, "secret": DEV_PW}}
    assert _mode(c.credentials_file) == 0o600

    # crane reads DOCKER_CONFIG: it pushes to and pulls from the private project with those credentials.
    ref = f"{env.host}/{PROJECT}/login:v1"
    pushed = _crane_push(c, env, ref)
    assert pushed == env.image["digest"]
    assert env.admin.manifest(f"{PROJECT}/login", "v1")[0] == pushed
    assert _crane_pull(c, ref, tmp_path / "pulled") == pushed

    # Control: the same pull with an empty docker config is refused (the project is private).
    anonymous = new_clients(env, "anonymous")
    out = anonymous.fails("crane", "--insecure", "pull", "--format", "oci", ref, str(tmp_path / "anon"))
    assert "UNAUTHORIZED: authentication required to pull" in out, out


def test_login_with_a_wrong_password_fails_clearly(env, new_clients):
    c = new_clients(env, "wrong")
    before = c.docker_config.read_text()
    proc = c.dockyard("login", env.host, "-u", DEV, "--password-stdin", input="not-the-password\n")
    assert proc.returncode != 0, proc
    output = proc.stdout + proc.stderr
    assert "login failed" in output and "UNAUTHORIZED" in output, output
    assert "Traceback" not in output and "Login Succeeded" not in output, output
    assert c.docker_config.read_text() == before  # nothing saved
    assert not c.credentials_file.exists()

    unknown = c.dockyard("login", env.host, "-u", "nobody-here", "--password-stdin", input="whatever-pw\n")
    assert unknown.returncode != 0 and "login failed" in unknown.stderr + unknown.stdout


# --- dockyard get-login-password -------------------------------------------------------------------


def test_get_login_password_works_for_skopeo(env, new_clients, tmp_path):
    c = new_clients(env, "glp")
    proc = _ok(c.dockyard("get-login-password", "--registry", env.host, "-u", DEV, "--password", DEV_PW),
               "dockyard get-login-password")
    password = proc.stdout.strip()
    assert proc.stdout == password + "\n" and len(password.splitlines()) == 1
    assert password and password != DEV_PW and DEV_PW not in proc.stdout + proc.stderr

    c.login("skopeo", DEV, password)
    assert env.host in c.auth_file.read_text()
    ref = f"docker://{env.host}/{PROJECT}/glp:v1"
    digestfile = tmp_path / "pushed.digest"
    c.skopeo_copy(f"oci:{env.layout}:v1", ref, "--digestfile", str(digestfile))
    pushed = digestfile.read_text().strip()
    assert pushed == env.image["digest"] == env.admin.manifest(f"{PROJECT}/glp", "v1")[0]
    out = tmp_path / "pulled"
    c.skopeo_copy(ref, f"oci:{out}:v1")
    assert verify_layout(out, "v1").top == pushed

    # Each call prints a fresh password; a wrong real password gets none.
    again = _ok(c.dockyard("get-login-password", "--registry", env.host, "-u", DEV, "--password", DEV_PW), "again")
    assert again.stdout.strip() not in ("", DEV_PW)
    wrong = c.dockyard("get-login-password", "--registry", env.host, "-u", DEV, "--password", "wrong-password")
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert "cannot get a login password" in wrong.stderr and "UNAUTHORIZED" in wrong.stderr, wrong.stderr


def test_get_login_password_uses_saved_credentials(env, new_clients):
    c = new_clients(env, "glp-saved")
    missing = c.dockyard("get-login-password", "--registry", env.host)
    assert missing.returncode == 1 and missing.stdout == ""
    assert f"no credentials for {env.host}" in missing.stderr, missing.stderr

    _ok(c.dockyard("login", env.host, "-u", DEV, "--password-stdin", input=DEV_PW + "\n"), "dockyard login")
    proc = _ok(c.dockyard("get-login-password", "--registry", env.host), "get-login-password (saved)")
    password = proc.stdout.strip()
    assert password and password != DEV_PW
    r = httpx.get(f"{env.server.url}/api/v1/auth/whoami", auth=(DEV, password), trust_env=False)
    assert r.status_code == 200 and r.json()["name"] == DEV, r.text


# --- docker-credential-dockyard ----------------------------------------------------------------------


def test_credential_helper_store_get_list_erase(env, new_clients, tmp_path):
    c = new_clients(env, "helper")
    stored = _ok(c.helper("store", json.dumps({"ServerURL": env.host, "Username": DEV, "Secret": DEV_PW})), "store")
    assert stored.stdout == ""
    assert _mode(c.credentials_file) == 0o600
    assert json.loads(_ok(c.helper("list"), "list").stdout) == {env.host: DEV}
    version = _ok(c.helper("version"), "version")
    assert version.stdout.startswith("docker-credential-dockyard (dockyard) ")

    got = json.loads(_ok(c.helper("get", env.host + "\n"), "get").stdout)
    assert got["ServerURL"] == env.host and got["Username"] == DEV
    secret = got["Secret"]
    assert secret and secret != DEV_PW  # short-lived, never the stored long-lived password

    # The Secret works as a password: crane logs in with it and pushes/pulls the private project.
    c.login("crane", DEV, secret)
    ref = f"{env.host}/{PROJECT}/helper:v1"
    pushed = _crane_push(c, env, ref)
    assert pushed == env.image["digest"]
    assert _crane_pull(c, ref, tmp_path / "pulled-login") == pushed

    # credHelpers: crane asks the helper (found on PATH) for credentials; no inline auths at all.
    via_helper = new_clients(env, "via-helper")
    via_helper.env["DOCKYARD_CREDENTIALS_FILE"] = str(c.credentials_file)
    via_helper.write_docker_config({"credHelpers": {env.host: "dockyard"}})
    assert _crane_pull(via_helper, ref, tmp_path / "pulled-helper") == pushed
    assert "auths" not in via_helper.docker_config_json()

    # erase: the helper has nothing left, so crane goes anonymous and is refused.
    erased = _ok(c.helper("erase", env.host), "erase")
    assert erased.stdout == ""
    after = c.helper("get", env.host)
    assert after.returncode == 1 and after.stdout.strip() == NOT_FOUND, after
    assert json.loads(_ok(c.helper("list"), "list").stdout) == {}
    out = via_helper.fails("crane", "--insecure", "pull", "--format", "oci", ref, str(tmp_path / "pulled-after"))
    assert "UNAUTHORIZED: authentication required to pull" in out, out
    again = c.helper("erase", env.host)
    assert again.returncode == 1 and again.stdout.strip() == NOT_FOUND


def test_credential_helper_errors(env, new_clients):
    c = new_clients(env, "helper-errors")
    for payload, message in (({"Username": DEV, "Secret": "x"}, "no credentials server URL"),
                             ({"ServerURL": env.host, "Secret": "x"}, "no credentials username")):
        proc = c.helper("store", json.dumps(payload))
        assert (proc.returncode, proc.stdout.strip()) == (1, message), proc
    assert not c.credentials_file.exists()
    missing = c.helper("get", env.host)
    assert (missing.returncode, missing.stdout.strip()) == (1, NOT_FOUND)

    # A wrong stored password: `get` fails (exit 1, message on stdout) instead of handing out garbage.
    _ok(c.helper("store", json.dumps({"ServerURL": env.host, "Username": DEV, "Secret": "wrong-password"})), "store")
    wrong = c.helper("get", env.host)
    assert wrong.returncode == 1 and "cannot get a login password" in wrong.stdout, wrong
    assert "Traceback" not in wrong.stdout + wrong.stderr


def test_docker_login_through_the_credential_helper(env, new_clients, tmp_path):
    """`docker login` with `credHelpers` configured stores whatever the registry login produced
    through the helper, and later pulls `get` it back. Against a token-auth registry docker asks
    for a refresh token (offline_token=true) and stores it as {"Username": "<token>", "Secret":
    <refresh token>} (docker/cli credentials/native_store.go). The docker CLI logs in client-side
    when no daemon is running, so only the CLI is needed."""
    publisher = new_clients(env, "publisher")
    publisher.login("crane", DEV, DEV_PW)
    ref = f"{env.host}/{PROJECT}/docker-login:v1"
    pushed = _crane_push(publisher, env, ref)

    c = new_clients(env, "docker-login")
    c.write_docker_config({"credHelpers": {env.host: "dockyard"}})
    login = c.run("docker", "login", env.host, "-u", DEV, "--password-stdin", input=DEV_PW + "\n")
    assert "Login Succeeded" in login.stdout + login.stderr
    assert env.host in json.loads(_ok(c.helper("list"), "list").stdout)  # docker stored through the helper
    assert DEV_PW not in c.docker_config.read_text()  # kept by the helper, not inline

    got = c.helper("get", env.host)
    assert got.returncode == 0, (
        f"`get` after `docker login` fails, so docker cannot use the stored login: {got.stdout} {got.stderr}; "
        f"stored: {c.credentials_file.read_text()}")
    assert json.loads(got.stdout)["Secret"] != DEV_PW
    # And crane, reading the same docker config, pulls through the helper.
    assert _crane_pull(c, ref, tmp_path / "pulled") == pushed


# --- robots in CI (issue 15 §3) --------------------------------------------------------------------


def test_crane_through_the_credential_helper_as_a_robot(env, new_clients, tmp_path):
    """The usual CI set-up: a robot created with `--action push` only logs in with `dockyard login`, and crane
    pushes and pulls through `docker-credential-dockyard`, which hands it short-lived login passwords. Rotating the
    robot ends the passwords already handed out at once."""
    admin = new_clients(env, "robot-admin")
    admin.env.update(DOCKYARD_USERNAME="admin", DOCKYARD_PASSWORD=ADMIN_PASSWORD)
    created = _ok(admin.dockyard("admin", "robots", "-r", env.host, "create", "ci", "--project", PROJECT,
                                 "--action", "push", "--json"), "robots create")
    robot = json.loads(created.stdout)
    name, secret = robot["name"], robot["secret"]
    assert robot["permissions"] == [{"project": PROJECT, "actions": ["push"]}]

    c = new_clients(env, "robot-ci")
    _ok(c.dockyard("login", env.host, "-u", name, "--password-stdin", input=secret + "\n"), "dockyard login as robot")
    c.write_docker_config({"credHelpers": {env.host: "dockyard"}})  # no inline auths: only the helper
    ref = f"{env.host}/{PROJECT}/robot-ci:v1"
    pushed = _crane_push(c, env, ref)  # crane HEADs first: push implies pull
    assert pushed == env.image["digest"]
    assert _crane_pull(c, ref, tmp_path / "robot-pulled") == pushed
    assert "auths" not in c.docker_config_json()

    handed_out = json.loads(_ok(c.helper("get", env.host), "helper get").stdout)
    assert handed_out["Username"] == name and handed_out["Secret"] != secret
    # no -r: the registry of the last `dockyard login` is the default
    printed = _ok(c.dockyard("get-login-password"), "get-login-password as robot").stdout.strip()
    for password in (handed_out["Secret"], printed):
        r = httpx.head(f"{env.server.url}/v2/{PROJECT}/robot-ci/manifests/v1", auth=(name, password), trust_env=False)
        assert r.status_code == 200, r.text

    _ok(admin.dockyard("admin", "robots", "-r", env.host, "rotate", name), "robots rotate")
    for password in (handed_out["Secret"], printed):
        r = httpx.head(f"{env.server.url}/v2/{PROJECT}/robot-ci/manifests/v1", auth=(name, password), trust_env=False)
        assert r.status_code == 401, r.text
    refused = c.helper("get", env.host)  # the saved secret is the old one now
    assert refused.returncode == 1 and "cannot get a login password" in refused.stdout, refused
    out = c.fails("crane", "--insecure", "pull", "--format", "oci", ref, str(tmp_path / "robot-after"))
    assert "cannot get a login password" in out, out


def test_after_dockyard_login_every_command_needs_nothing_else(env, new_clients):
    """Issue 15 §2: no -r, no -u, no DOCKYARD_* variable; the registry and account of the last `dockyard login`."""
    c = new_clients(env, "current")
    assert not any(k.startswith("DOCKYARD_") and k != "DOCKYARD_CREDENTIALS_FILE" for k in c.env)
    _ok(c.dockyard("login", env.host, "-u", "admin", "--password-stdin", input=ADMIN_PASSWORD + "\n"), "login")
    projects = json.loads(_ok(c.dockyard("admin", "projects", "list", "--json"), "projects list").stdout)
    assert PROJECT in [p["name"] for p in projects]
    quota = json.loads(_ok(c.dockyard("quotas", "show", PROJECT, "--json"), "quotas show").stdout)
    assert quota["project"] == PROJECT
    assert isinstance(json.loads(_ok(c.dockyard("jobs", "list", "--json"), "jobs list").stdout), list)
    assert json.loads(_ok(c.dockyard("scanners", "list", "--json"), "scanners list").stdout) == []
    # piped, a table is whole tab-separated values
    lines = _ok(c.dockyard("admin", "projects", "list"), "projects list (table)").stdout.splitlines()
    assert lines[0] == "name\tpublic\tcreated_at" and any(line.startswith(f"{PROJECT}\tno\t") for line in lines[1:])
