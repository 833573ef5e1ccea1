"""Issue 19 item 3 against a real `dockyard serve` and the real CLI: an image whose dpkg status
holds a clear-screen, a window title, an OSC 8 link and a C1 CSI is scanned with `dockyard scan
--wait`; neither the command's output nor the server's log carries a raw ESC, BEL or C1 byte,
and both show the hostile text escaped."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from tests.support import hostile_images
from tests.support.server import dockyard_env, run_dockyard

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "hostile-output-admin-pw"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def push(api: httpx.Client, repo: str, tag: str, built) -> None:
    for digest, data in built.blobs.items():
        r = api.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        r = api.put(f"{location}{'&' if '?' in location else '?'}digest={digest}", content=data,
                    headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    r = api.put(f"/v2/{repo}/manifests/{tag}", content=built.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text


def test_item3_scan_wait_output_and_server_log_carry_no_raw_escapes(tmp_path):
    data = tmp_path / "data"
    osv = hostile_images.hostile_advisory(tmp_path / "osv").parent
    # vulndb update never creates a data directory: make it first, as `serve` or `admin migrate` does.
    subprocess.run([sys.executable, "-m", "dockyard", "admin", "migrate", "--data-dir", str(data)], env=dockyard_env(),
                   check=True, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    proc = subprocess.run([sys.executable, "-m", "dockyard", "vulndb", "update", "--data-dir", str(data), "--from", str(osv)],
                          env=dockyard_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    image = hostile_images.escape_sequences(tmp_path / "image")
    with run_dockyard(data, admin_password=ADMIN_PASSWORD) as server:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=120, auth=("admin", ADMIN_PASSWORD)) as api:
            r = api.post("/api/v1/projects", json={"name": "prod", "public": True})
            assert r.status_code == 201, r.text
            push(api, "prod/app", "1", image)
        cli = subprocess.run(
            [sys.executable, "-m", "dockyard", "scan", "--wait", "--timeout", "240", "--registry", server.url,
             "-u", "admin", "-p", ADMIN_PASSWORD, "prod/app:1"],
            env=dockyard_env({"COLUMNS": "250", "DOCKER_CONFIG": str(tmp_path / "docker"),
                              "DOCKYARD_CREDENTIALS_FILE": str(tmp_path / "creds.json")}),
            capture_output=True, timeout=300, stdin=subprocess.DEVNULL,
        )
        log = server.log_path.read_bytes()[server.log_offset:]
    output = (cli.stdout + cli.stderr).decode("utf-8")
    # The verdict was printed (a finding and the incomplete report), exit 1 for the incomplete scan.
    assert cli.returncode == 1, output
    assert "CVE-2099-0001" in output and "incomplete" in output
    assert "evil\\x1b]0;pwned" in output and "1.0-1\\x1b[2J" in output and "0.9\\x9b2J" in output
    assert not RAW_CONTROL.search(output.replace("\n", "")), repr(output)
    text = log.decode("utf-8")
    assert "incomplete" in text and "\\x9b2J" in text, text[-3000:]
    assert not RAW_CONTROL.search(text.replace("\n", "")), repr(text[-3000:])
