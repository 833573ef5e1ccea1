"""Tag governance, retention and GC as real clients and the CLI see them (one token-auth `dockyard serve`).

(a) Tag-rule errors (403 DENIED) reach real clients: an immutable `v*` rule makes `skopeo copy` and `crane push` of a
    DIFFERENT image onto `gov/app:v1.0.0` fail with the rule's message on their stderr, while re-pushing the
    same digest succeeds; a deny rule `latest` stops `crane push …:latest` with a clear message.
(b) Retention end to end through `python -m dockyard policy retention …`: an ECR lifecycle policy (keep the
    last 2 `v*`, expire untagged older than 7 days), four `v*` pushes, `dry-run` explains every decision,
    `run --sync` deletes exactly the oldest two (checked with `crane ls`).
(c) `dockyard gc --dry-run` and `dockyard gc` (remote, admin credentials) complete, print their stats, and
    really reclaim an orphaned image's blobs (the server runs with `gc_grace_seconds = 1`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.e2e.auth_support import ADMIN, AuthClients, Directory, tiny_layout
from tests.e2e.conftest import MANIFEST_ACCEPT, assert_same_tree, fixture_tree, verify_layout
from tests.support.images import ImageFixture
from tests.support.server import ServerProcess, dockyard_env, run_dockyard
from tests.functional.helpers import API_CLIENT

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "governance-admin-pw"
GOV, RET, SCRATCH = "gov", "ret", "scratch"
SERVER_ENV = {
    "DOCKYARD_LOGIN_SLOWDOWN_AFTER": "1000",
    "DOCKYARD_LOGIN_LOCKOUT_AFTER": "2000",
    "DOCKYARD_GC_GRACE_SECONDS": "1",  # the minimum
}
ECR_POLICY = {"rules": [
    {"rulePriority": 1, "description": "Keep last 2 images tagged v*",
     "selection": {"tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan",
                   "countNumber": 2},
     "action": {"type": "expire"}},
    {"rulePriority": 2, "description": "Expire untagged images older than 7 days",
     "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                   "countNumber": 7},
     "action": {"type": "expire"}},
]}


class Env:
    def __init__(self, server: ServerProcess, tmp: Path):
        self.server = server
        self.tmp = tmp
        self.host = server.host
        self.http = httpx.Client(headers=API_CLIENT, base_url=server.url, trust_env=False, timeout=120, auth=(ADMIN, ADMIN_PASSWORD))
        self.clients = AuthClients(tmp / "clients", server)
        self.layouts: dict[str, tuple[Path, dict]] = {}

    def layout(self, seed: str) -> tuple[Path, dict]:
        """A distinct tiny image (tag ``v1`` in its layout) per seed."""
        if seed not in self.layouts:
            path = self.tmp / "layouts" / seed
            self.layouts[seed] = (path, tiny_layout(path, "v1", seed=f"governance-{seed}"))
        return self.layouts[seed]

    def digest(self, repo: str, ref: str) -> str | None:
        r = self.http.head(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
        assert r.status_code in (200, 404), f"HEAD {repo}:{ref}: {r.status_code}"
        return r.headers["Docker-Content-Digest"] if r.status_code == 200 else None

    def dockyard(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``python -m dockyard …`` with the admin's credentials in the environment."""
        env = dockyard_env({"DOCKYARD_URL": self.server.url, "DOCKYARD_USERNAME": ADMIN,
                            "DOCKYARD_PASSWORD": ADMIN_PASSWORD, "COLUMNS": "250", "NO_COLOR": "1",
                            "TERM": "dumb"})
        cmd = [sys.executable, "-m", "dockyard", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
        if check:
            assert proc.returncode == 0, (
                f"{' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n"
                f"{proc.stderr}\n--- server log ---\n{self.server.log_tail(40)}")
        return proc


@pytest.fixture(scope="module")
def genv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("governance")
    with run_dockyard(tmp / "data", auth_mode="token", admin_password=ADMIN_PASSWORD, extra_env=SERVER_ENV) as server:
        directory = Directory(server, ADMIN_PASSWORD)
        for project in (GOV, RET, SCRATCH):
            directory.create_project(project)
        directory.close()
        env = Env(server, tmp)
        for client in ("skopeo", "crane"):
            env.clients.login(client, ADMIN, ADMIN_PASSWORD)
        try:
            yield env
        finally:
            env.http.close()
            env.clients.cleanup_podman()


@pytest.fixture
def env(genv: Env):
    log = genv.server.log_path
    offset = log.stat().st_size
    yield genv
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    assert genv.server.alive(), f"dockyard died during the test; log:\n{text[-4000:]}"
    assert "Traceback" not in text, f"dockyard logged a traceback during the test:\n{text[-6000:]}"


def _skopeo_push(env: Env, seed: str, ref: str, *, check: bool = True) -> subprocess.CompletedProcess:
    path, _ = env.layout(seed)
    return env.clients.run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{path}:v1",
                           f"docker://{env.host}/{ref}", check=check)


