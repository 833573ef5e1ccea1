"""The Harbor Pluggable Scanner API client: protocol details against httpx.MockTransport, then whole
scans against the test adapter (tests/support/scanner_adapter.py) pulling from a tiny registry."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from dockyard.scanning.harbor import (
    REPORT_HARBOR_V10,
    REPORT_V11,
    HarborScannerClient,
    ScannerError,
    finding_from_report,
    normalise_severity,
)
from dockyard.scanning.matcher import Finding
from tests.support.scanner_adapter import run_scanner_adapter

DIGEST = "sha256:" + "ab" * 32
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
METADATA_V11 = {
    "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50.1"},
    "capabilities": [
        {"type": "vulnerability", "consumes_mime_types": [OCI_MANIFEST, DOCKER_MANIFEST],
         "produces_mime_types": [REPORT_HARBOR_V10, "application/vnd.security.vulnerability.report;version=1.1"]},
        {"type": "sbom", "consumes_mime_types": [OCI_MANIFEST],
         "produces_mime_types": ["application/vnd.security.sbom.report+json; version=1.0"]},
    ],
    "properties": {"harbor.scanner-adapter/scanner-type": "os-package-vulnerability"},
}
METADATA_V10 = {
    "scanner": {"name": "Clair", "vendor": "CoreOS", "version": "2.1"},
    "capabilities": [{"consumes_mime_types": [DOCKER_MANIFEST], "produces_mime_types": [REPORT_HARBOR_V10]}],
}
VULN = {
    "id": "CVE-2017-8283", "package": "dpkg", "version": "1.17.27", "fix_version": "1.18.0", "severity": "High",
    "description": "dpkg-source is able to use a non-GNU patch program", "links": ["https://example.test/CVE"],
    "preferred_cvss": {"score_v3": 7.5, "score_v2": 5.0, "vector_v3": "CVSS:3.0/AV:N", "vector_v2": "AV:N/AC:L"},
    "cwe_ids": ["CWE-20"], "vendor_attributes": {}, "layer": {"digest": "sha256:" + "cd" * 32},
}
SCAN_KWARGS = dict(registry_url="http://registry.test", registry_authorization="Bearer pulltoken",
                   repository="team/app", digest=DIGEST, tag="1.0", mime_type=OCI_MANIFEST)


def error(status, message):
    return httpx.Response(status, json={"error": {"message": message}},
                          headers={"content-type": "application/vnd.scanner.adapter.error+json; version=1.0"})


class FakeAdapter:
    """A scripted adapter for MockTransport: a queue of report answers, every request recorded."""

    def __init__(self, metadata=METADATA_V11, metadata_type="application/vnd.scanner.adapter.metadata+json; version=1.1",
                 reports=(), scan_answer=None):
        self.metadata, self.metadata_type = metadata, metadata_type
        self.reports = list(reports)
        self.scan_answer = scan_answer or httpx.Response(202, json={"id": "req-1"})
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/v1/metadata":
            return httpx.Response(200, json=self.metadata, headers={"content-type": self.metadata_type})
        if path == "/api/v1/scan" and request.method == "POST":
            return self.scan_answer
        if path == "/api/v1/scan/req-1/report":
            return self.reports.pop(0)
        return error(404, f"no route {path}")

    def client(self, url="http://adapter.test", authorization="Bearer secret") -> HarborScannerClient:
        http = httpx.Client(transport=httpx.MockTransport(self))
        return HarborScannerClient(url, authorization, client=http, name="trivy")

    def of(self, path):
        return [r for r in self.requests if r.url.path == path]


def pending(refresh_after="2"):
    return httpx.Response(302, headers={"Refresh-After": refresh_after} if refresh_after is not None else {})


def done(vulnerabilities=(), content_type=REPORT_V11):
    return httpx.Response(200, json={"severity": "High", "vulnerabilities": list(vulnerabilities)},
                          headers={"content-type": content_type})


# -- protocol ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://adapter.test", "http://adapter.test/", "http://adapter.test/api/v1",
                                 "http://adapter.test/api/v1/"])
def test_base_url_tolerates_slash_and_api_prefix(url):
    adapter = FakeAdapter()
    adapter.client(url).metadata()
    assert str(adapter.requests[0].url) == "http://adapter.test/api/v1/metadata"


def test_metadata_headers_and_vulnerability_capability():
    adapter = FakeAdapter()
    info = adapter.client().metadata()
    [request] = adapter.requests
    assert request.headers["accept"] == "application/vnd.scanner.adapter.metadata+json; version=1.1"
    assert request.headers["authorization"] == "Bearer secret"
    assert (info.name, info.vendor, info.version, info.api_version) == ("Trivy", "Aqua Security", "0.50.1", "1.1")
    assert info.consumes == (OCI_MANIFEST, DOCKER_MANIFEST)
    assert "application/vnd.security.sbom.report+json; version=1.0" not in info.produces  # sbom ignored
    assert info.properties == {"harbor.scanner-adapter/scanner-type": "os-package-vulnerability"}


def test_submit_sends_the_v11_scan_request():
    adapter = FakeAdapter()
    assert adapter.client().submit(**SCAN_KWARGS) == "req-1"
    [request] = adapter.of("/api/v1/scan")
    assert request.headers["content-type"] == "application/vnd.scanner.adapter.scan.request+json; version=1.1"
    assert request.headers["authorization"] == "Bearer secret"
    assert json.loads(request.content) == {
        "registry": {"url": "http://registry.test", "authorization": "Bearer pulltoken"},
        "artifact": {"repository": "team/app", "digest": DIGEST, "tag": "1.0", "mime_type": OCI_MANIFEST},
        # the 1.1 report is preferred, spelled as the spec spells it
        "enabled_capabilities": [{"type": "vulnerability", "produces_mime_types": [REPORT_V11]}],
    }


def test_v10_adapter_gets_a_v10_request_and_the_harbor_report_type():
    adapter = FakeAdapter(METADATA_V10, "application/vnd.scanner.adapter.metadata+json; version=1.0",
                          reports=[done([VULN], REPORT_HARBOR_V10)])
    client = adapter.client()
    assert client.metadata().api_version == "1.0"
    request_id = client.submit(**{**SCAN_KWARGS, "tag": None, "registry_authorization": None,
                                  "mime_type": DOCKER_MANIFEST})
    [scan] = adapter.of("/api/v1/scan")
    assert scan.headers["content-type"] == "application/vnd.scanner.adapter.scan.request+json; version=1.0"
    assert json.loads(scan.content) == {
        "registry": {"url": "http://registry.test"},
        "artifact": {"repository": "team/app", "digest": DIGEST, "mime_type": DOCKER_MANIFEST},
    }
    findings, wait = client.poll(request_id)
    assert [f.id for f in findings] == ["CVE-2017-8283"] and wait == 0
    assert adapter.of("/api/v1/scan/req-1/report")[0].headers["accept"] == REPORT_HARBOR_V10


def test_submit_refuses_what_the_adapter_does_not_consume():
    adapter = FakeAdapter()
    with pytest.raises(ScannerError, match="does not scan application/vnd.oci.image.index.v1"):
        adapter.client().submit(**{**SCAN_KWARGS, "mime_type": "application/vnd.oci.image.index.v1+json"})
    assert not adapter.of("/api/v1/scan")


def test_submit_refuses_an_adapter_without_a_readable_report():
    metadata = {"scanner": {"name": "x"}, "capabilities": [
        {"type": "vulnerability", "consumes_mime_types": [OCI_MANIFEST],
         "produces_mime_types": ["application/vnd.scanner.adapter.vuln.report.raw"]}]}
    with pytest.raises(ScannerError, match="produces no report Dockyard reads"):
        FakeAdapter(metadata).client().submit(**SCAN_KWARGS)


@pytest.mark.parametrize("header, seconds", [("3", 3.0), (None, 5.0), ("abc", 5.0), ("0", 0.1), ("0.5", 0.5),
                                             ("1000", 60.0), ("-4", 0.1)])
def test_poll_while_running_returns_refresh_after(header, seconds):
    adapter = FakeAdapter(reports=[pending(header)])
    assert adapter.client().poll("req-1") == (None, seconds)


def test_302_is_not_followed():
    adapter = FakeAdapter(reports=[httpx.Response(302, headers={"Refresh-After": "1",
                                                                "Location": "http://adapter.test/elsewhere"})])
    assert adapter.client().poll("req-1") == (None, 1.0)
    assert [r.url.path for r in adapter.requests] == ["/api/v1/metadata", "/api/v1/scan/req-1/report"]


def test_poll_accepts_the_report_type_and_converts():
    adapter = FakeAdapter(reports=[done([VULN])])
    findings, wait = adapter.client().poll("req-1")
    assert adapter.of("/api/v1/scan/req-1/report")[0].headers["accept"] == REPORT_V11
    assert wait == 0.0
    assert findings == [Finding(
        id="CVE-2017-8283", aliases=(), related=(), summary="dpkg-source is able to use a non-GNU patch program",
        severity="High", cvss_score=7.5, cvss_vector="CVSS:3.0/AV:N", ecosystem="", package="dpkg",
        source_package=None, installed_version="1.17.27", fixed_version="1.18.0", layer="sha256:" + "cd" * 32,
    )]


def test_null_vulnerabilities_is_a_clean_report():
    adapter = FakeAdapter(reports=[httpx.Response(200, json={"vulnerabilities": None})])
    assert adapter.client().poll("req-1") == ([], 0.0)


@pytest.mark.parametrize("given, expected", [("Critical", "Critical"), ("HIGH", "High"), ("medium", "Medium"),
                                             ("Low", "Low"), ("Negligible", "Negligible"), ("None", "Negligible"),
                                             ("Unknown", "Unknown"), ("important", "Unknown"), (None, "Unknown")])
def test_severity_normalised_to_harbor_scale(given, expected):
    assert normalise_severity(given) == expected
    assert finding_from_report({**VULN, "severity": given}).severity == expected


def test_conversion_edge_cases():
    finding = finding_from_report({
        "id": "GHSA-xxxx", "package": "requests", "version": "2.0", "fix_version": "", "severity": "Medium",
        "description": "x" * 2000, "preferred_cvss": {"score_v3": None, "score_v2": 4.3, "vector_v2": "AV:N/AC:M"},
        "vendor_attributes": {"pkg_type": "python-pkg", "aliases": ["CVE-2024-1", 7]},
    })
    assert finding.fixed_version is None
    assert (finding.cvss_score, finding.cvss_vector) == (4.3, "AV:N/AC:M")
    assert len(finding.summary) == 500 and finding.summary.endswith("…")
    assert finding.ecosystem == "python-pkg" and finding.aliases == ("CVE-2024-1",)
    assert finding.layer is None
    bare = finding_from_report({"id": "CVE-1"})
    assert (bare.cvss_score, bare.cvss_vector, bare.summary, bare.fixed_version) == (None, None, "", None)


def test_malformed_report_raises():
    adapter = FakeAdapter(reports=[done([{"package": "dpkg"}])])
    with pytest.raises(ScannerError, match="malformed vulnerability"):
        adapter.client().poll("req-1")


@pytest.mark.parametrize("response, status, message", [
    (error(404, "cannot find scan request req-1"), 404, "cannot find scan request req-1"),
    (httpx.Response(404), 404, "Not Found"),
    (error(500, "failed to pull image: 401 UNAUTHORIZED"), 500, "failed to pull image: 401 UNAUTHORIZED"),
    (error(501, "unsupported report mime type"), 501, "unsupported report mime type"),
    (httpx.Response(400, text="plain words"), 400, "plain words"),
])
def test_report_errors_carry_the_adapter_message(response, status, message):
    adapter = FakeAdapter(reports=[response])
    with pytest.raises(ScannerError) as caught:
        adapter.client().poll("req-1")
    exc = caught.value
    assert (exc.adapter, exc.status, exc.message) == ("trivy", status, message)
    assert str(exc) == f"scanner adapter 'trivy': GET /api/v1/scan/req-1/report: HTTP {status}: {message}"


@pytest.mark.parametrize("status", [400, 422, 500, 501])
def test_submit_errors(status):
    adapter = FakeAdapter(scan_answer=error(status, "missing field artifact.digest"))
    with pytest.raises(ScannerError, match=rf"POST /api/v1/scan: HTTP {status}: missing field artifact.digest"):
        adapter.client().submit(**SCAN_KWARGS)


def test_metadata_error():
    def handler(request):
        return error(500, "vulnerability database not downloaded yet")
    client = HarborScannerClient("http://adapter.test", client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(ScannerError, match="'adapter': GET /api/v1/metadata: HTTP 500: vulnerability database"):
        client.metadata()


def test_connection_error_becomes_scanner_error():
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)
    client = HarborScannerClient("http://adapter.test", client=httpx.Client(transport=httpx.MockTransport(handler)),
                                 name="trivy")
    with pytest.raises(ScannerError) as caught:
        client.metadata()
    assert caught.value.status is None and "connection refused" in str(caught.value)


class FakeTime:
    def __init__(self):
        self.now, self.sleeps = 100.0, []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_scan_polls_as_told_until_done():
    adapter = FakeAdapter(reports=[pending("2"), pending(None), done([VULN])])
    time = FakeTime()
    findings = adapter.client().scan(**SCAN_KWARGS, sleep=time.sleep, clock=time.clock)
    assert [f.id for f in findings] == ["CVE-2017-8283"]
    assert time.sleeps == [2.0, 5.0]
    assert len(adapter.of("/api/v1/scan/req-1/report")) == 3


def test_scan_deadline():
    adapter = FakeAdapter(reports=[pending("5") for _ in range(10)])
    time = FakeTime()
    with pytest.raises(ScannerError, match=r"no report within 12 s for team/app@sha256:abab") as caught:
        adapter.client().scan(**SCAN_KWARGS, deadline_seconds=12, sleep=time.sleep, clock=time.clock)
    assert time.sleeps == [5.0, 5.0, 2.0]  # the last poll happens at the deadline
    assert len(adapter.of("/api/v1/scan/req-1/report")) == 4
    assert caught.value.status is None


# -- against the test adapter, which really pulls from a registry ------------------------------


CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": CONFIG_DIGEST, "size": len(CONFIG)},
    "layers": [],
}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
ROBOT_BASIC = "Basic " + base64.b64encode(b"robot$team+scanner:pw").decode()


class _Registry(BaseHTTPRequestHandler):
    """One image in `team/app`, pulled with `Bearer pulltoken`; `/token` swaps the robot's Basic
    credentials for that token, as a Docker token service would."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlsplit(self.path)
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if url.path == "/token":
            if self.headers.get("Authorization") != ROBOT_BASIC:
                return self._send(401)
            if parse_qs(url.query).get("scope") != ["repository:team/app:pull"]:
                return self._send(400)
            return self._send(200, json.dumps({"token": "pulltoken"}).encode())
        if self.headers.get("Authorization") != "Bearer pulltoken":
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()
            challenge = f'Bearer realm="{base}/token",service="registry.test",scope="repository:team/app:pull"'
            return self._send(401, body, {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
        if url.path == f"/v2/team/app/manifests/{MANIFEST_DIGEST}":
            return self._send(200, MANIFEST, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": MANIFEST_DIGEST})
        if url.path == f"/v2/team/app/blobs/{CONFIG_DIGEST}":
            return self._send(200, CONFIG, {"Content-Type": "application/octet-stream"})
        return self._send(404)


@pytest.fixture
def registry_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@contextlib.contextmanager
def real_client(adapter, authorization="Bearer secret"):
    with httpx.Client(trust_env=False) as http:  # loopback: never through an environment proxy
        yield HarborScannerClient(adapter.url + "/", authorization, client=http, name="trivy-test")


def real_scan(client, registry_url, authorization, **kwargs):
    return client.scan(registry_url=registry_url, registry_authorization=authorization, repository="team/app",
                       digest=MANIFEST_DIGEST, tag="v1", mime_type=OCI_MANIFEST, deadline_seconds=30, **kwargs)


def test_real_adapter_scans_with_the_credentials_given(registry_url):
    sleeps = []
    with run_scanner_adapter(findings_by_digest={CONFIG_DIGEST: [VULN]}, pending_polls=2, refresh_after=0) as adapter:
        with real_client(adapter) as client:
            findings = real_scan(client, registry_url, "Bearer pulltoken", sleep=lambda s: sleeps.append(s))
    assert [(f.id, f.severity, f.fixed_version) for f in findings] == [("CVE-2017-8283", "High", "1.18.0")]
    assert sleeps == [0.1, 0.1]  # Refresh-After: 0, clamped
    assert {r.headers.get("authorization") for r in adapter.requests} == {"Bearer secret"}
    [scan] = [r.json() for r in adapter.requests if r.method == "POST"]
    assert scan["registry"] == {"url": registry_url, "authorization": "Bearer pulltoken"}
    assert scan["artifact"] == {"repository": "team/app", "digest": MANIFEST_DIGEST, "tag": "v1",
                                "mime_type": OCI_MANIFEST}
    assert [(r.url.rsplit("/", 2)[-2], r.authorization, r.status) for r in adapter.registry_requests] == [
        ("manifests", "Bearer pulltoken", 200), ("blobs", "Bearer pulltoken", 200)]


def test_real_adapter_exchanges_basic_robot_credentials_for_a_token(registry_url):
    with run_scanner_adapter(pending_polls=0) as adapter, real_client(adapter) as client:
        assert real_scan(client, registry_url, ROBOT_BASIC) == []  # nothing listed: clean report
    assert [(r.authorization, r.status) for r in adapter.registry_requests] == [
        (ROBOT_BASIC, 401), (ROBOT_BASIC, 200), ("Bearer pulltoken", 200), ("Bearer pulltoken", 200)]


def test_real_adapter_refused_pull_fails_the_scan(registry_url):
    with run_scanner_adapter(pending_polls=1, refresh_after=0) as adapter, real_client(adapter) as client:
        with pytest.raises(ScannerError) as caught:
            real_scan(client, registry_url, "Bearer wrong")
    exc = caught.value
    assert exc.status == 500 and exc.adapter == "trivy-test"
    assert "registry answered 401 UNAUTHORIZED: authentication required" in exc.message
    assert "HTTP 500" in str(exc) and "/report" in exc.call


def test_real_adapter_requires_its_own_authorization(registry_url):
    with run_scanner_adapter() as adapter, real_client(adapter, authorization="Bearer nope") as client:
        with pytest.raises(ScannerError, match="GET /api/v1/metadata: HTTP 401: unauthorized"):
            real_scan(client, registry_url, "Bearer pulltoken")


def test_real_v10_adapter(registry_url):
    with run_scanner_adapter(findings_by_digest={MANIFEST_DIGEST: [VULN]}, api_version="1.0", refresh_after=0,
                             require_auth=None) as adapter:
        with real_client(adapter, authorization=None) as client:
            assert [f.id for f in real_scan(client, registry_url, "Bearer pulltoken")] == ["CVE-2017-8283"]
    [scan] = [r for r in adapter.requests if r.method == "POST"]
    assert scan.headers["content-type"] == "application/vnd.scanner.adapter.scan.request+json; version=1.0"
    assert "enabled_capabilities" not in scan.json()
    assert all("authorization" not in r.headers for r in adapter.requests)


def test_real_adapter_validates_scan_requests():
    good = {"registry": {"url": "http://r.test"},
            "artifact": {"repository": "team/app", "digest": DIGEST, "mime_type": OCI_MANIFEST}}
    content_type = "application/vnd.scanner.adapter.scan.request+json; version=1.1"
    cases = [
        (b"{not json", content_type, 400, "invalid JSON"),
        (json.dumps({**good, "registry": "r.test"}).encode(), content_type, 400, "wrong type"),
        (json.dumps({**good, "artifact": {**good["artifact"], "digest": ""}}).encode(), content_type, 422,
         "missing field artifact.digest"),
        (json.dumps({**good, "artifact": {**good["artifact"], "mime_type": "text/plain"}}).encode(), content_type,
         422, "unsupported artifact.mime_type"),
        (json.dumps({**good, "enabled_capabilities": [{"type": "sbom"}]}).encode(), content_type, 501,
         "unsupported capability: sbom"),
        (json.dumps(good).encode(), "application/json", 415, "unsupported media type"),
    ]
    with run_scanner_adapter(require_auth=None) as adapter, httpx.Client(trust_env=False) as http:
        for body, ctype, status, message in cases:
            response = http.post(adapter.url + "/api/v1/scan", content=body, headers={"Content-Type": ctype})
            assert response.status_code == status, body
            assert response.headers["content-type"] == "application/vnd.scanner.adapter.error+json; version=1.0"
            assert message in response.json()["error"]["message"]
        client = HarborScannerClient(adapter.url, client=http)
        with pytest.raises(ScannerError, match="HTTP 404: cannot find scan request nope"):
            client.poll("nope")
