"""Fixtures for the real-client end-to-end tests (tests/e2e/test_clients_*.py).

- ``dockyard`` (module): ONE ``dockyard serve`` per test module, data dir under
  tmp_path_factory.
- ``registry``: an HTTP helper for that server (manifest/blob/tag checks). After
  each test it fails the test if the server logged a traceback meanwhile.
- ``clients`` (module): runs skopeo, crane, oras, regctl and podman with a
  private HOME / config so nothing leaks in from (or out to) the real user's
  configuration. A missing tool makes the *test* fail (never skip).

Plain helper functions (tree walks, layout checks) live here too and are
exposed as methods of the fixtures, so test modules need no extra imports.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import subprocess
from pathlib import Path
from typing import Callable, Iterable

import httpx
import pytest

from tests.support.images import ImageFixture
from tests.support.server import ServerProcess, ToolNotFoundError, run_dockyard, tool
from tests.functional.helpers import API_CLIENT

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
REF_NAME = "org.opencontainers.image.ref.name"
CLIENT_TIMEOUT = 600


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# --- image trees -------------------------------------------------------------------


class Tree:
    """Everything reachable from a top-level manifest/index: manifest bytes by
    digest (with media type) and blob sizes by digest."""

    def __init__(self, top: str):
        self.top = top
        self.manifests: dict[str, tuple[str, bytes]] = {}
        self.blobs: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Tree(top={self.top}, manifests={sorted(self.manifests)}, blobs={self.blobs})"


def walk_tree(read: Callable[[str], bytes], digest: str, media_type: str | None = None,
              tree: Tree | None = None) -> Tree:
    """Walk a manifest/index via ``read(digest) -> bytes``, checking every
    manifest's bytes hash to its digest. Blobs are recorded (not read)."""
    tree = tree or Tree(digest)
    raw = read(digest)
    assert sha256_bytes(raw) == digest, f"manifest bytes for {digest} hash to {sha256_bytes(raw)}"
    doc = json.loads(raw)
    mt = doc.get("mediaType") or media_type
    assert mt, f"cannot tell the media type of {digest}"
    tree.manifests[digest] = (mt, raw)
    if "manifests" in doc:
        for child in doc["manifests"]:
            if child["digest"] not in tree.manifests:
                walk_tree(read, child["digest"], child.get("mediaType"), tree)
    else:
        for desc in [doc["config"], *doc.get("layers", [])]:
            tree.blobs[desc["digest"]] = desc["size"]
    return tree


def fixture_reader(image: ImageFixture) -> Callable[[str], bytes]:
    """Reader for a cached test image (OCI layout or skopeo dir:)."""

    def read(digest: str) -> bytes:
        if image.transport == "dir" and digest == image.digest:
            return (image.path / "manifest.json").read_bytes()
        return image.blob_path(digest).read_bytes()

    return read


def fixture_tree(image: ImageFixture) -> Tree:
    tree = walk_tree(fixture_reader(image), image.digest, image.media_type)
    for digest, size in tree.blobs.items():
        path = image.blob_path(digest)
        assert path.stat().st_size == size, f"fixture blob {path} has the wrong size"
    return tree


def layout_reader(layout: Path) -> Callable[[str], bytes]:
    def read(digest: str) -> bytes:
        algo, hexpart = digest.split(":", 1)
        return (Path(layout) / "blobs" / algo / hexpart).read_bytes()

    return read