def _crane_push(env: Env, seed: str, ref: str, *, check: bool = True) -> subprocess.CompletedProcess:
    path, _ = env.layout(seed)
    return env.clients.run("crane", "--insecure", "push", str(path), f"{env.host}/{ref}", check=check)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- (a) tag-rule errors reach real clients -----------------------------------------------------


def test_tag_rule_errors_reach_skopeo_and_crane(env):
    rules = {}
    for body in ({"kind": "immutable", "tag_pattern": "v*", "description": "releases never move"},
                 {"kind": "deny", "tag_pattern": "latest", "description": "no floating tags"}):
        r = env.http.post(f"/api/v1/projects/{GOV}/tag-rules", json=body)
        assert r.status_code == 201, f"POST tag-rules {body}: {r.status_code} {r.text}"
        rules[body["kind"]] = r.json()["id"]
    listed = env.http.get(f"/api/v1/projects/{GOV}/tag-rules").json()
    assert {(x["kind"], x["tag_pattern"]) for x in listed} == {("immutable", "v*"), ("deny", "latest")}

    repo = f"{GOV}/app"
    _, image_a = env.layout("a")
    _, image_b = env.layout("b")
    assert image_a["digest"] != image_b["digest"]
    _skopeo_push(env, "a", f"{repo}:v1.0.0")
    assert env.digest(repo, "v1.0.0") == image_a["digest"]

    # a DIFFERENT image onto the immutable tag: skopeo fails and shows the rule
    proc = _skopeo_push(env, "b", f"{repo}:v1.0.0", check=False)
    assert proc.returncode != 0, f"skopeo moved an immutable tag:\n{proc.stdout}\n{proc.stderr}"
    shown = _one_line(proc.stderr)
    print(f"\nskopeo stderr (immutable): {shown[-600:]}")
    for needle in ("tag v1.0.0 of gov/app is immutable", f"rule {rules['immutable']}: v* in **",
                   "re-pushing the same digest is allowed"):
        assert needle in shown, f"skopeo's stderr lacks {needle!r}:\n{proc.stderr}"

    # … and crane push
    proc = _crane_push(env, "b", f"{repo}:v1.0.0", check=False)
    assert proc.returncode != 0, f"crane moved an immutable tag:\n{proc.stdout}\n{proc.stderr}"
    shown = _one_line(proc.stderr)
    print(f"crane stderr (immutable): {shown[-600:]}")
    assert "DENIED" in shown, proc.stderr
    for needle in ("tag v1.0.0 of gov/app is immutable", f"rule {rules['immutable']}: v* in **"):
        assert needle in shown, f"crane's stderr lacks {needle!r}:\n{proc.stderr}"
    assert env.digest(repo, "v1.0.0") == image_a["digest"], "the immutable tag moved"

    # re-pushing the same digest is allowed, with either client
    _skopeo_push(env, "a", f"{repo}:v1.0.0")
    out = _crane_push(env, "a", f"{repo}:v1.0.0").stdout
    assert image_a["digest"] in out, out
    assert env.digest(repo, "v1.0.0") == image_a["digest"]

    # a deny rule: crane push …:latest is refused with a clear message, nothing is tagged
    proc = _crane_push(env, "a", f"{repo}:latest", check=False)
    assert proc.returncode != 0, f"crane pushed a denied tag:\n{proc.stdout}\n{proc.stderr}"
    shown = _one_line(proc.stderr)
    print(f"crane stderr (deny): {shown[-600:]}")
    assert "DENIED" in shown and "TAG_INVALID" not in shown, proc.stderr
    assert f"tag latest is not allowed in gov/app (rule {rules['deny']}: deny latest in **)" in shown, proc.stderr
    assert env.digest(repo, "latest") is None
    # other tags are unaffected by either rule
    _crane_push(env, "a", f"{repo}:main")
    assert env.digest(repo, "main") == image_a["digest"]


