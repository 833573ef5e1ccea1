"""Graceful restarts (issue 16): SIGTERM to `dockyard serve` (the main process only, as Kubernetes sends it)
stops new connections, lets requests in flight finish within `shutdown_timeout_seconds`, and a new process
on the same port and data directory carries on: chunked uploads resume, and a skopeo push retrying the
way skopeo does succeeds with nothing committed lost.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time

import httpx
import pytest

from tests.e2e.conftest import Clients, fixture_tree
from tests.support.images import big_oci_layout
from tests.support.server import ServerProcess, free_port, run_dockyard
from tests.functional.helpers import API_CLIENT

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _sigterm_main(server: ServerProcess) -> None:
    """Only the main process, as a container runtime does: granian stops its workers itself."""
    server.proc.send_signal(signal.SIGTERM)


def _start_slow_patch(server: ServerProcess, location: str, data: bytes, started_at: int, piece_seconds: float):
    """PATCH `data` (from offset `started_at`) in 1 MiB pieces, one per `piece_seconds`; returns the thread,
    an event set once the first 2 MiB are sent, and the outcome dict."""
    sent_some = threading.Event()
    outcome: dict[str, object] = {}

    def body():
        for i in range(0, len(data), MiB):
            yield data[i : i + MiB]
            if i >= MiB:
                sent_some.set()
            time.sleep(piece_seconds)

    def send():
        try:
            outcome["response"] = httpx.patch(
                server.url + location, content=body(), timeout=120,
                headers={"Content-Range": f"{started_at}-{started_at + len(data) - 1}", **API_CLIENT})
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    assert sent_some.wait(30), "the slow PATCH never started"
    return sender, outcome


def _resume_point(client: httpx.Client, location: str) -> int:
    r = client.get(location)
    assert r.status_code == 204, r.text
    return int(r.headers["Range"].split("-")[1]) + 1


def test_in_flight_request_finishes_after_sigterm_and_the_upload_resumes(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    chunk1, chunk2, chunk3 = os.urandom(2 * MiB), os.urandom(8 * MiB), os.urandom(3 * MiB)
    blob = chunk1 + chunk2 + chunk3
    env = {"DOCKYARD_WORKERS": "2", "DOCKYARD_SHUTDOWN_TIMEOUT_SECONDS": "60"}
    with run_dockyard(data_dir, port=port, extra_env=env) as server:
        client = httpx.Client(headers=API_CLIENT, base_url=server.url, timeout=30)
        r = client.post("/v2/graceful/blob/blobs/uploads/")
        location = r.headers["Location"]
        r = client.patch(location, content=chunk1, headers={"Content-Range": f"0-{len(chunk1) - 1}"})
        assert r.status_code == 202, r.text
        client.close()
        # chunk 2 takes ~4 s to send; SIGTERM lands ~1 s into it.
        sender, outcome = _start_slow_patch(server, location, chunk2, len(chunk1), piece_seconds=0.5)
        terminated_at = time.monotonic()
        _sigterm_main(server)
        # New connections are refused while the slow request is still being served.
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(server.url + "/v2/", timeout=2)
            except httpx.ConnectError:
                break
            assert time.monotonic() < deadline, "the server still accepts connections after SIGTERM"
            time.sleep(0.05)
        assert sender.is_alive(), "the slow request ended before the listener closed: the test proves nothing"
        sender.join(60)
        response = outcome.get("response")
        assert isinstance(response, httpx.Response), f"the in-flight PATCH failed: {outcome}"
        assert response.status_code == 202, response.text
        assert response.headers["Range"] == f"0-{len(chunk1) + len(chunk2) - 1}"
        assert server.proc.wait(60) == 0
        assert time.monotonic() - terminated_at < 30
        first_log = server.log_tail(40)
        assert "Killing worker" not in first_log and "Traceback" not in first_log, first_log

    with run_dockyard(data_dir, port=port, extra_env=env) as server:
        client = httpx.Client(headers=API_CLIENT, base_url=server.url, timeout=30)
        resume_at = _resume_point(client, location)
        assert resume_at == len(chunk1) + len(chunk2)  # the request finished during shutdown is committed
        r = client.patch(location, content=chunk3, headers={"Content-Range": f"{resume_at}-{len(blob) - 1}"})
        assert r.status_code == 202, r.text
        r = client.put(location, params={"digest": _digest(blob)})
        assert r.status_code == 201, r.text
        r = client.get(f"/v2/graceful/blob/blobs/{_digest(blob)}")
        assert r.status_code == 200 and _digest(r.content) == _digest(blob)
        client.close()


def test_a_request_longer_than_the_timeout_is_cut_and_its_upload_resumes(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    chunk1, chunk2 = os.urandom(2 * MiB), os.urandom(40 * MiB)
    blob = chunk1 + chunk2
    env = {"DOCKYARD_WORKERS": "1", "DOCKYARD_SHUTDOWN_TIMEOUT_SECONDS": "2"}
    with run_dockyard(data_dir, port=port, extra_env=env) as server:
        client = httpx.Client(headers=API_CLIENT, base_url=server.url, timeout=30)
        location = client.post("/v2/graceful/cut/blobs/uploads/").headers["Location"]
        r = client.patch(location, content=chunk1, headers={"Content-Range": f"0-{len(chunk1) - 1}"})
        assert r.status_code == 202, r.text
        client.close()
        # chunk 2 would take ~20 s to send: far longer than the 2 s timeout.
        sender, outcome = _start_slow_patch(server, location, chunk2, len(chunk1), piece_seconds=0.5)
        terminated_at = time.monotonic()
        _sigterm_main(server)
        server.proc.wait(30)
        assert time.monotonic() - terminated_at < 10, "shutdown_timeout_seconds did not bound the shutdown"
        assert "Killing worker" in server.log_tail(40)
        sender.join(60)
        assert "error" in outcome or outcome["response"].status_code >= 400, "the cut PATCH cannot have succeeded"

    with run_dockyard(data_dir, port=port, extra_env=env) as server:
        client = httpx.Client(headers=API_CLIENT, base_url=server.url, timeout=30)
        resume_at = _resume_point(client, location)
        assert resume_at == len(chunk1)  # the cut request committed nothing; the earlier chunk is kept
        r = client.patch(location, content=blob[resume_at:], headers={"Content-Range": f"{resume_at}-{len(blob) - 1}"})
        assert r.status_code == 202, r.text
        r = client.put(location, params={"digest": _digest(blob)})
        assert r.status_code == 201, r.text
        r = client.get(f"/v2/graceful/cut/blobs/{_digest(blob)}")
        assert r.status_code == 200 and _digest(r.content) == _digest(blob)
        client.close()


def test_skopeo_push_of_a_big_image_survives_sigterm_and_restart(tmp_path):
    """The ~380 MB image: SIGTERM once its first layer is committed, restart on the same port and data
    directory; `skopeo copy --retry-times` finishes the push, and every blob and the manifest verify."""
    image = big_oci_layout()
    layers = list(fixture_tree(image).blobs)  # the config and the layers
    data_dir, port = tmp_path / "data", free_port()
    env = {"DOCKYARD_WORKERS": "2", "DOCKYARD_SHUTDOWN_TIMEOUT_SECONDS": "60"}
    with run_dockyard(data_dir, port=port, extra_env=env) as server:
        clients = Clients(tmp_path / "clients", server)
        cmd = [clients.path("skopeo"), "copy", "--retry-times", "6", "--dest-tls-verify=false",
               image.ref, f"docker://{server.host}/graceful/big:v1"]
        push = subprocess.Popen(cmd, env=clients.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        probe = httpx.Client(base_url=server.url, timeout=5)
        committed = None
        deadline = time.monotonic() + 300
        while committed is None:
            assert push.poll() is None, f"skopeo finished before any SIGTERM: {push.communicate()}"
            assert time.monotonic() < deadline, "no layer was committed within 300 s"
            for digest in layers:
                if probe.head(f"/v2/graceful/big/blobs/{digest}").status_code == 200:
                    committed = digest
                    break
            else:
                time.sleep(0.2)
        probe.close()
        _sigterm_main(server)
        assert server.proc.wait(90) == 0
        assert "Killing worker" not in server.log_tail(40)

    with run_dockyard(data_dir, port=port, extra_env=env) as server:
        out, err = push.communicate(timeout=600)
        assert push.returncode == 0, f"skopeo failed:\n{out}\n{err}\n{server.log_tail(40)}"
        assert "retrying" in err.lower(), f"skopeo never had to retry: the restart did not hit the push\n{err}"
        client = httpx.Client(base_url=server.url, timeout=120)
        r = client.get("/v2/graceful/big/manifests/v1", headers={"Accept": image.media_type})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image.digest
        for digest in layers:  # `committed`, which existed at SIGTERM, is among them
            sha = hashlib.sha256()
            with client.stream("GET", f"/v2/graceful/big/blobs/{digest}") as blob:
                assert blob.status_code == 200
                for piece in blob.iter_bytes(MiB):
                    sha.update(piece)
            assert "sha256:" + sha.hexdigest() == digest
        client.close()
