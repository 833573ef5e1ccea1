"""Copies inside Dockyard move no layer bytes: real clients and the promotion API, measured on the wire.

One `dockyard serve` per auth mode ("token": admin, projects `apps` and `prod`; and "none"). Two
images are pushed DIRECTLY to `apps/src`: the multi-arch fixture (an index of two images sharing a
layer) as `git-abc1234`, and a single-arch image of three incompressible layers (~3.5 MiB) as
`git-def5678`. Then each copy runs THROUGH a byte-counting proxy (tests/support/byte_proxy.py) in
front of the same server:

- `crane tag`, `crane copy` (to another repository of the project, and to another project),
- `skopeo copy docker://… docker://…` (logged in, TLS verification off). skopeo mounts only blobs its
  blob-info cache knows in another repository of the same host, and copies the image config by value
  (a few hundred bytes): the cold-cache copy is measured and reported; the copy after skopeo has pulled
  the source through the same address must move no layer bytes,
- `regctl image copy`,
- `POST /api/v1/promotions` (an index, its children and a referrer) and `dockyard promote`.

Each asserts that not one request body byte went to `/v2/<name>/blobs/uploads…` (so no blob was
uploaded: every blob was already there or was mounted), that no layer was downloaded, and that every
cross-repository mount a client asked for was answered `201 Created` (a `202` would make the client
upload the layer: a server bug). The destination is then pulled with skopeo (directly, not through
the proxy) and must be byte-identical to the source.

The proxy's own counting is checked first: a chunked PATCH + a Content-Length PUT count exactly the
blob's size, and a blob GET counts exactly its size.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.auth_support import ADMIN, AuthClients, Directory
from tests.e2e.conftest import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    Tree,
    assert_same_tree,
    fixture_tree,
    sha256_bytes,
    verify_layout,
)
from tests.support.byte_proxy import ByteProxy, _Framer
from tests.support.images import (
    ImageFixture,
    LayoutWriter,
    _layout_info,
    _RandomReader,
    _tarinfo,
    multiarch_oci_layout,
)
from tests.support.server import ServerProcess, dockyard_env, run_dockyard
from tests.functional.helpers import API_CLIENT

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "zero-copy-admin-pw"
PROJECT, OTHER = "apps", "prod"
SRC = f"{PROJECT}/src"
TAGS = {"multi": "git-abc1234", "single": "git-def5678"}
THROTTLE_ENV = {"DOCKYARD_LOGIN_SLOWDOWN_AFTER": "1000", "DOCKYARD_LOGIN_LOCKOUT_AFTER": "2000"}
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"

# Per-client measurements, printed at the end of the module (run with -s to see them).
RESULTS: list[dict] = []


# --- images -------------------------------------------------------------------------------------


def single_arch_layout(path: Path) -> ImageFixture:
    """linux/amd64, three gzip layers of incompressible data (2 MiB, 1 MiB, 512 KiB), tag ``single``."""
    w = LayoutWriter(path)
    layers = []
    for i, size in enumerate((2 * 1024 * 1024, 1024 * 1024, 512 * 1024)):
        name = f"data/zero-copy-{i}.bin"
        layers.append(w.layer([(_tarinfo("data", type_=tarfile.DIRTYPE), None),
                               (_tarinfo(name, size), _RandomReader(f"zero-copy-{i}", size))]))
    w.tag(w.image(layers, cmd=["/bin/true"]), "single")
    return ImageFixture(path=path, transport="oci", tag="single", info=_layout_info(path, "single"))


# --- the environment ----------------------------------------------------------------------------


@dataclass
class Env:
    mode: str
    server: ServerProcess
    proxy: ByteProxy
    clients: AuthClients
    http: httpx.Client  # straight to the server, as admin (Basic)
    images: dict[str, ImageFixture]
    trees: dict[str, Tree]
    tmp: Path
    logged_in: set = field(default_factory=set)

    def ref(self, repo_ref: str, *, via_proxy: bool = True) -> str:
        return f"{self.proxy.host if via_proxy else self.server.host}/{repo_ref}"

    def login(self, client: str, host: str) -> None:
        """Log ``client`` in to ``host`` as admin (token mode only: with auth off nothing is needed)."""
        if self.mode == "none" or (client, host) in self.logged_in:
            return
        c = self.clients
        pw = ADMIN_PASSWORD + "\n"
        if client == "skopeo":
            c.run("skopeo", "login", "--tls-verify=false", "-u", ADMIN, "--password-stdin", host, input=pw)
        elif client == "crane":
            c.run("crane", "auth", "login", host, "-u", ADMIN, "--password-stdin", input=pw)
        elif client == "regctl":
            c.run("regctl", "registry", "login", "-u", ADMIN, "--pass-stdin", host, input=pw)
        else:
            raise ValueError(client)
        self.logged_in.add((client, host))


def _push_direct(env: Env, image: ImageFixture, repo_ref: str) -> None:
    env.login("skopeo", env.server.host)
    env.clients.run("skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", image.ref,
                    f"docker://{env.ref(repo_ref, via_proxy=False)}")


@pytest.fixture(scope="module", params=["token", "none"])
def zenv(request, tmp_path_factory):
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"zero-copy-{mode}")
    images = {"multi": multiarch_oci_layout(), "single": single_arch_layout(tmp / "single-layout")}
    with run_dockyard(tmp / "data", auth_mode=mode, admin_password=ADMIN_PASSWORD, extra_env=THROTTLE_ENV) as server:
        directory = Directory(server, ADMIN_PASSWORD)
        directory.create_project(PROJECT)
        directory.create_project(OTHER)
        directory.close()
        proxy = ByteProxy(server.port)
        clients = AuthClients(tmp / "clients", server)
        # regctl: plain HTTP for the server and for the proxy.
        clients.run("regctl", "registry", "set", "--tls", "disabled", proxy.host)
        http = httpx.Client(headers=API_CLIENT, base_url=server.url, trust_env=False, timeout=120, auth=(ADMIN, ADMIN_PASSWORD))
        env = Env(mode, server, proxy, clients, http, images,
                  {k: fixture_tree(v) for k, v in images.items()}, tmp)
        try:
            for kind, image in images.items():
                _push_direct(env, image, f"{SRC}:{TAGS[kind]}")
            yield env
        finally:
            proxy.stop()
            http.close()
            clients.cleanup_podman()
    _print_results(mode)


def _print_results(mode: str) -> None:
    rows = [r for r in RESULTS if r["mode"] == mode]
    print(f"\n--- zero-copy measurements, auth {mode} ---")
    for r in rows:
        print(f"{r['case']:<34} {r['image']:<6} upload_body_bytes={r['upload_body_bytes']:<8} "
              f"(config {r['config_upload_bytes']}, layers {r['layer_upload_bytes']}) "
              f"blob_get_bytes={r['blob_get_bytes']:<8} layer_get_bytes={r['layer_get_bytes']:<8} "
              f"mount_posts={r['mount_posts']} (201: {r['mounts_201']}, 202: {r['mounts_202']}) "
              f"plain_upload_posts={r['upload_posts_without_mount']} requests={r['requests']}")


@pytest.fixture
def env(zenv: Env):
    offset = os.path.getsize(zenv.server.log_path)
    zenv.proxy.reset()
    yield zenv
    with open(zenv.server.log_path, "rb") as f:
        f.seek(offset)
        log = f.read().decode("utf-8", "replace")
    assert zenv.server.alive(), f"dockyard died during the test; log:\n{log[-4000:]}"
    assert "Traceback" not in log, f"dockyard logged a traceback during the test:\n{log[-6000:]}"


# --- checks ---------------------------------------------------------------------------------------


def _measure(env: Env, case: str, kind: str, *, expect_mounts: bool | None = None,
             config_by_value: bool = False) -> dict:
    """Assert that no blob bytes moved through the proxy since the last reset; record the numbers."""
    proxy = env.proxy
    assert proxy.wait_idle(10), f"proxy still has requests in flight:\n{proxy.describe()}"
    s = proxy.summary()
    layers = {d for d, _ in env.trees[kind].blobs.items()} - _configs(env.trees[kind])
    layer_get = sum(e.response_body_bytes for e in proxy.exchanges
                    if e.is_blob_get and e.path.rsplit("/", 1)[-1] in layers)
    by_digest = proxy.upload_bytes_by_digest()
    layer_upload = sum(n for d, n in by_digest.items() if d not in _configs(env.trees[kind]))
    s.update(mode=env.mode, case=case, image=kind, layer_get_bytes=layer_get, layer_upload_bytes=layer_upload,
             config_upload_bytes=s["upload_body_bytes"] - layer_upload)
    RESULTS.append(s)
    details = f"{case} ({kind}, auth {env.mode}): {json.dumps(s)}\nexchanges:\n{proxy.describe()}"
    assert not s["parse_errors"], f"the proxy could not follow the traffic: {details}"
    # A mount may be refused (202: "upload it instead") when the `from` repository lacks the blob, e.g.
    # a stale location in the client's cache. Refusing one that IS there makes the client upload it.
    bad_mounts = [e for e in proxy.mounts() if e.status != 201 and _has_blob(env, e.query.get("from", [""])[0],
                                                                             e.query["mount"][0])]
    assert not bad_mounts, (
        "Dockyard did not complete a cross-repository mount with 201 (the client then uploads the blob):\n"
        + "\n".join(f"{e} response headers {e.response_headers}" for e in bad_mounts)
        + f"\n{details}\nserver log:\n{env.server.log_tail(40)}")
    # No layer bytes may move. Clients that copy the image config by value (skopeo reads it from the
    # source and uploads it; it never asks to mount a config) move only those few hundred bytes.
    assert layer_upload == 0, f"layer bytes were uploaded ({by_digest}): {details}"
    assert layer_get == 0, f"layer bytes were downloaded: {details}"
    if not config_by_value:
        assert s["upload_body_bytes"] == 0, f"blob bytes were uploaded ({by_digest}): {details}"
    else:
        config_sizes = {d: n for d, n in env.trees[kind].blobs.items() if d in _configs(env.trees[kind])}
        assert all(n == config_sizes[d] for d, n in by_digest.items()), (by_digest, config_sizes, details)
    if expect_mounts is True:
        assert s["mount_posts"] > 0, f"expected the client to mount blobs: {details}"
    elif expect_mounts is False:
        assert s["mount_posts"] == 0 and s["upload_posts_without_mount"] == 0, f"no blob requests expected: {details}"
    return s


def _has_blob(env: Env, repo: str, digest: str) -> bool:
    return bool(repo) and env.http.head(f"/v2/{repo}/blobs/{digest}").status_code == 200


def _configs(tree: Tree) -> set[str]:
    out = set()
    for _, (mt, raw) in tree.manifests.items():
        doc = json.loads(raw)
        if "config" in doc:
            out.add(doc["config"]["digest"])
    return out


def _pull_and_verify(env: Env, repo_ref: str, kind: str, name: str) -> None:
    """Pull ``repo_ref`` straight from the server with skopeo (all platforms) and compare with the source."""
    env.login("skopeo", env.server.host)
    layout = env.tmp / "pulled" / name
    layout.parent.mkdir(exist_ok=True)
    env.clients.run("skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false",
                    f"docker://{env.ref(repo_ref, via_proxy=False)}", f"oci:{layout}:pulled")
    assert_same_tree(verify_layout(layout, "pulled"), env.trees[kind])


def _digest(env: Env, repo: str, ref: str) -> str:
    r = env.http.head(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 200, f"HEAD {repo}:{ref}: {r.status_code}"
    return r.headers["Docker-Content-Digest"]


# --- the proxy itself ------------------------------------------------------------------------------


def test_framer_counts_chunked_and_length_bodies_fed_bytewise():
    seen: list[tuple] = []
    bodies: list[int] = [0]

    def head(start, headers):
        seen.append((start, headers))
        bodies.append(0)
        if "chunked" in headers.get("transfer-encoding", ""):
            return ("chunked", None)
        return ("length", int(headers.get("content-length", 0)))

    def body(n):
        bodies[-1] += n

    framer = _Framer(head, body, lambda: seen.append("end"))
    stream = (b"PATCH /v2/a/blobs/uploads/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: y\r\n\r\n"
              b"PUT /v2/a/blobs/uploads/1?digest=sha256:00 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
              b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    for i in range(len(stream)):
        framer.feed(stream[i:i + 1])
    assert [s[0] for s in seen if s != "end"] == [
        "PATCH /v2/a/blobs/uploads/1 HTTP/1.1", "PUT /v2/a/blobs/uploads/1?digest=sha256:00 HTTP/1.1", "GET /v2/ HTTP/1.1"]
    assert seen.count("end") == 3
    assert bodies[1:] == [21, 3, 0]


def test_proxy_counts_an_upload_and_a_download_exactly(env):
    """Chunked PATCH + Content-Length PUT through the proxy, on one keep-alive connection."""
    proxy = env.proxy
    repo = f"{PROJECT}/proxy-check"
    part1 = random.Random("proxy-1").randbytes(300 * 1024 + 7)
    part2 = random.Random("proxy-2").randbytes(100 * 1024 + 3)
    blob = part1 + part2
    digest = sha256_bytes(blob)
    auth = (ADMIN, ADMIN_PASSWORD)
    with httpx.Client(headers=API_CLIENT, base_url=proxy.url, trust_env=False, timeout=60, auth=auth) as client:
        r = client.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, (r.status_code, r.text)
        location = r.headers["Location"]

        def chunks():
            for i in range(0, len(part1), 65536):
                yield part1[i:i + 65536]

        r = client.patch(location, content=chunks(), headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202, (r.status_code, r.text)
        assert r.request.headers.get("transfer-encoding") == "chunked"
        r = client.put(r.headers["Location"], params={"digest": digest}, content=part2,
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, (r.status_code, r.text)
        assert proxy.wait_idle(5)
        assert proxy.upload_body_bytes == len(blob)
        assert proxy.blob_get_bytes == 0
        got = client.get(f"/v2/{repo}/blobs/{digest}")
        assert got.status_code == 200 and got.content == blob
        head = client.head(f"/v2/{repo}/blobs/{digest}")
        assert head.status_code == 200
        assert proxy.wait_idle(5)
        assert proxy.blob_get_bytes == len(blob)
        assert proxy.upload_body_bytes == len(blob)
        assert not proxy.parse_errors
        statuses = [(e.method, e.status) for e in proxy.exchanges if e.path.startswith("/v2/" + repo)]
        assert statuses == [("POST", 202), ("PATCH", 202), ("PUT", 201), ("GET", 200), ("HEAD", 200)], statuses
    proxy.reset()
    assert proxy.upload_body_bytes == 0 and proxy.exchanges == []


# --- clients ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["multi", "single"])
def test_crane_tag(env, kind):
    env.login("crane", env.proxy.host)
    env.clients.run("crane", "--insecure", "tag", env.ref(f"{SRC}:{TAGS[kind]}"), f"crane-tag-{kind}")
    _measure(env, "crane tag", kind, expect_mounts=False)
    assert _digest(env, SRC, f"crane-tag-{kind}") == env.images[kind].digest
    _pull_and_verify(env, f"{SRC}:crane-tag-{kind}", kind, f"crane-tag-{kind}")


@pytest.mark.parametrize("kind", ["multi", "single"])
@pytest.mark.parametrize("where", ["same-project", "other-project"])
def test_crane_copy(env, kind, where):
    env.login("crane", env.proxy.host)
    dest = f"{PROJECT if where == 'same-project' else OTHER}/crane-copy-{kind}:v1"
    env.clients.run("crane", "--insecure", "copy", env.ref(f"{SRC}:{TAGS[kind]}"), env.ref(dest))
    _measure(env, f"crane copy ({where})", kind, expect_mounts=True)
    _pull_and_verify(env, dest, kind, f"crane-copy-{where}-{kind}")


def _skopeo_copy(env: Env, src: str, dest: str) -> None:
    env.login("skopeo", env.proxy.host)
    env.clients.run("skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{env.ref(src)}", f"docker://{env.ref(dest)}")


@pytest.mark.parametrize("kind", ["multi", "single"])
def test_skopeo_copy_cold_blob_cache(env, kind):
    """skopeo mounts only blobs its blob-info cache has seen in another repository of the SAME registry
    host. The source was pushed straight to the server, not through the proxy's address, so this first
    copy via the proxy knows no location: skopeo downloads and re-uploads the layers (a client
    limitation, measured and reported, not asserted). It asks for no mount, so none can be refused."""
    dest = f"{PROJECT}/skopeo-cold-{kind}:v1"
    _skopeo_copy(env, f"{SRC}:{TAGS[kind]}", dest)
    proxy = env.proxy
    assert proxy.wait_idle(10)
    s = proxy.summary()
    by_digest = proxy.upload_bytes_by_digest()
    layer_upload = sum(n for d, n in by_digest.items() if d not in _configs(env.trees[kind]))
    layers = set(env.trees[kind].blobs) - _configs(env.trees[kind])
    layer_get = sum(e.response_body_bytes for e in proxy.exchanges
                    if e.is_blob_get and e.path.rsplit("/", 1)[-1] in layers)
    s.update(mode=env.mode, case="skopeo copy, cold blob cache", image=kind, layer_get_bytes=layer_get,
             layer_upload_bytes=layer_upload, config_upload_bytes=s["upload_body_bytes"] - layer_upload)
    RESULTS.append(s)
    assert not s["parse_errors"], s
    refused = [e for e in proxy.mounts() if e.status != 201
               and _has_blob(env, e.query.get("from", [""])[0], e.query["mount"][0])]
    assert not refused, "\n".join(str(e) for e in refused)
    # whatever moved, it moved exactly once per blob: no failed or repeated uploads
    assert set(by_digest) <= set(env.trees[kind].blobs), by_digest
    assert all(n == env.trees[kind].blobs[d] for d, n in by_digest.items()), by_digest
    _pull_and_verify(env, dest, kind, f"skopeo-cold-{kind}")


@pytest.mark.parametrize("kind", ["multi", "single"])
@pytest.mark.parametrize("where", ["same-project", "other-project"])
def test_skopeo_copy(env, kind, where):
    """With the source's blob locations known to skopeo (it pulled the image through this address, as a
    CI job that tested the image would have), the copy mounts every layer."""
    warm = env.tmp / "skopeo-warm" / f"{kind}-{where}"
    warm.parent.mkdir(exist_ok=True)
    env.login("skopeo", env.proxy.host)
    env.clients.run("skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false",
                    f"docker://{env.ref(f'{SRC}:{TAGS[kind]}')}", f"oci:{warm}:warm")
    env.proxy.reset()
    dest = f"{PROJECT if where == 'same-project' else OTHER}/skopeo-copy-{kind}:v1"
    _skopeo_copy(env, f"{SRC}:{TAGS[kind]}", dest)
    _measure(env, f"skopeo copy ({where})", kind, expect_mounts=True, config_by_value=True)
    _pull_and_verify(env, dest, kind, f"skopeo-copy-{where}-{kind}")


@pytest.mark.parametrize("kind", ["multi", "single"])
@pytest.mark.parametrize("where", ["same-project", "other-project"])
def test_regctl_image_copy(env, kind, where):
    env.login("regctl", env.proxy.host)
    dest = f"{PROJECT if where == 'same-project' else OTHER}/regctl-copy-{kind}:v1"
    env.clients.run("regctl", "image", "copy", env.ref(f"{SRC}:{TAGS[kind]}"), env.ref(dest))
    _measure(env, f"regctl image copy ({where})", kind, expect_mounts=True)
    _pull_and_verify(env, dest, kind, f"regctl-copy-{where}-{kind}")


# --- promotion --------------------------------------------------------------------------------------


def _upload(http: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha256_bytes(data)
    r = http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data,
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, f"monolithic upload to {repo}: {r.status_code} {r.text[:300]}"
    return digest


def _push_referrer(env: Env, repo: str, subject: str, subject_size: int) -> tuple[str, str]:
    """An SBOM-like artifact whose subject is ``subject``; returns (digest, its layer digest)."""
    payload = json.dumps({"sbom": "zero-copy", "subject": subject}).encode()
    layer = _upload(env.http, repo, payload)
    _upload(env.http, repo, b"{}")
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom.v1+json",
        "config": {"mediaType": EMPTY_CONFIG, "digest": sha256_bytes(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/json", "digest": layer, "size": len(payload)}],
        "subject": {"mediaType": OCI_INDEX, "digest": subject, "size": subject_size},
    }
    raw = json.dumps(manifest).encode()
    digest = sha256_bytes(raw)
    r = env.http.put(f"/v2/{repo}/manifests/{digest}", content=raw, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, f"PUT referrer: {r.status_code} {r.text[:300]}"
    return digest, layer


def test_promotion_api_index_children_and_referrer(env):
    image = env.images["multi"]
    referrer, referrer_layer = _push_referrer(env, SRC, image.digest, image.info["size"])
    env.proxy.reset()
    with httpx.Client(headers=API_CLIENT, base_url=env.proxy.url, trust_env=False, timeout=120, auth=(ADMIN, ADMIN_PASSWORD)) as api:
        r = api.post("/api/v1/promotions", json={
            "source": f"{SRC}:{TAGS['multi']}", "destination": f"{OTHER}/promoted",
            "tags": ["v1.0.0", "stable"], "include_referrers": True})
    assert r.status_code == 201, f"promotion: {r.status_code} {r.text[:1000]}\n{env.server.log_tail(30)}"
    body = r.json()
    _measure(env, "POST /api/v1/promotions", "multi", expect_mounts=False)
    children = [m["digest"] for m in image.info["manifests"]]
    assert body["source_digest"] == image.digest
    assert body["destination"] == f"{OTHER}/promoted"
    assert sorted(t["tag"] for t in body["tags"]) == ["stable", "v1.0.0"]
    assert all(t["previous"] is None for t in body["tags"])
    copied = {c if isinstance(c, str) else c.get("digest") for c in body["copied"]}
    assert {image.digest, *children, referrer} <= copied, body
    referrers = {c if isinstance(c, str) else c.get("digest") for c in body["referrers"]}
    assert referrers == {referrer}, body
    n_blobs = len(env.trees["multi"].blobs) + 2  # + the referrer's payload and empty config
    assert body["blobs_linked"] == n_blobs, body
    for tag in ("v1.0.0", "stable"):
        assert _digest(env, f"{OTHER}/promoted", tag) == image.digest
    _pull_and_verify(env, f"{OTHER}/promoted:v1.0.0", "multi", "promoted-api")
    # the referrer came along: listed by the referrers API, its manifest and blobs readable there
    listed = env.http.get(f"/v2/{OTHER}/promoted/referrers/{image.digest}")
    assert listed.status_code == 200, listed.text
    assert [m["digest"] for m in listed.json()["manifests"]] == [referrer]
    assert _digest(env, f"{OTHER}/promoted", referrer) == referrer
    blob = env.http.get(f"/v2/{OTHER}/promoted/blobs/{referrer_layer}")
    assert blob.status_code == 200 and sha256_bytes(blob.content) == referrer_layer


def test_dockyard_promote_cli(env):
    image = env.images["single"]
    cmd = [sys.executable, "-m", "dockyard", "promote", f"{SRC}:{TAGS['single']}", f"{OTHER}/cli-promoted:v2.0.0",
           "-t", "prod", "--url", env.proxy.url, "-u", ADMIN, "--password-stdin"]
    started = time.monotonic()
    proc = subprocess.run(cmd, input=ADMIN_PASSWORD + "\n", capture_output=True, text=True, timeout=120,
                          env=dockyard_env({"COLUMNS": "250", "NO_COLOR": "1"}))
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}\n{env.server.log_tail(30)}"
    assert time.monotonic() - started < 60
    out = " ".join(proc.stdout.split())
    assert f"promoted {SRC}@{image.digest} to {OTHER}/cli-promoted" in out, proc.stdout
    assert "0 bytes copied" in out and "v2.0.0" in out and "prod" in out, proc.stdout
    assert f"{len(env.trees['single'].blobs)} blobs linked" in out, proc.stdout
    _measure(env, "dockyard promote (CLI)", "single", expect_mounts=False)
    promote_calls = [e for e in env.proxy.exchanges if e.path == "/api/v1/promotions"]
    assert [e.status for e in promote_calls] == [201], env.proxy.describe()
    for tag in ("v2.0.0", "prod"):
        assert _digest(env, f"{OTHER}/cli-promoted", tag) == image.digest
    _pull_and_verify(env, f"{OTHER}/cli-promoted:prod", "single", "promoted-cli")


def test_blob_bytes_on_disk_not_duplicated(env):
    """After all the copies above, each layer is stored once (content-addressed), whatever linked it."""
    blobs_dir = env.server.data_dir
    sizes = {d: s for tree in env.trees.values() for d, s in tree.blobs.items()}
    found: dict[str, int] = {}
    for path in Path(blobs_dir).rglob("*"):
        if path.is_file() and path.stat().st_size in sizes.values():
            h = hashlib.sha256(path.read_bytes()).hexdigest()
            found.setdefault("sha256:" + h, 0)
            found["sha256:" + h] += 1
    for digest in sizes:
        assert found.get(digest) == 1, f"blob {digest} stored {found.get(digest, 0)} times under {blobs_dir}"