# --- (b) retention through the CLI ------------------------------------------------------------------


def test_retention_cli_end_to_end(env):
    repo = f"{RET}/app"
    pushed: dict[str, str] = {}
    for i in range(1, 5):
        tag = f"v{i}"
        _skopeo_push(env, f"ret-{i}", f"{repo}:{tag}")
        pushed[tag] = env.layout(f"ret-{i}")[1]["digest"]
        # One push after the other: push times (stored to the microsecond) are strictly increasing.
    assert len(set(pushed.values())) == 4
    assert sorted(env.clients.run("crane", "--insecure", "ls", f"{env.host}/{repo}").stdout.split()) == \
        ["v1", "v2", "v3", "v4"]

    policy_file = env.tmp / "ecr-policy.json"
    policy_file.write_text(json.dumps(ECR_POLICY, indent=2))
    created = json.loads(env.dockyard("policy", "retention", "create", RET, "keep-two", "--file", str(policy_file),
                                      "--json").stdout)
    assert created["format"] == "ecr" and created["name"] == "keep-two" and created["document"] == ECR_POLICY
    policy_id = str(created["id"])
    listed = env.dockyard("policy", "retention", "list", RET).stdout
    assert "keep-two" in listed and "ecr" in listed, listed

    # dry run: the table shows every decision with its reason; nothing is deleted
    table = env.dockyard("policy", "retention", "dry-run", RET, policy_id)
    print(f"\n--- dry-run table ---\n{table.stdout}{table.stderr}")
    text = _one_line(table.stdout)
    assert text.count("expired by rule 1") == 2 and text.count("kept by rule 1") == 2, table.stdout
    for tag in pushed:
        assert tag in text, table.stdout
    assert "expired 2" in _one_line(table.stderr), table.stderr
    report = json.loads(env.dockyard("policy", "retention", "dry-run", RET, policy_id, "--json").stdout)
    assert report["dry_run"] is True
    decisions = {d["tags"][0]: d for r in report["repositories"] for d in r["decisions"]}
    assert set(decisions) == set(pushed)
    for tag, digest in pushed.items():
        d = decisions[tag]
        assert d["digest"] == digest
        assert d["rule"] == 1, d
        assert d["action"] == ("expire" if tag in ("v1", "v2") else "keep"), d
        assert d["reason"].startswith("expired by rule 1" if tag in ("v1", "v2") else "kept by rule 1"), d
    assert report["summary"]["expired"] == 2 and report["summary"]["kept"] == 2, report["summary"]
    assert report["summary"]["deleted"] == 0
    assert sorted(env.clients.run("crane", "--insecure", "ls", f"{env.host}/{repo}").stdout.split()) == \
        ["v1", "v2", "v3", "v4"], "the dry run deleted something"

    # run --sync: exactly the oldest two go
    run = env.dockyard("policy", "retention", "run", RET, policy_id, "--sync")
    print(f"--- run --sync ---\n{run.stdout}{run.stderr}")
    assert _one_line(run.stdout).count("deleted") == 2, run.stdout
    assert "deleted 2" in _one_line(run.stderr), run.stderr
    tags = sorted(env.clients.run("crane", "--insecure", "ls", f"{env.host}/{repo}").stdout.split())
    assert tags == ["v3", "v4"], tags
    for tag in ("v1", "v2"):
        assert env.digest(repo, pushed[tag]) is None, f"{tag}'s manifest survived the run"
    for tag in ("v3", "v4"):
        assert env.digest(repo, tag) == pushed[tag]
    # a second run finds nothing more to delete
    again = json.loads(env.dockyard("policy", "retention", "run", RET, policy_id, "--sync", "--json").stdout)
    assert again["summary"]["expired"] == 0 and again["summary"]["deleted"] == 0, again["summary"]


