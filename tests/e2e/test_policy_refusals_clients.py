"""Policy refusals as podman, skopeo and crane see them (issue 15, §5), against one token-auth `dockyard serve`.

Every policy refusal — an immutable tag overwritten, a deny rule, a require rule, a project quota — is
`403 DENIED` with one message naming the cause. Each client must exit non-zero and print that message
once; podman in particular must not retry the push in other manifest formats (it does after a `400`
`TAG_INVALID` / `MANIFEST_INVALID`) and end with an unrelated error. The refusals are also on the audit
log, one aggregated row per (actor, action, object, reason).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.auth_support import ADMIN, AuthClients, Directory, tiny_layout
from tests.functional.helpers import API_CLIENT
from tests.support.server import ServerProcess, run_dockyard

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "refusals-admin-pw"
CLIENTS = ("podman", "skopeo", "crane")
# Signs that a client went on after the refusal (format fallbacks, follow-up errors).
UNRELATED = ("TAG_INVALID", "MANIFEST_INVALID", "manifest invalid", "BLOB_UNKNOWN", "NAME_UNKNOWN", "unsupported")


class Env:
    def __init__(self, server: ServerProcess, tmp: Path):
        self.server = server
        self.host = server.host
        self.tmp = tmp
        self.http = httpx.Client(headers=API_CLIENT, base_url=server.url, trust_env=False, timeout=120,
                                 auth=(ADMIN, ADMIN_PASSWORD))
        self.clients = AuthClients(tmp / "clients", server)
        self.layouts: dict[str, Path] = {}

    def layout(self, seed: str) -> Path:
        if seed not in self.layouts:
            path = self.tmp / "layouts" / seed
            tiny_layout(path, "v1", seed=f"refusals-{seed}")
            self.layouts[seed] = path
        return self.layouts[seed]

    def push(self, client: str, seed: str, ref: str, *, check: bool = True) -> subprocess.CompletedProcess:
        path, target = self.layout(seed), f"{self.host}/{ref}"
        if client == "skopeo":
            return self.clients.run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{path}:v1", f"docker://{target}",
                                    check=check)
        if client == "crane":
            return self.clients.run("crane", "--insecure", "push", str(path), target, check=check)
        # podman pushes from its own storage: load the layout under a local name first.
        local = f"localhost/refusals/{seed}:v1"
        self.clients.run("podman", "pull", "--quiet", f"oci:{path}:v1")
        image_id = self.clients.run("podman", "images", "--quiet", "--no-trunc", "--filter",
                                    f"reference=*{seed}*").stdout.split()
        source = image_id[0] if image_id else local
        return self.clients.run("podman", "push", "--tls-verify=false", source, f"docker://{target}", check=check)

    def rule(self, kind: str, tag: str, repository: str) -> int:
        r = self.http.post("/api/v1/projects/pol/tag-rules",
                           json={"kind": kind, "tag_pattern": tag, "repository_pattern": repository})
        assert r.status_code == 201, r.text
        return r.json()["id"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refusals")
    with run_dockyard(tmp / "data", auth_mode="token", admin_password=ADMIN_PASSWORD,
                      extra_env={"DOCKYARD_LOGIN_SLOWDOWN_AFTER": "1000", "DOCKYARD_LOGIN_LOCKOUT_AFTER": "2000"}) as server:
        directory = Directory(server, ADMIN_PASSWORD)
        for project in ("pol", "quota", "gated"):
            directory.create_project(project)
        directory.create_user("puller", "puller-password-1")
        directory.add_member("gated", "puller", "guest")
        directory.close()
        env = Env(server, tmp)
        for client in CLIENTS:
            env.clients.login(client, ADMIN, ADMIN_PASSWORD)
        try:
            yield env
        finally:
            env.http.close()
            env.clients.cleanup_podman()


def _pull(clients: AuthClients, client: str, ref: str, out: Path) -> subprocess.CompletedProcess:
    if client == "podman":
        return clients.run("podman", "pull", "--tls-verify=false", ref, check=False)
    if client == "skopeo":
        return clients.run("skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}:v1", check=False)
    return clients.run("crane", "--insecure", "pull", "--format", "oci", ref, str(out), check=False)


def _refused_once(proc: subprocess.CompletedProcess, message: str) -> None:
    shown = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, f"the push succeeded:\n{proc.stdout}\n{proc.stderr}"
    assert shown.count(message) == 1, f"expected {message!r} exactly once:\n{proc.stdout}\n{proc.stderr}"
    for sign in UNRELATED:
        assert sign not in shown, f"the client went on after the refusal ({sign!r}):\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("client", CLIENTS)
def test_every_policy_refusal_is_one_clean_message(env, client):
    if "immutable" not in env.__dict__:
        env.immutable = env.rule("immutable", "v*", "imm")
        env.deny = env.rule("deny", "latest", "deny")
        env.require = env.rule("require", "re:v[0-9]+", "req")
        r = env.http.put("/api/v1/projects/quota/quota", json={"quota_bytes": 1})
        assert r.status_code == 200, r.text
        env.push("skopeo", "a", "pol/imm:v1")

    proc = env.push(client, "b", "pol/imm:v1", check=False)
    _refused_once(proc, f"tag v1 of pol/imm is immutable (rule {env.immutable}: v* in imm)")
    proc = env.push(client, "a", "pol/deny:latest", check=False)
    _refused_once(proc, f"tag latest is not allowed in pol/deny (rule {env.deny}: deny latest in deny)")
    proc = env.push(client, "a", "pol/req:feature", check=False)
    _refused_once(proc, f"tag feature of pol/req must match one of the required patterns (rule {env.require}: require re:v[0-9]+ in req)")
    proc = env.push(client, "a", "quota/app:v1", check=False)
    _refused_once(proc, "quota of project quota exceeded")

    # Nothing was tagged, and each refusal is one audit row, however many requests the clients made.
    for repo, tag in (("pol/deny", "latest"), ("pol/req", "feature"), ("quota/app", "v1")):
        r = env.http.head(f"/v2/{repo}/manifests/{tag}")
        assert r.status_code == 404, (repo, tag, r.status_code)
    r = env.http.get("/api/v1/audit", params={"outcome": "failure", "actor": ADMIN, "page_size": 100})
    rows = [e for e in r.json() if e["action"] == "manifest.push" and e["object"] == "pol/deny:latest"]
    assert len(rows) == 1 and rows[0]["detail"]["count"] >= 1 + CLIENTS.index(client), rows


def test_a_pull_gate_refusal_is_one_clean_message(env, tmp_path):
    """A project that requires signatures (and trusts no key) refuses pulls of its unsigned images to a guest."""
    r = env.http.patch("/api/v1/projects/gated/security", json={"require_signature": True})
    assert r.status_code == 200, r.text
    env.push("skopeo", "a", "gated/app:v1")
    guest = AuthClients(tmp_path / "guest", env.server)
    try:
        for client in CLIENTS:
            guest.login(client, "puller", "puller-password-1")
            proc = _pull(guest, client, f"{env.host}/gated/app:v1", tmp_path / f"{client}-out")
            _refused_once(proc, "requires signatures but trusts no public key")
    finally:
        guest.cleanup_podman()
    r = env.http.get("/api/v1/audit", params={"outcome": "failure", "actor": "puller", "page_size": 100})
    rows = [e for e in r.json() if e["action"] == "manifest.pull"]
    assert [row["object"] for row in rows] == ["gated/app:v1"] and rows[0]["detail"]["count"] >= len(CLIENTS), rows