def verify_layout(layout: os.PathLike | str, tag: str | None = None) -> Tree:
    """Check an OCI image layout written by a client: every file under blobs/
    hashes to its name, the tree under ``tag`` (or the single entry of
    index.json when ``tag`` is None) is complete with the right sizes.
    Returns that tree."""
    layout = Path(layout)
    assert (layout / "oci-layout").is_file(), f"{layout} is not an OCI layout"
    index = json.loads((layout / "index.json").read_text())
    entries = index["manifests"]
    if tag is None:
        assert len(entries) == 1, f"expected one entry in {layout}/index.json: {entries}"
        entry = entries[0]
    else:
        matching = [m for m in entries if m.get("annotations", {}).get(REF_NAME) == tag]
        assert len(matching) == 1, f"tag {tag!r} not (uniquely) in {layout}/index.json: {entries}"
        entry = matching[0]
    for path in (layout / "blobs").rglob("*"):
        if path.is_file():
            algo, hexpart = path.parent.name, path.name
            assert algo == "sha256", path
            assert sha256_file(path) == f"sha256:{hexpart}", f"corrupt blob in pulled layout: {path}"
    tree = walk_tree(layout_reader(layout), entry["digest"], entry.get("mediaType"))
    for digest, size in tree.blobs.items():
        path = layout / "blobs" / "sha256" / digest[7:]
        assert path.is_file(), f"blob {digest} missing from pulled layout {layout}"
        assert path.stat().st_size == size, f"blob {digest} in {layout} has the wrong size"
    return tree


def assert_same_tree(actual: Tree, expected: Tree) -> None:
    assert actual.top == expected.top
    assert sorted(actual.manifests) == sorted(expected.manifests)
    for digest, (mt, raw) in expected.manifests.items():
        assert actual.manifests[digest] == (mt, raw), f"manifest {digest} differs"
    assert actual.blobs == expected.blobs


def gunzip_digest(path: os.PathLike | str) -> str:
    """sha256 of the decompressed content of a gzip file (a layer's diff ID)."""
    h = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# --- the registry --------------------------------------------------------------------