# --- (c) garbage collection through the CLI ---------------------------------------------------------


def _on_disk(env: Env, digest: str) -> list[Path]:
    hexpart = digest.split(":", 1)[1]
    return [p for p in (Path(env.server.data_dir) / "storage" / "blobs").rglob("*") if p.is_file() and hexpart in str(p)]


def test_gc_cli_dry_run_and_run(env):
    # an orphan: push an image, delete its manifest; its two blobs are now unreferenced
    repo = f"{SCRATCH}/orphan"
    _skopeo_push(env, "orphan", f"{repo}:tmp")
    _, info = env.layout("orphan")
    orphan_blobs = [info["config"], *(x["digest"] for x in info["layers"])]
    r = env.http.delete(f"/v2/{repo}/manifests/{info['digest']}")
    assert r.status_code == 202, f"DELETE manifest: {r.status_code} {r.text}"
    orphaned_at = datetime.now(UTC)  # the orphans' blobs were last touched before this (same machine clock)
    # and something that must survive
    keep_repo = f"{SCRATCH}/keep"
    _skopeo_push(env, "keep", f"{keep_repo}:v1")
    for digest in orphan_blobs:
        assert _on_disk(env, digest), f"orphan blob {digest} not found under {env.server.data_dir}/storage/blobs"
    # Past gc_grace_seconds: poll the dry run (it deletes nothing) until its cutoff passes the orphaning.
    deadline = time.monotonic() + 60
    while datetime.fromisoformat(cutoff := json.loads(env.dockyard("gc", "--dry-run", "--json").stdout)["cutoff"]) <= orphaned_at:
        assert time.monotonic() < deadline, f"gc's cutoff {cutoff} never passed {orphaned_at.isoformat()}"
        time.sleep(0.25)

    dry = env.dockyard("gc", "--dry-run", "--url", env.server.url, "-u", ADMIN, "-p", ADMIN_PASSWORD)
    print(f"\n--- gc --dry-run ---\n{dry.stdout}")
    text = _one_line(dry.stdout)
    assert "garbage collection (dry run)" in text and "unreferenced blobs past grace" in text, dry.stdout
    candidates = int(re.search(r"unreferenced blobs past grace\W+(\d+)", text).group(1))
    assert candidates >= len(orphan_blobs), dry.stdout
    dry_json = json.loads(env.dockyard("gc", "--dry-run", "--json").stdout)
    assert dry_json["dry_run"] is True and dry_json["candidates"] >= len(orphan_blobs), dry_json
    for digest in orphan_blobs:  # a dry run deletes nothing
        assert _on_disk(env, digest), f"the dry run deleted {digest}"

    real = env.dockyard("gc")
    print(f"--- gc ---\n{real.stdout}")
    text = _one_line(real.stdout)
    assert "garbage collection" in text and "(dry run)" not in text, real.stdout
    deleted = int(re.search(r"blobs deleted\W+(\d+)", text).group(1))
    assert deleted >= len(orphan_blobs), real.stdout
    assert "bytes freed" in text
    # the orphan's blobs are gone from storage; the kept image is intact
    for digest in orphan_blobs:
        r = env.http.get(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 404, f"orphan blob {digest} still served after gc: {r.status_code}"
        assert not _on_disk(env, digest), f"orphan blob {digest} still on disk after gc: {_on_disk(env, digest)}"
    path, _ = env.layout("keep")
    image = ImageFixture(path=path, transport="oci", tag="v1", info=env.layout("keep")[1])
    pulled = env.tmp / "pulled-keep"
    env.clients.run("skopeo", "copy", "--src-tls-verify=false", f"docker://{env.host}/{keep_repo}:v1",
                    f"oci:{pulled}:v1")
    assert_same_tree(verify_layout(pulled, "v1"), fixture_tree(image))
    again = json.loads(env.dockyard("gc", "--json").stdout)
    assert again["dry_run"] is False and again["deleted"] == 0 and again["candidates"] == 0, again
