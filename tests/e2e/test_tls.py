"""`dockyard serve` over HTTPS (docs/tls.md), with a CA made in the test: real clients trusting that CA the usual
way and WITHOUT any insecure or plain-HTTP flag (skopeo --cert-dir, podman certs.d, crane/cosign SSL_CERT_FILE,
oras/helm --ca-file, regctl --cacert, `dockyard login` DOCKYARD_CA_FILE), HSTS, TLS 1.2 minimum, the
redirect listener, mutual TLS, and certificate reload on SIGHUP during a long download."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.auth_support import AuthClients, find_digest, tiny_chart
from tests.support.images import debian_oci_layout
from tests.support.server import ServerProcess, dockyard_env, free_port, start_server
from tests.support.tls import TestCA

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "Adm1n-tls-e2e-pass"
READY = 60.0


def _ctx(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def _wait_https(server: ServerProcess, ctx: ssl.SSLContext) -> None:
    deadline = time.monotonic() + READY
    last: object = None
    while time.monotonic() < deadline:
        assert server.alive(), f"dockyard exited ({server.proc.returncode}):\n{server.log_tail()}"
        try:
            httpx.get(f"https://{server.host}/v2/", verify=ctx, timeout=2)
            return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"not ready over HTTPS: {last}\n{server.log_tail()}")


def _serve(data_dir: Path, cert: Path, key: Path, ca: Path, *, env: dict[str, str] | None = None,
           ready_ctx: ssl.SSLContext | None = None, args: tuple[str, ...] = ()) -> ServerProcess:
    port = free_port()
    cmd = [sys.executable, "-m", "dockyard", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--tls-cert", str(cert), "--tls-key", str(key), *args]
    server = start_server(cmd, port=port, data_dir=data_dir, log_name="dockyard.log", name="dockyard",
                          env=dockyard_env({"DOCKYARD_AUTH_MODE": "none", **(env or {})}), wait=False)
    try:
        _wait_https(server, ready_ctx or _ctx(ca))
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="module")
def https(tmp_path_factory, ca):
    cert, key = ca.issue("server")
    redirect_port = free_port()
    server = _serve(tmp_path_factory.mktemp("tls-data"), cert, key, ca.ca_file,
                    env={"DOCKYARD_TLS_REDIRECT_HTTP_PORT": str(redirect_port)})
    server.redirect_port = redirect_port  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_clients(tmp_path_factory, https, ca):
    """The real clients, trusting the test CA and nothing configured as insecure."""
    c = AuthClients(tmp_path_factory.mktemp("tls-clients"), https)
    conf = c.root / "podman" / "registries.conf"
    conf.write_text(f'unqualified-search-registries = []\n\n[[registry]]\nlocation = "{https.host}"\n')
    # containers/image (skopeo, podman) reads certs.d under the user's config dir for rootless use.
    certs_d = Path(c.env["HOME"]) / ".config" / "containers" / "certs.d" / https.host
    certs_d.mkdir(parents=True)
    shutil.copy(ca.ca_file, certs_d / "ca.crt")
    c.cert_dir = c.root / "skopeo-certs"  # type: ignore[attr-defined]
    c.cert_dir.mkdir()
    shutil.copy(ca.ca_file, c.cert_dir / "ca.crt")
    c.env["COSIGN_PASSWORD"] = "cosign-tls-pass"
    c._regctl_ready = True
    (c.root / "regctl").mkdir(exist_ok=True)
    c.run("regctl", "registry", "set", https.host, "--tls", "enabled", "--cacert", ca.ca_file.read_text())
    yield c
    c.cleanup_podman()


def _go(c: AuthClients, ca: TestCA, name: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """crane and cosign trust the CA through SSL_CERT_FILE (Go's crypto/x509 on Linux), set for them alone so
    that skopeo and podman (Go too) are shown to use their cert dirs."""
    c.env["SSL_CERT_FILE"] = str(ca.ca_file)
    try:
        return c.run(name, *args, **kwargs)
    finally:
        del c.env["SSL_CERT_FILE"]


def test_https_only_tls12_and_newer_and_hsts(https, ca):
    resp = httpx.get(f"https://{https.host}/v2/", verify=_ctx(ca.ca_file))
    assert resp.status_code == 200
    assert resp.headers["strict-transport-security"] == "max-age=31536000"
    tls12 = _ctx(ca.ca_file)  # granian's own default would be TLS 1.3 only
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert httpx.get(f"https://{https.host}/v2/", verify=tls12).status_code == 200
    with pytest.raises(httpx.ConnectError):  # an unknown CA is refused: verification is on
        httpx.get(f"https://{https.host}/v2/", verify=True)


def test_plain_http_listener_only_redirects(https):
    resp = httpx.put(f"http://127.0.0.1:{https.redirect_port}/v2/x/manifests/v1?a=b", content=b"{}")
    assert resp.status_code == 308
    assert resp.headers["location"] == f"https://127.0.0.1:{https.port}/v2/x/manifests/v1?a=b"
    with pytest.raises(httpx.HTTPError):  # and the HTTPS port does not speak plain HTTP
        httpx.get(f"http://{https.host}/v2/", timeout=5)


def test_skopeo_podman_crane_regctl_round_trip(tls_clients, https, ca):
    c, host = tls_clients, https.host
    image = debian_oci_layout()
    c.run("skopeo", "copy", "--quiet", "--dest-cert-dir", str(c.cert_dir),
          f"oci:{image.path}:{image.tag}", f"docker://{host}/tls/debian:v1")
    c.run("skopeo", "copy", "--quiet", "--src-cert-dir", str(c.cert_dir),
          f"docker://{host}/tls/debian:v1", f"oci:{c.root / 'skopeo-out'}:v1")
    assert _go(c, ca, "crane", "digest", f"{host}/tls/debian:v1").stdout.strip() == image.digest
    _go(c, ca, "crane", "copy", f"{host}/tls/debian:v1", f"{host}/tls/crane:v1")
    assert c.run("regctl", "image", "digest", f"{host}/tls/crane:v1").stdout.strip() == image.digest
    c.run("regctl", "image", "copy", f"{host}/tls/crane:v1", f"{host}/tls/regctl:v1")
    c.run("podman", "pull", "-q", f"{host}/tls/regctl:v1")  # certs.d, no --tls-verify=false
    c.run("podman", "tag", f"{host}/tls/regctl:v1", f"{host}/tls/podman:v1")
    c.run("podman", "push", "-q", f"{host}/tls/podman:v1")
    assert _go(c, ca, "crane", "ls", f"{host}/tls/podman").stdout.split() == ["v1"]


def test_oras_helm_cosign_round_trip(tls_clients, https, ca, tmp_path):
    c, host = tls_clients, https.host
    src = tmp_path / "src"
    src.mkdir()
    payload = random.Random("tls").randbytes(1024 * 1024)
    (src / "blob.bin").write_bytes(payload)
    c.run("oras", "push", "--ca-file", str(ca.ca_file), f"{host}/tls/oras:v1", "blob.bin", cwd=src)
    out = tmp_path / "oras-out"
    c.run("oras", "pull", "--ca-file", str(ca.ca_file), "-o", str(out), f"{host}/tls/oras:v1")
    assert (out / "blob.bin").read_bytes() == payload

    chart = tiny_chart(tmp_path / "chart", "tlschart")
    c.run("helm", "package", str(chart), "-d", str(tmp_path))
    tgz = tmp_path / "tlschart-0.1.0.tgz"
    pushed = c.run("helm", "push", str(tgz), f"oci://{host}/tls", "--ca-file", str(ca.ca_file))
    digest = find_digest(pushed.stdout + pushed.stderr, "Digest:")
    dest = tmp_path / "helm-out"
    dest.mkdir()
    pulled = c.run("helm", "pull", f"oci://{host}/tls/tlschart", "--version", "0.1.0", "--ca-file", str(ca.ca_file),
                   "-d", str(dest))
    assert find_digest(pulled.stdout + pulled.stderr, "Digest:") == digest
    assert (dest / "tlschart-0.1.0.tgz").read_bytes() == tgz.read_bytes()

    c.run("cosign", "generate-key-pair", "--output-key-prefix", "tls", cwd=tmp_path)
    ref = f"{host}/tls/oras@" + _go(c, ca, "crane", "digest", f"{host}/tls/oras:v1").stdout.strip()
    _go(c, ca, "cosign", "sign", "--yes", "--tlog-upload=false", "--use-signing-config=false", "--key", "tls.key", ref,
          cwd=tmp_path)
    _go(c, ca, "cosign", "verify", "--insecure-ignore-tlog=true", "--key", "tls.pub", ref, cwd=tmp_path)


def _cli(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dockyard", *args], env=env, capture_output=True, text=True,
                          timeout=120, input=input, stdin=None if input is not None else subprocess.DEVNULL)


def test_dockyard_login_over_https_trusts_the_ca_it_is_given(tmp_path, ca):
    cert, key = ca.issue("login-server")
    server = _serve(tmp_path / "data", cert, key, ca.ca_file,
                    env={"DOCKYARD_AUTH_MODE": "token", "DOCKYARD_ADMIN_PASSWORD": ADMIN_PASSWORD})
    try:
        env = {k: v for k, v in dockyard_env().items() if not k.startswith(("DOCKYARD_", "SSL_CERT_"))}
        env.update({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
                    "DOCKER_CONFIG": str(tmp_path / "docker"),
                    "DOCKYARD_CREDENTIALS_FILE": str(tmp_path / "creds.json")})
        url = f"https://{server.host}"
        refused = _cli(env, "login", url, "-u", "admin", "--password-stdin", input=ADMIN_PASSWORD + "\n")
        said = " ".join((refused.stdout + refused.stderr).split())
        assert refused.returncode == 1 and "certificate verify failed" in said and "DOCKYARD_CA_FILE=" in said, refused
        env["DOCKYARD_CA_FILE"] = str(ca.ca_file)
        ok = _cli(env, "login", url, "-u", "admin", "--password-stdin", input=ADMIN_PASSWORD + "\n")
        assert ok.returncode == 0 and "Login Succeeded" in ok.stdout + ok.stderr, ok
        projects = _cli(env, "repos", "ls", "--json")  # a remote command, on the saved https registry
        assert projects.returncode == 0, projects
        assert isinstance(json.loads(projects.stdout), (list, dict))
        env.pop("DOCKYARD_CA_FILE")
        env["SSL_CERT_FILE"] = str(ca.ca_file)
        assert _cli(env, "repos", "ls", "--json").returncode == 0
    finally:
        server.stop()


def test_mutual_tls_requires_a_client_certificate_from_the_ca(tmp_path, ca):
    client_ca = TestCA(tmp_path / "client-ca", "Dockyard Test Client CA")
    client = client_ca.issue("robot", client=True)
    stranger = TestCA(tmp_path / "other-ca", "Someone Else").issue("robot", client=True)
    cert, key = ca.issue("mtls-server")
    server = _serve(tmp_path / "data", cert, key, ca.ca_file, env={"DOCKYARD_TLS_CLIENT_CA_FILE": str(client_ca.ca_file)},
                    ready_ctx=_ctx(ca.ca_file, client))
    try:
        assert httpx.get(f"https://{server.host}/v2/", verify=_ctx(ca.ca_file, client)).status_code == 200
        for ctx in (_ctx(ca.ca_file), _ctx(ca.ca_file, stranger)):
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"https://{server.host}/v2/", verify=ctx)
    finally:
        server.stop()


def test_tls_min_version_13_refuses_a_tls12_client(tmp_path, ca):
    cert, key = ca.issue("tls13-server")
    server = _serve(tmp_path / "data", cert, key, ca.ca_file, env={"DOCKYARD_TLS_MIN_VERSION": "1.3"})
    try:
        tls12 = _ctx(ca.ca_file)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://{server.host}/v2/", verify=tls12)
        assert httpx.get(f"https://{server.host}/v2/", verify=_ctx(ca.ca_file)).status_code == 200
    finally:
        server.stop()


def _peer_serial(host: str, port: int, ca: Path) -> int:
    from cryptography import x509
    import socket

    with socket.create_connection((host, port), timeout=10) as raw, _ctx(ca).wrap_socket(raw, server_hostname=host) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_sighup_reloads_the_certificate_while_a_long_download_completes(tmp_path, ca):
    from cryptography import x509

    live = tmp_path / "live"
    live.mkdir()
    first = ca.issue("first")
    shutil.copy(first[0], live / "cert.pem")
    shutil.copy(first[1], live / "key.pem")
    # One worker, so the download is known to run on the worker that is replaced.
    server = _serve(tmp_path / "data", live / "cert.pem", live / "key.pem", ca.ca_file, args=("--workers", "1"))
    try:
        ctx = _ctx(ca.ca_file)
        blob = random.Random("reload").randbytes(64 * 1024 * 1024)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        put = httpx.post(f"https://{server.host}/v2/tls/big/blobs/uploads/?digest={digest}", content=blob,
                         verify=ctx, timeout=120)
        assert put.status_code == 201, put.text
        old_serial = x509.load_pem_x509_certificate(first[0].read_bytes()).serial_number
        assert _peer_serial("127.0.0.1", server.port, ca.ca_file) == old_serial

        with httpx.Client(verify=ctx, timeout=120) as client, \
                client.stream("GET", f"https://{server.host}/v2/tls/big/blobs/{digest}") as download:
            assert download.status_code == 200
            hasher, chunks = hashlib.sha256(), download.iter_bytes(256 * 1024)
            got = 0
            for chunk in chunks:  # the download is under way on the old worker...
                hasher.update(chunk)
                got += len(chunk)
                if got >= 1024 * 1024:
                    break
            second = ca.issue("second")
            shutil.copy(second[0], live / "cert.pem")  # ...when the renewed pair lands and the server is told
            shutil.copy(second[1], live / "key.pem")
            new_serial = x509.load_pem_x509_certificate(second[0].read_bytes()).serial_number
            server.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while _peer_serial("127.0.0.1", server.port, ca.ca_file) != new_serial:
                assert time.monotonic() < deadline, f"new connections still get the old certificate\n{server.log_tail()}"
                time.sleep(0.2)
            while "Stopping old worker-1" not in server.log_tail(50):  # the old worker is told to stop mid-download
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
            assert "Stopped old worker-1" not in server.log_tail(50)  # it waits for this download
            for chunk in chunks:  # ...and it still completes, byte for byte
                hasher.update(chunk)
                got += len(chunk)
        assert got == len(blob) and "sha256:" + hasher.hexdigest() == digest
        while "Stopped old worker-1" not in server.log_tail(50):  # then it goes
            assert time.monotonic() < deadline + 30, server.log_tail()
            time.sleep(0.1)
        assert server.alive()
        assert _peer_serial("127.0.0.1", server.port, ca.ca_file) == new_serial
    finally:
        server.stop()


def test_sighup_with_a_broken_certificate_keeps_serving_the_old_one(tmp_path, ca):
    from cryptography import x509

    first = ca.issue("keep")
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(first[0], live / "cert.pem")
    shutil.copy(first[1], live / "key.pem")
    server = _serve(tmp_path / "data", live / "cert.pem", live / "key.pem", ca.ca_file)
    try:
        (live / "key.pem").write_bytes(ca.issue("other")[1].read_bytes())  # a key that does not match
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "keeping the running workers" not in server.log_tail(50):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
        serial = x509.load_pem_x509_certificate(first[0].read_bytes()).serial_number
        assert _peer_serial("127.0.0.1", server.port, ca.ca_file) == serial
        assert "respawning workers" not in server.log_tail(200)
    finally:
        server.stop()


def test_sighup_follows_a_certbot_style_symlink_swap(tmp_path, ca):
    """certbot renews by pointing live/*.pem at new files in archive/: the reload reads the link, not the
    file it pointed to at start-up."""
    from cryptography import x509

    live, archive = tmp_path / "live", tmp_path / "archive"
    live.mkdir()
    archive.mkdir()
    first, second = ca.issue("cert1"), ca.issue("cert2")
    for n, (cert, key) in ((1, first), (2, second)):
        shutil.copy(cert, archive / f"cert{n}.pem")
        shutil.copy(key, archive / f"privkey{n}.pem")
    (live / "cert.pem").symlink_to(archive / "cert1.pem")
    (live / "privkey.pem").symlink_to(archive / "privkey1.pem")
    server = _serve(tmp_path / "data", live / "cert.pem", live / "privkey.pem", ca.ca_file, args=("--workers", "1"))
    try:
        serial = lambda p: x509.load_pem_x509_certificate(p.read_bytes()).serial_number  # noqa: E731
        assert _peer_serial("127.0.0.1", server.port, ca.ca_file) == serial(first[0])
        for name, target in (("cert.pem", "cert2.pem"), ("privkey.pem", "privkey2.pem")):
            (live / f"{name}.new").symlink_to(archive / target)
            (live / f"{name}.new").replace(live / name)
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while _peer_serial("127.0.0.1", server.port, ca.ca_file) != serial(second[0]):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
    finally:
        server.stop()


def test_uvicorn_serves_the_same_tls_settings(tmp_path, ca):
    cert, key = ca.issue("uvicorn-server")
    server = _serve(tmp_path / "data", cert, key, ca.ca_file, args=("--server", "uvicorn", "--workers", "1"))
    try:
        resp = httpx.get(f"https://{server.host}/v2/", verify=_ctx(ca.ca_file))
        assert resp.status_code == 200 and resp.headers["strict-transport-security"] == "max-age=31536000"
    finally:
        server.stop()


def test_serve_refuses_a_pair_that_does_not_load(tmp_path, ca):
    cert, _ = ca.issue("mismatch")
    _, other_key = ca.issue("mismatch-other")
    proc = subprocess.run([sys.executable, "-m", "dockyard", "serve", "--port", str(free_port()), "--data-dir",
                           str(tmp_path / "data"), "--tls-cert", str(cert), "--tls-key", str(other_key)],
                          env=dockyard_env({"DOCKYARD_AUTH_MODE": "none"}), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert f"cannot load the TLS certificate {cert}" in proc.stdout + proc.stderr
