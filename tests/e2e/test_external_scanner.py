"""An external scanner through the Harbor Pluggable Scanner API v1.2, against a real `dockyard serve`
with token auth: Dockyard submits the scan with a short-lived pull token, the adapter really pulls
the image over /v2 (past a block-unscanned gate: the scanner's own pulls are exempt), and its
report drives the pull gate seen by skopeo."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from tests.support.scan_images import FIXED, VULNERABLE, java_app
from tests.support.scanner_adapter import run_scanner_adapter
from tests.support.server import run_dockyard, tool
from tests.functional.helpers import API_CLIENT

pytestmark = pytest.mark.e2e

ADMIN = ("admin", "Adm1n-external-scanner")
DEPLOY = ("deploy", "Depl0y-external-scanner")
CVE = "CVE-2099-0001"


def _skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("skopeo"), *args], capture_output=True, text=True, timeout=120)


def test_harbor_api_adapter_drives_the_pull_gate(tmp_path):
    bad = java_app(tmp_path / "bad", VULNERABLE)
    good = java_app(tmp_path / "good", FIXED)
    vuln = {"id": CVE, "package": "log4j-core", "version": VULNERABLE, "fix_version": FIXED, "severity": "Critical",
            "description": "test advisory"}
    with run_scanner_adapter({bad.digest: [vuln]}, pending_polls=1, require_auth="Bearer adapter-secret") as adapter, \
            run_dockyard(tmp_path / "data", auth_mode="token", admin_password=ADMIN[1],
                         extra_env={"DOCKYARD_SECURITY_CACHE_SECONDS": "0"}) as server:
        api = httpx.Client(headers=API_CLIENT, base_url=f"http://{server.host}/api/v1", auth=ADMIN, timeout=30)
        assert api.post("/projects", json={"name": "prod"}).status_code == 201
        # Gates hold accounts that cannot push; the deploy account is a guest.
        assert api.post("/users", json={"username": "deploy", "password": DEPLOY[1]}).status_code == 201
        assert api.post("/projects/prod/members", json={"username": "deploy", "role": "guest"}).status_code == 201
        r = api.post("/system/scanners", json={"name": "trivy", "url": adapter.url, "authorization": "Bearer adapter-secret"})
        assert r.status_code == 201, r.text
        r = api.post("/system/scanners", json={"name": "down", "url": "http://127.0.0.1:9"})
        assert r.status_code == 400 and "metadata" in r.json()["errors"][0]["message"]
        r = api.patch("/projects/prod/security", json={"scanner": "trivy", "block_severity": "critical", "unscanned": "block"})
        assert r.status_code == 200, r.text
        for image, tag in ((bad, "bad"), (good, "good")):
            proc = _skopeo("copy", "--dest-tls-verify=false", "--dest-creds", ":".join(ADMIN), image.oci_ref,
                           f"docker://{server.host}/prod/app:{tag}")
            assert proc.returncode == 0, proc.stderr
            assert api.post(f"/repositories/prod/app/artifacts/{tag}/scan").status_code == 202
        deadline = time.monotonic() + 90
        for tag in ("bad", "good"):
            while not (status := api.get(f"/repositories/prod/app/artifacts/{tag}/scan").json())["scanned"]:
                assert time.monotonic() < deadline, status
                time.sleep(0.3)
            assert status["scanner"] == "trivy"
        assert status["summary"]["Critical"] == 0
        # The adapter pulled each manifest with the bearer token Dockyard gave it, and was let through.
        pulls = [r for r in adapter.registry_requests if "/manifests/" in r.url]
        assert {r.status for r in pulls} == {200} and len(pulls) >= 2
        assert all(r.authorization and r.authorization.startswith("Bearer ") for r in pulls)
        scan_calls = [r for r in adapter.requests if r.path == "/api/v1/scan"]
        assert all(r.headers["authorization"] == "Bearer adapter-secret" for r in scan_calls)

        denied = _skopeo("inspect", "--tls-verify=false", "--creds", ":".join(DEPLOY), f"docker://{server.host}/prod/app:bad")
        assert denied.returncode != 0
        assert f"1 critical vulnerability ({CVE}); policy block-critical of project prod" in denied.stderr
        allowed = _skopeo("inspect", "--tls-verify=false", "--creds", ":".join(DEPLOY), f"docker://{server.host}/prod/app:good")
        assert allowed.returncode == 0, allowed.stderr
        # A project still using the scanner keeps it registered.
        assert api.delete("/system/scanners/trivy").status_code == 409