class Registry:
    """HTTP-level checks against the module's Dockyard."""

    # Tools in tests reach these through the fixture object.
    sha256_bytes = staticmethod(sha256_bytes)
    sha256_file = staticmethod(sha256_file)
    walk_tree = staticmethod(walk_tree)
    fixture_tree = staticmethod(fixture_tree)
    verify_layout = staticmethod(verify_layout)
    assert_same_tree = staticmethod(assert_same_tree)
    gunzip_digest = staticmethod(gunzip_digest)

    def __init__(self, server: ServerProcess):
        self.server = server
        self.host = server.host
        self.url = server.url
        self.http = httpx.Client(headers=API_CLIENT, base_url=server.url, trust_env=False, timeout=120)

    def close(self) -> None:
        self.http.close()

    def log_since(self, offset: int) -> str:
        with open(self.server.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return os.path.getsize(self.server.log_path)

    # manifests

    def get_manifest(self, repo: str, ref: str, *, method: str = "GET",
                     accept: str = MANIFEST_ACCEPT) -> httpx.Response:
        return self.http.request(method, f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept})

    def assert_manifest(self, repo: str, ref: str, digest: str, media_type: str | None = None,
                        body: bytes | None = None) -> bytes:
        """GET and HEAD ``repo:ref`` must answer ``digest`` (Docker-Content-Digest and
        the body's hash), with ``media_type`` as Content-Type; returns the body."""
        r = self.get_manifest(repo, ref)
        assert r.status_code == 200, f"GET /v2/{repo}/manifests/{ref}: {r.status_code} {r.text[:500]}"
        assert r.headers.get("Docker-Content-Digest") == digest, (
            f"GET {repo}:{ref}: Docker-Content-Digest {r.headers.get('Docker-Content-Digest')} != {digest}")
        assert sha256_bytes(r.content) == digest, f"GET {repo}:{ref}: body hashes to {sha256_bytes(r.content)}"
        if media_type:
            assert r.headers.get("Content-Type") == media_type, (
                f"GET {repo}:{ref}: Content-Type {r.headers.get('Content-Type')} != {media_type}")
        if body is not None:
            assert r.content == body
        h = self.get_manifest(repo, ref, method="HEAD")
        assert h.status_code == 200, f"HEAD /v2/{repo}/manifests/{ref}: {h.status_code}"
        assert h.headers.get("Docker-Content-Digest") == digest
        assert int(h.headers.get("Content-Length", -1)) == len(r.content)
        if media_type:
            assert h.headers.get("Content-Type") == media_type
        return r.content

    def assert_manifest_gone(self, repo: str, ref: str) -> None:
        for method in ("GET", "HEAD"):
            r = self.get_manifest(repo, ref, method=method)
            assert r.status_code == 404, f"{method} /v2/{repo}/manifests/{ref} after delete: {r.status_code}"

    # blobs

    def assert_blob(self, repo: str, digest: str, size: int | None = None, *, content: bool = True) -> None:
        h = self.http.head(f"/v2/{repo}/blobs/{digest}")
        assert h.status_code == 200, f"HEAD /v2/{repo}/blobs/{digest}: {h.status_code}"
        assert h.headers.get("Docker-Content-Digest") == digest
        if size is not None:
            assert int(h.headers.get("Content-Length", -1)) == size, f"HEAD blob {digest}: Content-Length"
        if content:
            sha, n = hashlib.sha256(), 0
            with self.http.stream("GET", f"/v2/{repo}/blobs/{digest}", follow_redirects=True) as r:
                assert r.status_code == 200, f"GET /v2/{repo}/blobs/{digest}: {r.status_code}"
                for chunk in r.iter_bytes(1024 * 1024):
                    sha.update(chunk)
                    n += len(chunk)
            assert "sha256:" + sha.hexdigest() == digest, f"GET blob {digest} in {repo}: content hashes differently"
            if size is not None:
                assert n == size

    def assert_tree(self, repo: str, tree: Tree, ref: str | None = None, *, content: bool = True) -> None:
        """Every manifest of ``tree`` is served byte-identical by digest (and the top
        one by ``ref`` too); every blob is present with the right digest and size."""
        top_mt = tree.manifests[tree.top][0]
        if ref is not None:
            self.assert_manifest(repo, ref, tree.top, top_mt, tree.manifests[tree.top][1])
        for digest, (mt, raw) in tree.manifests.items():
            self.assert_manifest(repo, digest, digest, mt, raw)
        for digest, size in tree.blobs.items():
            self.assert_blob(repo, digest, size, content=content)

    # listings

    def tags(self, repo: str) -> list[str]:
        r = self.http.get(f"/v2/{repo}/tags/list")
        assert r.status_code == 200, f"GET /v2/{repo}/tags/list: {r.status_code} {r.text[:300]}"
        return r.json().get("tags") or []

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> dict:
        params = {"artifactType": artifact_type} if artifact_type else None
        r = self.http.get(f"/v2/{repo}/referrers/{digest}", params=params)
        assert r.status_code == 200, f"GET /v2/{repo}/referrers/{digest}: {r.status_code} {r.text[:300]}"
        assert r.headers.get("Content-Type", "").startswith(OCI_INDEX)
        return r.json()


@pytest.fixture(scope="module")
def dockyard(tmp_path_factory: pytest.TempPathFactory):
    """One ``dockyard serve`` for the whole test module."""
    data_dir = tmp_path_factory.mktemp("dockyard-e2e") / "data"
    with run_dockyard(data_dir) as server:
        yield server


@pytest.fixture(scope="module")
def _registry_helper(dockyard: ServerProcess):
    helper = Registry(dockyard)
    yield helper
    helper.close()


@pytest.fixture
def registry(_registry_helper: Registry):
    """The module's registry; the test fails if the server logs a traceback or dies."""
    offset = _registry_helper.log_size()
    yield _registry_helper
    log = _registry_helper.log_since(offset)
    assert _registry_helper.server.alive(), f"dockyard died during the test; log:\n{log[-4000:]}"
    assert "Traceback" not in log, (
        f"dockyard logged a traceback during the test ({_registry_helper.server.log_path}):\n{log[-6000:]}")


# --- the clients ----------------------------------------------------------------------


class ClientFailed(AssertionError):
    pass


