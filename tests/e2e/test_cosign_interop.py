"""cosign interoperability against a real `dockyard serve`, with the real cosign (Go-built by
scripts/install-tools.sh), fully offline: key-based signing, no transparency log, no TUF.

- cosign signs (bundle/referrers layout, cosign v3's default, and the `.sig` tag layout) →
  `dockyard verify --key` accepts it; an unsigned image and an untrusted key are refused.
- `dockyard generate-key-pair` + `dockyard sign` (both layouts) → `cosign verify --key` accepts it,
  and cosign reads Dockyard's key file (and Dockyard cosign's).
- the same through token auth after `dockyard login`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.auth_support import AuthClients, Directory, find_digest, tiny_layout
from tests.support.server import run_dockyard
from tests.functional.helpers import API_CLIENT

pytestmark = pytest.mark.e2e

KEY_PASSWORD = "interop-key-pw"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ADMIN_PASSWORD = "Adm1n-cosign-interop"
# Offline signing with a key: no Rekor upload, no signing config fetched from TUF.
COSIGN_SIGN = ("sign", "--yes", "--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry")
COSIGN_VERIFY = ("verify", "--insecure-ignore-tlog=true", "--allow-http-registry")


def _signing_cli() -> list[str]:
    """`dockyard sign|verify|generate-key-pair` once registered on the top-level app; until then
    the same commands from their own module."""
    from dockyard.cli import app

    names = {c.name for c in app.registered_commands}
    if {"sign", "verify", "generate-key-pair"} <= names:
        return [sys.executable, "-m", "dockyard"]
    return [sys.executable, "-m", "dockyard.cli.signing"]


class SignClients(AuthClients):
    def __init__(self, root: Path, server):
        super().__init__(root, server)
        self.env = {k: v for k, v in self.env.items() if not k.startswith(("DOCKYARD_", "COSIGN_", "SIGSTORE_", "TUF_"))}
        self.env["COSIGN_PASSWORD"] = KEY_PASSWORD
        self.env["TUF_ROOT"] = str(root / "tuf")  # never the user's ~/.sigstore
        self.env["DOCKYARD_CREDENTIALS_FILE"] = str(root / "dockyard-credentials.json")
        self.work = root / "work"
        self.work.mkdir(exist_ok=True)
        self._cli = _signing_cli()

    def dockyard(self, *args: str, check: bool = True, input: str | None = None,
                 main: bool = False) -> subprocess.CompletedProcess:
        cmd = ([sys.executable, "-m", "dockyard"] if main else self._cli) + list(args)
        proc = subprocess.run(cmd, env=self.env, cwd=self.work, capture_output=True, text=True, timeout=300,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                                 f"{self._log(0)[-3000:]}")
        return proc

    def cosign(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("cosign", *args, check=check, cwd=self.work)

    def push(self, repo: str, seed: str) -> tuple[str, str]:
        """A fresh small image at host/repo:v1; returns (tag ref, digest ref)."""
        layout = self.root / f"layout-{seed}"
        tiny_layout(layout, "v1", seed=seed)
        ref = f"{self.host}/{repo}"
        digest = find_digest(self.run("crane", "--insecure", "push", str(layout), f"{ref}:v1").stdout, "@")
        return f"{ref}:v1", f"{ref}@{digest}"

    def key_pair(self, prefix: str, tool: str) -> tuple[Path, Path]:
        if tool == "cosign":
            self.cosign("generate-key-pair", "--output-key-prefix", prefix)
        else:
            self.dockyard("generate-key-pair", "--output-key-prefix", prefix)
        key, pub = self.work / f"{prefix}.key", self.work / f"{prefix}.pub"
        assert key.is_file() and pub.is_file()
        return key, pub


@pytest.fixture(scope="module")
def sc(tmp_path_factory, dockyard):
    c = SignClients(tmp_path_factory.mktemp("cosign-interop"), dockyard)
    c.key_pair("cosign", "cosign")
    c.key_pair("dockyard", "dockyard")
    c.key_pair("stranger", "cosign")
    yield c
    c.cleanup_podman()


def _verify_ok(sc, ref: str, pub: str, layout: str) -> None:
    proc = sc.dockyard("verify", "--key", pub, "--json", ref)
    verdict = json.loads(proc.stdout)
    assert verdict["verified"] and verdict["verified_layouts"] == [layout], verdict
    assert proc.returncode == 0


def _verify_refused(sc, ref: str, pub: str, expect: str) -> str:
    proc = sc.dockyard("verify", "--key", pub, ref, check=False)
    assert proc.returncode == 1, f"expected verification to fail:\n{proc.stdout}\n{proc.stderr}"
    assert "Verification failed" in proc.stderr and expect in proc.stderr, proc.stderr
    return proc.stderr


def test_cosign_bundle_signature_verified_by_dockyard(sc, registry):
    tag_ref, digest_ref = sc.push("interop/cosign-bundle", "cosign-bundle")
    sc.cosign(*COSIGN_SIGN, "--key", "cosign.key", digest_ref)
    digest = digest_ref.split("@")[1]
    referrers = registry.referrers("interop/cosign-bundle", digest)["manifests"]
    assert [r["artifactType"] for r in referrers] == [BUNDLE_TYPE], referrers
    assert not [t for t in registry.tags("interop/cosign-bundle") if t.endswith(".sig")]
    _verify_ok(sc, tag_ref, "cosign.pub", "bundle")
    _verify_refused(sc, tag_ref, "stranger.pub", "not signed by any trusted key")
    sc.cosign(*COSIGN_VERIFY, "--key", "cosign.pub", digest_ref)  # cosign agrees


def test_cosign_tag_layout_signature_verified_by_dockyard(sc, registry):
    tag_ref, digest_ref = sc.push("interop/cosign-tag", "cosign-tag")
    sc.cosign(*COSIGN_SIGN, "--new-bundle-format=false", "--key", "cosign.key", digest_ref)
    digest = digest_ref.split("@")[1]
    assert f"sha256-{digest[7:]}.sig" in registry.tags("interop/cosign-tag")
    assert registry.referrers("interop/cosign-tag", digest)["manifests"] == []
    _verify_ok(sc, tag_ref, "cosign.pub", "tag")
    _verify_refused(sc, digest_ref, "stranger.pub", "not signed by any trusted key")


def test_unsigned_image_is_refused(sc, registry):
    tag_ref, digest_ref = sc.push("interop/unsigned", "unsigned")
    _verify_refused(sc, tag_ref, "cosign.pub", "no signatures found")
    assert sc.cosign(*COSIGN_VERIFY, "--key", "cosign.pub", digest_ref, check=False).returncode != 0


def test_image_signed_by_untrusted_key_is_refused(sc, registry):
    tag_ref, digest_ref = sc.push("interop/stranger", "stranger")
    sc.cosign(*COSIGN_SIGN, "--key", "stranger.key", digest_ref)
    sc.cosign(*COSIGN_SIGN, "--new-bundle-format=false", "--key", "stranger.key", digest_ref)
    stderr = _verify_refused(sc, tag_ref, "cosign.pub", "not signed by any trusted key")
    assert "bundle signature" in stderr and "tag signature" in stderr
    verdict = json.loads(sc.dockyard("verify", "--key", "stranger.pub", "--json", tag_ref).stdout)
    assert verdict["verified_layouts"] == ["bundle", "tag"]


@pytest.mark.parametrize("layout", ["bundle", "tag"])
def test_dockyard_signature_verified_by_cosign(sc, registry, layout):
    repo = f"interop/dockyard-{layout}"
    tag_ref, digest_ref = sc.push(repo, f"dockyard-{layout}")
    extra = ["--tag-layout"] if layout == "tag" else []
    sc.dockyard("sign", "--key", "dockyard.key", *extra, tag_ref)
    digest = digest_ref.split("@")[1]
    referrers = registry.referrers(repo, digest)["manifests"]
    sig_tags = [t for t in registry.tags(repo) if t.endswith(".sig")]
    if layout == "bundle":
        assert [r["artifactType"] for r in referrers] == [BUNDLE_TYPE] and not sig_tags
    else:
        assert not referrers and sig_tags == [f"sha256-{digest[7:]}.sig"]
    out = sc.cosign(*COSIGN_VERIFY, "--key", "dockyard.pub", digest_ref)
    assert digest in out.stdout, out.stdout
    assert sc.cosign(*COSIGN_VERIFY, "--key", "cosign.pub", digest_ref, check=False).returncode != 0
    _verify_ok(sc, tag_ref, "dockyard.pub", layout)


def test_key_files_interoperate(sc, registry):
    """cosign signs with Dockyard's key file, Dockyard signs with cosign's; each verifies."""
    tag_ref, digest_ref = sc.push("interop/keys", "keys")
    sc.cosign(*COSIGN_SIGN, "--key", "dockyard.key", digest_ref)
    _verify_ok(sc, tag_ref, "dockyard.pub", "bundle")
    sc.dockyard("sign", "--key", "cosign.key", "--tag-layout", tag_ref)
    sc.cosign(*COSIGN_VERIFY, "--new-bundle-format=false", "--key", "cosign.pub", digest_ref)
    wrong = dict(sc.env, COSIGN_PASSWORD="not-it")
    proc = subprocess.run(sc._cli + ["sign", "--key", "cosign.key", tag_ref], env=wrong, cwd=sc.work,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "wrong password" in proc.stderr, proc.stderr


def test_token_auth_after_dockyard_login(sc, tmp_path):
    """With token auth: `dockyard login` stores credentials that crane, cosign and `dockyard
    sign|verify` use; the registry refuses anonymous access to the private project."""
    with run_dockyard(tmp_path / "data", auth_mode="token", admin_password=ADMIN_PASSWORD) as server:
        directory = Directory(server, ADMIN_PASSWORD)
        try:
            directory.create_project("signed", public=False)
        finally:
            directory.close()
        c = SignClients(tmp_path / "clients", server)
        for name in ("cosign.key", "cosign.pub", "dockyard.key", "dockyard.pub", "stranger.pub"):
            (c.work / name).write_bytes((sc.work / name).read_bytes())
        anonymous = c.dockyard("verify", "--key", "cosign.pub", f"{server.host}/signed/app:v1", check=False)
        assert anonymous.returncode == 1 and "error:" in anonymous.stderr, anonymous.stderr
        c.dockyard("login", server.host, "-u", "admin", "--password-stdin", input=ADMIN_PASSWORD + "\n", main=True)
        tag_ref, digest_ref = c.push("signed/app", "token")
        c.cosign(*COSIGN_SIGN, "--key", "cosign.key", digest_ref)
        _verify_ok(c, tag_ref, "cosign.pub", "bundle")
        c.dockyard("sign", "--key", "dockyard.key", "--tag-layout", tag_ref)
        c.cosign(*COSIGN_VERIFY, "--key", "dockyard.pub", "--new-bundle-format=false", digest_ref)
        verdict = json.loads(c.dockyard("verify", "--key", "dockyard.pub", "--key", "cosign.pub", "--json", tag_ref).stdout)
        assert verdict["verified_layouts"] == ["bundle", "tag"] and len(verdict["verified_by"]) == 2, verdict
        _verify_refused(c, tag_ref, "stranger.pub", "not signed by any trusted key")
        c.cleanup_podman()


def test_signing_while_the_project_requires_signatures(sc, tmp_path):
    """With require_signature on, cosign and `dockyard sign` can still sign: accounts that may push
    to the repository are not held by pull gates (as in Harbor). A guest deploy account is held
    until a trusted key's signature is attached; a signature by an untrusted key does not count."""
    import httpx

    with run_dockyard(tmp_path / "data", auth_mode="token", admin_password=ADMIN_PASSWORD,
                      extra_env={"DOCKYARD_SECURITY_CACHE_SECONDS": "0"}) as server:
        directory = Directory(server, ADMIN_PASSWORD)
        try:
            directory.create_project("locked", public=False)
            directory.create_user("deploy", "Depl0y-password")
            directory.add_member("locked", "deploy", "guest")
        finally:
            directory.close()
        with httpx.Client(headers=API_CLIENT, base_url=f"http://{server.host}/api/v1", auth=("admin", ADMIN_PASSWORD)) as api:
            r = api.post("/projects/locked/security/trusted-keys",
                         json={"name": "release", "public_key": (sc.work / "cosign.pub").read_text()})
            assert r.status_code == 201, r.text
            assert api.patch("/projects/locked/security", json={"require_signature": True}).status_code == 200
        c = SignClients(tmp_path / "clients", server)
        for name in ("cosign.key", "cosign.pub", "dockyard.key"):
            (c.work / name).write_bytes((sc.work / name).read_bytes())
        c.dockyard("login", server.host, "-u", "admin", "--password-stdin", input=ADMIN_PASSWORD + "\n", main=True)
        tag_ref, digest_ref = c.push("locked/app", "locked")
        deploy = ("copy", "--src-tls-verify=false", "--src-creds", "deploy:Depl0y-password",
                  f"docker://{tag_ref}", f"oci:{tmp_path / 'pulled'}:v1")
        denied = c.fails("skopeo", *deploy)
        assert "is not signed by a key trusted by project locked" in denied, denied
        c.run("crane", "--insecure", "manifest", tag_ref)  # the admin may push: not held

        c.dockyard("sign", "--key", "dockyard.key", "--tag-layout", tag_ref)  # allowed; its key is not trusted
        assert "not signed by a key trusted" in c.fails("skopeo", *deploy)
        c.cosign(*COSIGN_SIGN, "--key", "cosign.key", digest_ref)
        c.run("skopeo", *deploy)
        c.run("crane", "--insecure", "manifest", tag_ref)
        c.cosign(*COSIGN_VERIFY, "--key", "cosign.pub", digest_ref)
        c.cleanup_podman()
