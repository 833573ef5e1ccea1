"""Supply-chain security as real clients see it, against one real `dockyard serve` (auth off on
/v2, the management API as `admin`), the vulnerability DB imported offline with
`dockyard vulndb update --from tests/fixtures/osv`, real syft, real cosign.

1. Scan on push of the Debian fixture: the report counts every dpkg package (88), the SPDX SBOM
   lists exactly those, and `oras discover` / `regctl artifact tree` see the SBOM referrer.
2. The vulnerability pull gate (block critical, unscanned block): `skopeo copy` and `crane pull` of
   the Log4Shell image fail with the DENIED reason on stderr, the clean image pulls, an allowlist
   entry lets the bad one through, a never-scanned image is refused.
3. require_signature with real cosign signatures in both layouts (bundle and `.sig` tag): signed
   images pull, unsigned and untrusted-key ones are refused, and `cosign verify` still works.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.auth_support import ADMIN, AuthClients, ClientFailed, Directory, find_digest, tiny_layout
from tests.support.images import debian_oci_layout
from tests.support.scan_images import FIXED, LOG4SHELL, VULNERABLE, java_app
from tests.support.server import REPO_ROOT, dockyard_env, run_dockyard
from tests.functional.helpers import API_CLIENT

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "supply-chain-admin-pw"
KEY_PASSWORD = "supply-chain-key-pw"
OSV = REPO_ROOT / "tests" / "fixtures" / "osv"
SPDX = "application/spdx+json"
COSIGN_SIGN = ("sign", "--yes", "--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry")
COSIGN_VERIFY = ("verify", "--insecure-ignore-tlog=true", "--allow-http-registry")


class Env:
    def __init__(self, server, root: Path):
        self.server = server
        self.host = server.host
        self.root = root
        self.api = httpx.Client(headers=API_CLIENT, base_url=server.url, trust_env=False, timeout=120, auth=(ADMIN, ADMIN_PASSWORD))
        self.clients = AuthClients(root / "clients", server)
        env = {k: v for k, v in self.clients.env.items() if not k.startswith(("COSIGN_", "SIGSTORE_", "TUF_"))}
        env["COSIGN_PASSWORD"] = KEY_PASSWORD
        env["TUF_ROOT"] = str(root / "tuf")  # never the user's ~/.sigstore
        self.clients.env = env
        self.work = root / "work"
        self.work.mkdir(exist_ok=True)

    def run(self, *args, **kwargs):
        return self.clients.run(*args, **kwargs)

    def cosign(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.clients.run("cosign", *args, check=check, cwd=self.work)

    # management API

    def project(self, name: str, **policy) -> None:
        r = self.api.post("/api/v1/projects", json={"name": name, "public": True})
        assert r.status_code == 201, r.text
        if policy:
            self.policy(name, **policy)

    def policy(self, project: str, **changes) -> dict:
        r = self.api.patch(f"/api/v1/projects/{project}/security", json=changes)
        assert r.status_code == 200, r.text
        return r.json()

    def scan(self, repo: str, ref: str) -> None:
        r = self.api.post(f"/api/v1/repositories/{repo}/artifacts/{ref}/scan")
        assert r.status_code == 202, r.text

    def wait_scanned(self, repo: str, ref: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.api.get(f"/api/v1/repositories/{repo}/artifacts/{ref}/scan")
            assert r.status_code == 200, r.text
            status = r.json()
            if status["scanned"] and not status["in_progress"]:
                return status
            assert time.monotonic() < deadline, f"{repo}:{ref} not scanned in {timeout} s: {status}\n{self.server.log_tail(40)}"
            time.sleep(0.25)

    # pushes and pulls

    def skopeo_push(self, oci_ref: str, repo: str, tag: str) -> str:
        digestfile = self.root / f"{repo.replace('/', '_')}-{tag}.digest"
        self.clients.skopeo_copy(oci_ref, f"docker://{self.host}/{repo}:{tag}", "--digestfile", str(digestfile))
        return digestfile.read_text().strip()

    def crane_push(self, repo: str, seed: str) -> str:
        """A fresh tiny image at host/repo:seed; returns its digest."""
        layout = self.root / f"layout-{seed}"
        tiny_layout(layout, seed, seed=seed)
        return find_digest(self.run("crane", "--insecure", "push", str(layout), f"{self.host}/{repo}:{seed}").stdout, "@")

    def pull_ok(self, repo: str, ref: str) -> None:
        sep = "@" if ref.startswith("sha256:") else ":"
        out = self.root / f"pull-{repo.replace('/', '_')}-{ref.replace(':', '_')}"
        self.clients.skopeo_copy(f"docker://{self.host}/{repo}{sep}{ref}", f"oci:{out}:x")
        self.run("crane", "--insecure", "pull", f"{self.host}/{repo}{sep}{ref}", f"{out}.tar")

    def pull_denied(self, repo: str, ref: str, *expect: str, crane: bool = True) -> None:
        """skopeo (and crane) must fail with every `expect` text on their output."""
        sep = "@" if ref.startswith("sha256:") else ":"
        out = self.root / f"denied-{repo.replace('/', '_')}-{ref.replace(':', '_')}"
        outputs = {"skopeo": self.clients.fails("skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                                f"docker://{self.host}/{repo}{sep}{ref}", f"oci:{out}:x")}
        if crane:
            outputs["crane"] = self.clients.fails("crane", "--insecure", "pull", f"{self.host}/{repo}{sep}{ref}", f"{out}.tar")
        for client, text in outputs.items():
            assert "DENIED" in text or "denied" in text, f"{client}: {text}"
            for e in expect:
                assert e in text, f"{client} output lacks {e!r}:\n{text}"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("supply-chain")
    data = root / "data"
    # vulndb update never creates a data directory: make it first, as `serve` or `admin migrate` does.
    subprocess.run([sys.executable, "-m", "dockyard", "admin", "migrate", "--data-dir", str(data)], env=dockyard_env(),
                   check=True, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    proc = subprocess.run([sys.executable, "-m", "dockyard", "vulndb", "update", "--data-dir", str(data), "--from", str(OSV)],
                          env=dockyard_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server_env = {"DOCKYARD_SECURITY_CACHE_SECONDS": "0"}
    with run_dockyard(data, admin_password=ADMIN_PASSWORD, extra_env=server_env) as server:
        e = Env(server, root)
        Directory(server, ADMIN_PASSWORD).close()  # admin can log in
        yield e
        e.api.close()
        e.clients.cleanup_podman()
        log = server.log_tail(100000)
        assert "Traceback" not in log, f"dockyard logged a traceback:\n{log[-6000:]}"


def test_debian_scan_on_push_sbom_and_referrer(env):
    image = debian_oci_layout()
    packages = image.info["packages"]
    assert packages == 88
    env.project("team", auto_scan=True)
    started = time.monotonic()
    digest = env.skopeo_push(image.ref, "team/debian", "bookworm")
    assert digest == image.digest
    pushed = time.monotonic()
    status = env.wait_scanned("team/debian", "bookworm")
    print(f"SCAN-TIME debian {time.monotonic() - pushed:.1f}s (push {pushed - started:.1f}s)")
    report = status["images"][0]["report"]
    assert report["package_count"] == packages, report
    sbom_digest = report["sbom_digest"]
    assert sbom_digest

    r = env.api.get("/api/v1/repositories/team/debian/artifacts/bookworm/sbom")
    assert r.status_code == 200 and r.headers["content-type"].startswith(SPDX), r.text[:300]
    doc = r.json()
    assert doc["spdxVersion"].startswith("SPDX-")
    deb = [p for p in doc["packages"]
           if any(ref.get("referenceType") == "purl" and ref.get("referenceLocator", "").startswith("pkg:deb/")
                  for ref in p.get("externalRefs", []))]
    assert len(deb) == packages, sorted(p["name"] for p in deb)
    assert {"dpkg", "bash", "libc6"} <= {p["name"] for p in deb}

    ref = f"{env.host}/team/debian:bookworm"
    discovered = json.loads(env.run("oras", "discover", "--plain-http", "--format", "json", ref).stdout)
    assert discovered["digest"] == digest
    assert [(r["artifactType"], r["digest"]) for r in discovered["referrers"]] == [(SPDX, sbom_digest)], discovered
    tree = json.loads(env.run("regctl", "artifact", "tree", "--format", "{{json .}}", ref).stdout)
    referrers = [(r["artifactType"], r["reference"]["Digest"], r["manifest"]["subject"]["digest"])
                 for r in tree.get("referrer") or []]
    assert referrers == [(SPDX, sbom_digest, digest)], tree


def test_vulnerability_gate_with_real_clients(env):
    env.project("prod", block_severity="critical", unscanned="block")
    bad = env.skopeo_push(java_app(env.root / "bad", VULNERABLE).oci_ref, "prod/app", "bad")
    good = env.skopeo_push(java_app(env.root / "good", FIXED).oci_ref, "prod/app", "good")
    fresh = env.skopeo_push(java_app(env.root / "fresh", FIXED, marker="fresh").oci_ref, "prod/app", "fresh")
    assert len({bad, good, fresh}) == 3

    # Never scanned: refused (and a scan is queued, so no crane here: it could race the scan).
    env.pull_denied("prod/app", "fresh", f"image {fresh} cannot be pulled", "has not been scanned",
                    "policy block-unscanned of project prod", crane=False)

    for tag in ("bad", "good"):
        env.scan("prod/app", tag)
    assert env.wait_scanned("prod/app", "bad")["summary"]["Critical"] == 1
    env.wait_scanned("prod/app", "good")

    env.pull_denied("prod/app", "bad", f"image {bad} has 1 critical vulnerability ({LOG4SHELL})",
                    "policy block-critical of project prod")
    env.pull_denied("prod/app", bad, f"1 critical vulnerability ({LOG4SHELL})")  # by digest too
    env.pull_ok("prod/app", "good")

    r = env.api.put(f"/api/v1/projects/prod/security/allowlist/{LOG4SHELL}", json={})
    assert r.status_code == 200, r.text
    env.pull_ok("prod/app", "bad")


@pytest.fixture(scope="module")
def keys(env):
    for prefix in ("trusted", "stranger"):
        env.cosign("generate-key-pair", "--output-key-prefix", prefix)
        assert (env.work / f"{prefix}.key").is_file() and (env.work / f"{prefix}.pub").is_file()
    return env.work


def test_require_signature_with_real_cosign(env, keys):
    env.project("signed")
    r = env.api.post("/api/v1/projects/signed/security/trusted-keys",
                     json={"name": "ci", "public_key": (keys / "trusted.pub").read_text()})
    assert r.status_code == 201, r.text
    repo = "signed/app"
    digests = {name: env.crane_push(repo, name) for name in ("a", "b", "c", "d")}
    ref = {name: f"{env.host}/{repo}@{d}" for name, d in digests.items()}

    # Signed before the gate is switched on: `cosign sign` GETs the unsigned image's manifest first,
    # which the gate refuses (see test_cosign_can_sign_while_signatures_are_required).
    env.cosign(*COSIGN_SIGN, "--key", "trusted.key", ref["a"])  # cosign v3 default: bundle referrer
    env.cosign(*COSIGN_SIGN, "--new-bundle-format=false", "--key", "trusted.key", ref["b"])  # `.sig` tag
    env.cosign(*COSIGN_SIGN, "--key", "stranger.key", ref["d"])
    env.policy("signed", require_signature=True)
    tags = env.run("crane", "--insecure", "ls", f"{env.host}/{repo}").stdout.split()
    assert f"sha256-{digests['b'][7:]}.sig" in tags and f"sha256-{digests['a'][7:]}.sig" not in tags, tags

    for name, layout in (("a", "bundle"), ("b", "tag")):
        r = env.api.get(f"/api/v1/repositories/{repo}/artifacts/{name}/signatures")
        assert r.status_code == 200, r.text
        status = r.json()
        assert status["verified"] is True and layout in status["layouts"], status
        env.pull_ok(repo, name)
    for name in ("c", "d"):
        r = env.api.get(f"/api/v1/repositories/{repo}/artifacts/{name}/signatures")
        assert r.json()["verified"] is False, r.text
        env.pull_denied(repo, name, f"image {digests[name]} is not signed by a key trusted by project signed",
                        "policy require-signature of project signed")

    # Signature artifacts stay readable with the gate on: cosign still verifies both layouts.
    out = env.cosign(*COSIGN_VERIFY, "--key", "trusted.pub", ref["a"])
    assert digests["a"] in out.stdout, out.stdout
    env.cosign(*COSIGN_VERIFY, "--new-bundle-format=false", "--key", "trusted.pub", ref["b"])
    assert env.cosign(*COSIGN_VERIFY, "--key", "trusted.pub", ref["d"], check=False).returncode != 0


def test_without_access_control_require_signature_holds_signers_too(env, keys):
    """auth_mode none cannot tell a signer from a deployer, so the gate holds everyone: sign before
    turning the policy on. (With access control, push-scoped reads may sign: test_cosign_interop.)"""
    env.project("late", require_signature=True)
    r = env.api.post("/api/v1/projects/late/security/trusted-keys",
                     json={"name": "ci", "public_key": (keys / "trusted.pub").read_text()})
    assert r.status_code == 201, r.text
    digest = env.crane_push("late/app", "v1")
    with pytest.raises(ClientFailed, match="not signed by a key trusted by project late"):
        env.cosign(*COSIGN_SIGN, "--key", "trusted.key", f"{env.host}/late/app@{digest}")