class Clients:
    """Runs the real clients with a private HOME and configuration."""

    def __init__(self, root: Path, server: ServerProcess):
        self.root = root
        self.server = server
        self.host = server.host
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        docker_config = root / "docker-config"
        docker_config.mkdir(exist_ok=True)
        (docker_config / "config.json").write_text('{"auths": {}}\n')
        auth_file = root / "containers-auth.json"
        auth_file.write_text('{"auths": {}}\n')
        # podman: everything in tmp, vfs storage, no systemd / journald.
        self.podman_root = root / "podman" / "root"
        # podman refuses a runroot longer than 50 characters, which pytest's tmp paths reach once its
        # numbered directories pass pytest-999 (as in auth_support.py).
        self.podman_runroot = Path(tempfile.mkdtemp(prefix="dy-podman-run-", dir="/tmp"))
        self.podman_root.mkdir(parents=True, exist_ok=True)
        conf = root / "podman"
        (conf / "containers.conf").write_text(
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n')
        (conf / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.podman_root}"\nrunroot = "{self.podman_runroot}"\n')
        (conf / "registries.conf").write_text(
            f'unqualified-search-registries = []\n\n[[registry]]\nlocation = "{self.host}"\ninsecure = true\n')
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("REGCTL_", "CONTAINERS_", "REGISTRY_AUTH", "DOCKER_", "ORAS_"))}
        env.update({
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "DOCKER_CONFIG": str(docker_config),
            "REGISTRY_AUTH_FILE": str(auth_file),
            "REGCTL_CONFIG": str(root / "regctl" / "config.json"),
            "CONTAINERS_CONF": str(conf / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
            "NO_PROXY": ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")])),
            "no_proxy": ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("no_proxy")])),
        })
        self.env = env
        self._regctl_ready = False

    def path(self, name: str) -> str:
        try:
            return tool(name)
        except ToolNotFoundError as e:
            message = f"required client missing: {e}"
        pytest.fail(message, pytrace=False)

    def run(self, name: str, *args: str, check: bool = True, timeout: float = CLIENT_TIMEOUT,
            input: str | None = None, cwd: os.PathLike | str | None = None) -> subprocess.CompletedProcess:
        if name == "regctl":
            self._setup_regctl()
        cmd = [self.path(name), *args]
        if name == "podman":
            cmd[1:1] = self.podman_global_args()
        offset = os.path.getsize(self.server.log_path)
        try:
            proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                                  timeout=timeout, input=input, cwd=cwd,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise ClientFailed(f"timed out after {timeout}s: {' '.join(cmd)}\n"
                               f"stderr: {(e.stderr or b'')[-3000:]!r}\n{self._log(offset)}") from None
        if check and proc.returncode != 0:
            raise ClientFailed(
                f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-5000:]}\n"
                f"{self._log(offset)}")
        return proc

    def _log(self, offset: int) -> str:
        try:
            with open(self.server.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        return f"--- dockyard log since the command ({self.server.log_path}) ---\n{text[-5000:]}"

    def podman_global_args(self) -> list[str]:
        return ["--root", str(self.podman_root), "--runroot", str(self.podman_runroot),
                "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"]

    def _setup_regctl(self) -> None:
        if self._regctl_ready:
            return
        self._regctl_ready = True
        (self.root / "regctl").mkdir(exist_ok=True)
        self.run("regctl", "registry", "set", "--tls", "disabled", self.host)

    def skopeo_copy(self, src: str, dest: str, *extra: str) -> subprocess.CompletedProcess:
        return self.run("skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                        *extra, src, dest)

    def cleanup_podman(self) -> None:
        shutil.rmtree(self.root / "podman", ignore_errors=True)
        shutil.rmtree(self.podman_runroot, ignore_errors=True)


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory, dockyard: ServerProcess):
    c = Clients(tmp_path_factory.mktemp("clients"), dockyard)
    yield c
    c.cleanup_podman()
