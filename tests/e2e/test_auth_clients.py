"""Real clients against `dockyard serve` with access control on.

Token auth (one server for the module): a PRIVATE project and a PUBLIC project, a developer on
both, a guest on the private one, a robot. Every client (skopeo, crane, oras, regctl, podman,
helm) logs in, pushes to and pulls from the private project, with identical digests. Plus:
anonymous pull from the public project, anonymous push refused everywhere, guest pull-only,
wrong passwords refused, and the message a client shows when pushing into a missing project.

Basic auth (a second server): crane and skopeo push/pull with Basic credentials.

Every test runs its clients with a private HOME / DOCKER_CONFIG / REGISTRY_AUTH_FILE / regctl
config / podman storage / helm config (see auth_support.AuthClients), so nothing leaks between
tests or to the real user's configuration.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.auth_support import (
    AdminHttp,
    AuthClients,
    Directory,
    find_digest,
    tiny_chart,
    tiny_layout,
)
from tests.e2e.conftest import sha256_file, verify_layout
from tests.support.server import ServerProcess, run_dockyard

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "Adm1n-secret-pw"
PRIVATE = "secret"
PUBLIC = "shared"
MISSING = "nosuchproject"
DEV, DEV_PW = "dana", "dana-dev-password"
GUEST, GUEST_PW = "gus", "gus-guest-password"
# Failed logins from 127.0.0.1 must not lock the whole module out (the wrong-password test
# makes several on purpose); the throttle itself is tested elsewhere.
THROTTLE_ENV = {"DOCKYARD_LOGIN_SLOWDOWN_AFTER": "1000", "DOCKYARD_LOGIN_LOCKOUT_AFTER": "2000"}


@dataclass
class Env:
    server: ServerProcess
    directory: Directory
    admin: AdminHttp
    layout: Path
    image: dict
    robot: tuple[str, str] | None = None

    @property
    def host(self) -> str:
        return self.server.host


def _setup(server: ServerProcess, tmp: Path, *, robot: bool) -> Env:
    directory = Directory(server, ADMIN_PASSWORD)
    directory.create_project(PRIVATE, public=False)
    directory.create_project(PUBLIC, public=True)
    directory.create_user(DEV, DEV_PW)
    directory.create_user(GUEST, GUEST_PW)
    directory.add_member(PRIVATE, DEV, "developer")
    directory.add_member(PUBLIC, DEV, "developer")
    directory.add_member(PRIVATE, GUEST, "guest")
    env = Env(server, directory, AdminHttp(server, ADMIN_PASSWORD), tmp / "layout", {})
    env.image = tiny_layout(env.layout, "v1", seed="auth-e2e")
    if robot:
        env.robot = directory.create_robot(PRIVATE, "ci", ["pull", "push"])
    return env


@pytest.fixture(scope="module")
def token_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth-token")
    with run_dockyard(tmp / "data", auth_mode="token", admin_password=ADMIN_PASSWORD,
                      extra_env=THROTTLE_ENV) as server:
        env = _setup(server, tmp, robot=True)
        yield env
        env.admin.close()
        env.directory.close()


@pytest.fixture(scope="module")
def basic_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth-basic")
    with run_dockyard(tmp / "data", auth_mode="basic", admin_password=ADMIN_PASSWORD,
                      extra_env=THROTTLE_ENV) as server:
        env = _setup(server, tmp, robot=False)
        yield env
        env.admin.close()
        env.directory.close()


def _healthy(server: ServerProcess, offset: int) -> None:
    with open(server.log_path, "rb") as f:
        f.seek(offset)
        log = f.read().decode("utf-8", "replace")
    assert server.alive(), f"dockyard died during the test; log:\n{log[-4000:]}"
    assert "Traceback" not in log, f"dockyard logged a traceback during the test:\n{log[-6000:]}"


@pytest.fixture
def env(token_env: Env):
    offset = os.path.getsize(token_env.server.log_path)
    yield token_env
    _healthy(token_env.server, offset)


@pytest.fixture
def benv(basic_env: Env):
    offset = os.path.getsize(basic_env.server.log_path)
    yield basic_env
    _healthy(basic_env.server, offset)


@pytest.fixture
def new_clients(tmp_path: Path):
    """new_clients(env, name) -> AuthClients with a fresh private configuration."""
    made: list[AuthClients] = []

    def make(env: Env, name: str = "c") -> AuthClients:
        c = AuthClients(tmp_path / name, env.server)
        made.append(c)
        return c

    yield make
    for c in made:
        c.cleanup_podman()


def _logged_in(new_clients, env: Env, client: str, user: str = DEV, password: str = DEV_PW,
               name: str | None = None) -> AuthClients:
    c = new_clients(env, name or f"{client}-{user}")
    c.login(client, user, password)
    return c


def _layout_digest(layout: Path, tag: str) -> str:
    return verify_layout(layout, tag).top


def _crane_push(c: AuthClients, env: Env, ref: str) -> str:
    out = c.run("crane", "--insecure", "push", str(env.layout), ref).stdout
    return find_digest(out, "@")


def _assert_private_config(c: AuthClients, path: Path, host: str) -> None:
    text = path.read_text()
    assert host in text, f"login did not store credentials for {host} in the private {path}: {text}"


# --- every client: login, push, pull (private project) ---------------------------------------


def test_skopeo_login_push_pull(env, new_clients, tmp_path):
    c = _logged_in(new_clients, env, "skopeo")
    _assert_private_config(c, c.auth_file, env.host)
    ref = f"docker://{env.host}/{PRIVATE}/skopeo:v1"
    digestfile = tmp_path / "pushed.digest"
    c.skopeo_copy(f"oci:{env.layout}:v1", ref, "--digestfile", str(digestfile))
    pushed = digestfile.read_text().strip()
    assert pushed == env.image["digest"]
    served, _ = env.admin.manifest(f"{PRIVATE}/skopeo", "v1")
    assert served == pushed
    out = tmp_path / "pulled"
    c.skopeo_copy(ref, f"oci:{out}:v1")
    assert _layout_digest(out, "v1") == pushed
    inspected = json.loads(c.run("skopeo", "inspect", "--tls-verify=false", ref).stdout)
    assert inspected["Digest"] == pushed


def test_crane_login_push_pull(env, new_clients, tmp_path):
    c = _logged_in(new_clients, env, "crane")
    _assert_private_config(c, c.docker_config, env.host)
    ref = f"{env.host}/{PRIVATE}/crane:v1"
    pushed = _crane_push(c, env, ref)
    assert pushed == env.image["digest"]
    assert env.admin.manifest(f"{PRIVATE}/crane", "v1")[0] == pushed
    out = tmp_path / "pulled"
    c.run("crane", "--insecure", "pull", "--format", "oci", ref, str(out))
    assert verify_layout(out).top == pushed
    assert c.run("crane", "--insecure", "digest", ref).stdout.strip() == pushed


def test_oras_login_push_pull(env, new_clients, tmp_path):
    c = _logged_in(new_clients, env, "oras")
    _assert_private_config(c, c.docker_config, env.host)
    work = tmp_path / "files"
    work.mkdir()
    payload = work / "notes.txt"
    payload.write_bytes(b"dockyard auth e2e: oras artifact\n" * 100)
    ref = f"{env.host}/{PRIVATE}/oras:v1"
    out = c.run("oras", "push", "--plain-http", "--artifact-type", "application/vnd.dockyard.test",
                "--format", "json", ref, "notes.txt:text/plain", cwd=work).stdout
    pushed = json.loads(out)["digest"]
    assert env.admin.manifest(f"{PRIVATE}/oras", "v1")[0] == pushed
    assert c.run("oras", "resolve", "--plain-http", ref).stdout.strip() == pushed
    dest = tmp_path / "pulled"
    pulled = c.run("oras", "pull", "--plain-http", "-o", str(dest), ref).stdout
    assert pushed in pulled, pulled
    assert (dest / "notes.txt").read_bytes() == payload.read_bytes()


def test_regctl_login_push_pull(env, new_clients, tmp_path):
    c = _logged_in(new_clients, env, "regctl")
    regctl_config = Path(c.env["REGCTL_CONFIG"])
    _assert_private_config(c, regctl_config, env.host)
    ref = f"{env.host}/{PRIVATE}/regctl:v1"
    c.run("regctl", "image", "copy", f"ocidir://{env.layout}:v1", ref)
    pushed = c.run("regctl", "image", "digest", ref).stdout.strip()
    assert pushed == env.image["digest"]
    assert env.admin.manifest(f"{PRIVATE}/regctl", "v1")[0] == pushed
    out = tmp_path / "pulled"
    c.run("regctl", "image", "copy", ref, f"ocidir://{out}:v1")
    assert _layout_digest(out, "v1") == pushed


def test_podman_login_push_pull(env, new_clients, tmp_path):
    c = _logged_in(new_clients, env, "podman")
    _assert_private_config(c, c.auth_file, env.host)
    ref = f"{env.host}/{PRIVATE}/podman:v1"
    c.run("podman", "pull", "--quiet", f"oci:{env.layout}:v1")
    image_id = c.run("podman", "images", "--quiet", "--no-trunc").stdout.split()[0]
    digestfile = tmp_path / "pushed.digest"
    c.run("podman", "push", "--quiet", "--tls-verify=false", "--digestfile", str(digestfile), image_id, ref)
    pushed = digestfile.read_text().strip()
    assert env.admin.manifest(f"{PRIVATE}/podman", "v1")[0] == pushed
    c.run("podman", "rmi", "--all", "--force")
    c.run("podman", "pull", "--quiet", "--tls-verify=false", ref)
    info = json.loads(c.run("podman", "image", "inspect", ref).stdout)[0]
    assert info["Digest"] == pushed
    assert f"{env.host}/{PRIVATE}/podman@{pushed}" in info["RepoDigests"]


def test_helm_login_push_pull(env, new_clients, tmp_path):
    c = _logged_in(new_clients, env, "helm")
    _assert_private_config(c, c.helm_registry_config, env.host)
    chart = tiny_chart(tmp_path / "src")
    packaged_dir = tmp_path / "packaged"
    packaged_dir.mkdir()
    c.run("helm", "package", str(chart), "-d", str(packaged_dir))
    tgz = packaged_dir / "authchart-0.1.0.tgz"
    assert tgz.is_file(), list(packaged_dir.iterdir())
    pushed_out = c.run("helm", "push", str(tgz), f"oci://{env.host}/{PRIVATE}", "--plain-http")
    text = pushed_out.stdout + pushed_out.stderr
    pushed = find_digest(text, "Digest:")
    assert f"{env.host}/{PRIVATE}/authchart:0.1.0" in text, text
    manifest_digest, raw = env.admin.manifest(f"{PRIVATE}/authchart", "0.1.0")
    assert manifest_digest == pushed
    layer = json.loads(raw)["layers"][0]
    assert layer["digest"] == sha256_file(tgz)
    dest = tmp_path / "pulled"
    dest.mkdir()
    pulled_out = c.run("helm", "pull", f"oci://{env.host}/{PRIVATE}/authchart", "--version", "0.1.0",
                       "--plain-http", "-d", str(dest))
    assert find_digest(pulled_out.stdout + pulled_out.stderr, "Digest:") == pushed
    assert (dest / "authchart-0.1.0.tgz").read_bytes() == tgz.read_bytes()


def test_robot_account_push_pull(env, new_clients, tmp_path):
    robot_name, secret = env.robot
    assert robot_name == f"robot${PRIVATE}+ci"
    c = _logged_in(new_clients, env, "crane", robot_name, secret, name="robot")
    ref = f"{env.host}/{PRIVATE}/robot:v1"
    pushed = _crane_push(c, env, ref)
    assert env.admin.manifest(f"{PRIVATE}/robot", "v1")[0] == pushed
    out = tmp_path / "pulled"
    c.run("crane", "--insecure", "pull", "--format", "oci", ref, str(out))
    assert verify_layout(out).top == pushed
    # a project robot has no rights elsewhere
    message = c.fails("crane", "--insecure", "push", str(env.layout), f"{env.host}/{PUBLIC}/robot:v1")
    assert "may not push" in message, message
    env.admin.absent(f"{PUBLIC}/robot", "v1")


# --- anonymous ------------------------------------------------------------------------------


def test_anonymous_pull_from_public_project(env, new_clients, tmp_path):
    dev = _logged_in(new_clients, env, "crane", name="dev")
    pushed = _crane_push(dev, env, f"{env.host}/{PUBLIC}/anon:v1")
    ref = f"{env.host}/{PUBLIC}/anon:v1"
    anon = new_clients(env, "anonymous")
    # skopeo, without login
    out = tmp_path / "skopeo-pulled"
    anon.skopeo_copy(f"docker://{ref}", f"oci:{out}:v1")
    assert _layout_digest(out, "v1") == pushed
    # crane, without login
    assert anon.run("crane", "--insecure", "digest", ref).stdout.strip() == pushed
    out2 = tmp_path / "crane-pulled"
    anon.run("crane", "--insecure", "pull", "--format", "oci", ref, str(out2))
    assert verify_layout(out2).top == pushed
    assert "auths" not in anon.docker_config.read_text() or env.host not in anon.docker_config.read_text()


def test_anonymous_cannot_pull_private(env, new_clients):
    dev = _logged_in(new_clients, env, "crane", name="dev")
    _crane_push(dev, env, f"{env.host}/{PRIVATE}/hidden:v1")
    anon = new_clients(env, "anonymous")
    message = anon.fails("crane", "--insecure", "digest", f"{env.host}/{PRIVATE}/hidden:v1")
    assert "authentication required" in message, message
    message = anon.fails("skopeo", "inspect", "--tls-verify=false", "--raw",
                         f"docker://{env.host}/{PRIVATE}/hidden:v1")
    assert "authentication required" in message, message


@pytest.mark.parametrize("project", [PRIVATE, PUBLIC])
@pytest.mark.parametrize("client", ["crane", "skopeo"])
def test_anonymous_push_refused(env, new_clients, client, project):
    anon = new_clients(env, "anonymous")
    repo = f"{project}/anon-{client}"
    if client == "crane":
        message = anon.fails("crane", "--insecure", "push", str(env.layout), f"{env.host}/{repo}:v1")
    else:
        message = anon.fails("skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                             f"oci:{env.layout}:v1", f"docker://{env.host}/{repo}:v1")
    # The server's reason, as each client shows it. crane asks for the private tag first, with a HEAD,
    # which has no body to show; into the public project it gets as far as the upload.
    expected = {
        ("crane", PRIVATE): f"HEAD http://{env.host}/v2/{repo}/manifests/v1: unexpected status code 401 Unauthorized",
        ("crane", PUBLIC): f"UNAUTHORIZED: authentication required to push {repo}",
        ("skopeo", PRIVATE): "unauthorized: authentication required",
        ("skopeo", PUBLIC): f"unauthorized: authentication required to push {repo}",
    }[(client, project)]
    assert expected in message, message
    env.admin.absent(repo, "v1")


# --- roles, passwords, messages ---------------------------------------------------------------


@pytest.mark.parametrize("client", ["crane", "skopeo"])
def test_guest_can_pull_not_push(env, new_clients, tmp_path, client):
    dev = _logged_in(new_clients, env, "crane", name="dev")
    pushed = _crane_push(dev, env, f"{env.host}/{PRIVATE}/for-guest:v1")
    guest = _logged_in(new_clients, env, client, GUEST, GUEST_PW, name="guest")
    ref = f"{env.host}/{PRIVATE}/for-guest:v1"
    target = f"{env.host}/{PRIVATE}/by-guest-{client}:v1"
    out = tmp_path / "pulled"
    if client == "crane":
        assert guest.run("crane", "--insecure", "digest", ref).stdout.strip() == pushed
        guest.run("crane", "--insecure", "pull", "--format", "oci", ref, str(out))
        assert verify_layout(out).top == pushed
        message = guest.fails("crane", "--insecure", "push", str(env.layout), target)
    else:
        guest.skopeo_copy(f"docker://{ref}", f"oci:{out}:v1")
        assert _layout_digest(out, "v1") == pushed
        message = guest.fails("skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                              f"oci:{env.layout}:v1", f"docker://{target}")
    assert f"user {GUEST} may not push" in message, message
    env.admin.absent(f"{PRIVATE}/by-guest-{client}", "v1")


@pytest.mark.parametrize("client", ["skopeo", "podman", "oras", "helm", "crane", "regctl"])
def test_wrong_password_refused(env, new_clients, client):
    c = new_clients(env, f"wrong-{client}")
    ref = f"{env.host}/{PRIVATE}/wrongpw-{client}:v1"
    proc = c.login(client, DEV, "not-the-password", check=False)
    login_text = proc.stdout + proc.stderr
    if client in ("skopeo", "podman"):
        assert proc.returncode != 0
        assert "invalid username/password" in login_text, login_text
    elif client in ("oras", "helm"):
        assert proc.returncode != 0
        assert "unauthorized: invalid username or password" in login_text, login_text
    else:
        # crane stores credentials without checking them; regctl warns and stores them:
        # the next request must fail with a clear message.
        if client == "crane":
            message = c.fails("crane", "--insecure", "push", str(env.layout), ref)
            assert "invalid username or password" in message, message
        else:
            assert "unauthorized" in login_text.lower(), login_text
            message = c.fails("regctl", "image", "copy", f"ocidir://{env.layout}:v1", ref)
            assert "unauthorized" in message.lower(), message
    env.admin.absent(f"{PRIVATE}/wrongpw-{client}", "v1")


@pytest.mark.parametrize("client", ["crane", "skopeo"])
def test_push_into_missing_project_says_so(env, new_clients, client):
    c = _logged_in(new_clients, env, client)
    repo = f"{MISSING}/img"
    if client == "crane":
        message = c.fails("crane", "--insecure", "push", str(env.layout), f"{env.host}/{repo}:v1")
    else:
        message = c.fails("skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                          f"oci:{env.layout}:v1", f"docker://{env.host}/{repo}:v1")
    assert f"project {MISSING} does not exist" in message, message
    env.admin.absent(repo, "v1")


# --- Basic auth mode --------------------------------------------------------------------------


def test_basic_mode_challenge(benv):
    import httpx

    r = httpx.get(benv.server.url + "/v2/", trust_env=False)
    assert r.status_code == 401
    assert r.headers.get("WWW-Authenticate", "").startswith("Basic "), r.headers


@pytest.mark.parametrize("client", ["crane", "skopeo"])
def test_basic_mode_push_pull(benv, new_clients, tmp_path, client):
    c = _logged_in(new_clients, benv, client)
    ref = f"{benv.host}/{PRIVATE}/basic-{client}:v1"
    out = tmp_path / "pulled"
    if client == "crane":
        pushed = _crane_push(c, benv, ref)
        c.run("crane", "--insecure", "pull", "--format", "oci", ref, str(out))
        assert verify_layout(out).top == pushed
    else:
        digestfile = tmp_path / "pushed.digest"
        c.skopeo_copy(f"oci:{benv.layout}:v1", f"docker://{ref}", "--digestfile", str(digestfile))
        pushed = digestfile.read_text().strip()
        c.skopeo_copy(f"docker://{ref}", f"oci:{out}:v1")
        assert _layout_digest(out, "v1") == pushed
    assert pushed == benv.image["digest"]
    assert benv.admin.manifest(f"{PRIVATE}/basic-{client}", "v1")[0] == pushed
    # anonymous: public pull works, push does not
    anon = new_clients(benv, "anonymous")
    pub = f"{benv.host}/{PUBLIC}/basic-{client}:v1"
    _crane_push(_logged_in(new_clients, benv, "crane", name="pub-dev"), benv, pub)
    assert anon.run("crane", "--insecure", "digest", pub).stdout.strip() == pushed
    message = anon.fails("crane", "--insecure", "push", str(benv.layout), f"{benv.host}/{PUBLIC}/basic-anon:v1")
    assert "authentication required" in message, message
    benv.admin.absent(f"{PUBLIC}/basic-anon", "v1")
