"""A real Harbor Pluggable Scanner API v1.2 adapter for tests (standard library + httpx only).

It behaves like Harbor's Trivy adapter towards its client and towards the registry, but looks
vulnerabilities up in a table instead of running a scanner:

- `GET /api/v1/metadata`: one vulnerability capability (image manifests in, the 1.1 and Harbor
  1.0 reports out); `api_version="1.0"` imitates an adapter written against the first spec.
- `POST /api/v1/scan`: checks Content-Type (415), JSON (400: bad JSON or wrong value types),
  required fields and the artifact mime type (422) and `enabled_capabilities` (501), answers
  202 `{"id": …}` and pulls in a background thread: the manifest by digest, then the config
  blob, both digest-verified, sending `registry.authorization`. Given Basic credentials and a
  Bearer challenge it fetches a token from the challenge's realm first, as Trivy does.
- `GET /api/v1/scan/{id}/report`: 302 + `Refresh-After` for the first `pending_polls` polls, then
  500 with the pull error, or 200 with `findings_by_digest[manifest digest] +
  findings_by_digest[config digest]` (nothing listed: a clean report).

Every call to the adapter lands in `.requests`, every call it made to the registry in
`.registry_requests`:

    with run_scanner_adapter(findings_by_digest={config_digest: [vuln]}) as adapter:
        HarborScannerClient(adapter.url, "Bearer secret").scan(...)
        assert adapter.registry_requests[0].authorization == "Bearer pulltoken"
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, Mapping

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REPORT_V11 = "application/vnd.security.vulnerability.report; version=1.1"
REPORT_HARBOR_V10 = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
ERROR_TYPE = "application/vnd.scanner.adapter.error+json; version=1.0"
SCAN_REQUEST = "application/vnd.scanner.adapter.scan.request+json; version="
SCAN_RESPONSE = "application/vnd.scanner.adapter.scan.response+json; version=1.0"
METADATA = "application/vnd.scanner.adapter.metadata+json; version="
SCALE = ("None", "Unknown", "Negligible", "Low", "Medium", "High", "Critical")
DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
REPORT_PATH = re.compile(r"^/api/v1/scan/(?P<id>[^/]+)/report$")


def _mime(value: str) -> str:
    return "".join(value.split()).lower()


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    def json(self):
        return json.loads(self.body)


@dataclass
class RegistryRequest:
    method: str
    url: str
    authorization: str | None
    status: int


@dataclass
class _Scan:
    request: dict
    polls: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    vulnerabilities: list = field(default_factory=list)
    error: str | None = None


class PullError(Exception):
    pass


class ScannerAdapter:
    def __init__(self, findings_by_digest: Mapping[str, list[dict]], pending_polls: int, require_auth: str | None,
                 refresh_after: int, api_version: str):
        self.findings_by_digest = dict(findings_by_digest)
        self.pending_polls = pending_polls
        self.require_auth = require_auth
        self.refresh_after = refresh_after
        self.api_version = api_version
        self.produces = [REPORT_V11, REPORT_HARBOR_V10] if api_version == "1.1" else [REPORT_HARBOR_V10]
        self.requests: list[RecordedRequest] = []
        self.registry_requests: list[RegistryRequest] = []
        self.scans: dict[str, _Scan] = {}
        self.url = ""
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- scanning ---------------------------------------------------------------------------

    def start_scan(self, request: dict) -> str:
        scan_id = str(uuid.uuid4())
        scan = _Scan(request)
        with self._lock:
            self.scans[scan_id] = scan
        thread = threading.Thread(target=self._run, args=(scan,), daemon=True, name=f"scan-{scan_id[:8]}")
        self._threads.append(thread)
        thread.start()
        return scan_id

    def _run(self, scan: _Scan) -> None:
        registry, artifact = scan.request["registry"], scan.request["artifact"]
        try:
            digests = self._pull(registry["url"].rstrip("/"), registry.get("authorization"),
                                 artifact["repository"], artifact["digest"])
            scan.vulnerabilities = [v for d in digests for v in self.findings_by_digest.get(d, [])]
        except (PullError, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            scan.error = f"scan failed: {exc}"
        finally:
            scan.done.set()

    def _pull(self, base: str, authorization: str | None, repository: str, digest: str) -> tuple[str, str]:
        with httpx.Client(trust_env=False, timeout=10, follow_redirects=True) as http:
            headers = {"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"}
            if authorization:
                headers["Authorization"] = authorization
            manifest_url = f"{base}/v2/{repository}/manifests/{digest}"
            response = self._get(http, manifest_url, headers)
            challenge = response.headers.get("www-authenticate", "")
            if response.status_code == 401 and challenge.lower().startswith("bearer ") and authorization \
                    and authorization.lower().startswith("basic "):
                headers["Authorization"] = "Bearer " + self._token(http, challenge, authorization)
                response = self._get(http, manifest_url, headers)
            if response.status_code != 200:
                raise PullError(f"GET {manifest_url}: registry answered {response.status_code} {_oci_message(response)}")
            _verify(response.content, digest, "manifest")
            manifest = response.json()
            media_type = manifest.get("mediaType") or response.headers.get("content-type", "")
            if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
                raise PullError(f"unsupported manifest type {media_type!r}")
            config_digest = manifest["config"]["digest"]
            blob_url = f"{base}/v2/{repository}/blobs/{config_digest}"
            response = self._get(http, blob_url, {"Authorization": headers["Authorization"]}
                                 if "Authorization" in headers else {})
            if response.status_code != 200:
                raise PullError(f"GET {blob_url}: registry answered {response.status_code} {_oci_message(response)}")
            _verify(response.content, config_digest, "config blob")
            return digest, config_digest

    def _token(self, http: httpx.Client, challenge: str, authorization: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise PullError(f"Bearer challenge without realm: {challenge!r}")
        response = self._get(http, realm, {"Authorization": authorization}, params=params)
        if response.status_code != 200:
            raise PullError(f"token request to {realm}: answered {response.status_code}")
        body = response.json()
        return body.get("token") or body["access_token"]

    def _get(self, http: httpx.Client, url: str, headers: dict, **kwargs) -> httpx.Response:
        response = http.get(url, headers=headers, **kwargs)
        with self._lock:
            self.registry_requests.append(
                RegistryRequest("GET", str(response.request.url), headers.get("Authorization"), response.status_code))
        return response

    def report(self, scan: _Scan) -> dict:
        vulnerabilities = scan.vulnerabilities
        severities = [v.get("severity") for v in vulnerabilities if v.get("severity") in SCALE]
        return {
            "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
            "artifact": scan.request["artifact"],
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.0.0-test"},
            "severity": max(severities, key=SCALE.index, default="None"),
            "vulnerabilities": vulnerabilities,
        }

    def metadata(self) -> dict:
        capability = {"consumes_mime_types": [OCI_MANIFEST, DOCKER_MANIFEST], "produces_mime_types": self.produces}
        if self.api_version == "1.1":
            capability = {"type": "vulnerability", **capability}
        return {
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.0.0-test"},
            "capabilities": [capability],
            "properties": {"harbor.scanner-adapter/scanner-type": "os-package-vulnerability",
                           "harbor.scanner-adapter/vulnerability-database-updated-at": "2024-01-01T00:00:00Z"},
        }

    def close(self) -> None:
        for thread in self._threads:
            thread.join(timeout=15)


def _verify(content: bytes, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if algorithm not in ("sha256", "sha512") or hashlib.new(algorithm, content).hexdigest() != expected:
        raise PullError(f"{what} does not match digest {digest}")


def _oci_message(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        return ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: dict | None = None, content_type: str = "application/json",
              headers: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, status: int, message: str, headers: dict | None = None) -> None:
        self._send(status, {"error": {"message": message}}, ERROR_TYPE, headers)

    def _record(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        recorded = RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                   self.rfile.read(length) if length else b"")
        adapter = self.server.adapter
        with adapter._lock:
            adapter.requests.append(recorded)
        return recorded

    def _authorized(self) -> bool:
        expected = self.server.adapter.require_auth
        if expected and self.headers.get("Authorization") != expected:
            self._fail(401, "unauthorized: missing or wrong Authorization header",
                       {"WWW-Authenticate": expected.split(" ", 1)[0]})
            return False
        return True

    def do_GET(self):
        self._record()
        if not self._authorized():
            return
        adapter = self.server.adapter
        path = self.path.split("?", 1)[0]
        if path == "/api/v1/metadata":
            return self._send(200, adapter.metadata(), METADATA + adapter.api_version)
        match = REPORT_PATH.match(path)
        if not match:
            return self._fail(404, f"no route for GET {path}")
        scan = adapter.scans.get(match["id"])
        if scan is None:
            return self._fail(404, f"cannot find scan request {match['id']}")
        wanted = [_mime(a) for a in (self.headers.get("Accept") or "").split(",") if a.strip()]
        offered = {_mime(p): p for p in adapter.produces}
        chosen = next((offered[w] for w in wanted if w in offered), None)
        if chosen is None and (not wanted or "*/*" in wanted):
            chosen = adapter.produces[0]
        if chosen is None:
            return self._fail(501, f"unsupported report mime type: {self.headers.get('Accept')}")
        with adapter._lock:
            scan.polls += 1
            polls = scan.polls
        if polls <= adapter.pending_polls or not scan.done.wait(timeout=30):
            return self._send(302, headers={"Refresh-After": str(adapter.refresh_after)})
        if scan.error:
            return self._fail(500, scan.error)
        return self._send(200, adapter.report(scan), chosen)

    def do_POST(self):
        recorded = self._record()
        if not self._authorized():
            return
        adapter = self.server.adapter
        if self.path.split("?", 1)[0] != "/api/v1/scan":
            return self._fail(404, f"no route for POST {self.path}")
        versions = ("1.0", "1.1") if adapter.api_version == "1.1" else ("1.0",)
        content_type = _mime(self.headers.get("Content-Type") or "")
        if content_type not in {_mime(SCAN_REQUEST + v) for v in versions}:
            return self._fail(415, f"unsupported media type: {self.headers.get('Content-Type')}")
        try:
            body = recorded.json()
        except ValueError as exc:
            return self._fail(400, f"invalid JSON: {exc}")
        problem = _validate(body, adapter)
        if problem:
            return self._fail(*problem)
        self._send(202, {"id": adapter.start_scan(body)}, SCAN_RESPONSE)


def _validate(body, adapter: ScannerAdapter) -> tuple[int, str] | None:
    """(status, message) for the first problem with a scan request, as the spec sorts them."""
    if not isinstance(body, dict) or not isinstance(body.get("registry", {}), dict) \
            or not isinstance(body.get("artifact", {}), dict):
        return 400, "wrong type of JSON values: registry and artifact must be objects"
    registry, artifact = body.get("registry") or {}, body.get("artifact") or {}
    for where, name in ((registry, "url"), (registry, "authorization"), (artifact, "repository"),
                        (artifact, "digest"), (artifact, "tag"), (artifact, "mime_type")):
        if name in where and not isinstance(where[name], str):
            return 400, f"wrong type of JSON value: {name} must be a string"
    for where, label in ((registry, "registry.url"), (artifact, "artifact.repository"),
                         (artifact, "artifact.digest"), (artifact, "artifact.mime_type")):
        if not where.get(label.split(".")[1]):
            return 422, f"missing field {label}"
    if not registry["url"].startswith(("http://", "https://")):
        return 422, f"invalid registry.url: {registry['url']}"
    if not DIGEST.match(artifact["digest"]):
        return 422, f"invalid artifact.digest: {artifact['digest']}"
    if artifact["mime_type"] not in (OCI_MANIFEST, DOCKER_MANIFEST):
        return 422, f"unsupported artifact.mime_type: {artifact['mime_type']}"
    capabilities = body.get("enabled_capabilities")
    if capabilities is None:
        return None
    if not isinstance(capabilities, list) or not all(isinstance(c, dict) and c.get("type") for c in capabilities):
        return 400, "wrong type of JSON values: enabled_capabilities must be a list of objects with a type"
    produced = {_mime(p) for p in adapter.produces}
    for capability in capabilities:
        if capability["type"] != "vulnerability":
            return 501, f"unsupported capability: {capability['type']}"
        unknown = [m for m in capability.get("produces_mime_types") or () if _mime(m) not in produced]
        if unknown:
            return 501, f"unsupported report mime types: {unknown}"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    adapter: ScannerAdapter


@contextlib.contextmanager
def run_scanner_adapter(
    findings_by_digest: Mapping[str, list[dict]] | None = None,
    pending_polls: int = 1,
    require_auth: str | None = "Bearer secret",
    *,
    refresh_after: int = 1,
    api_version: str = "1.1",
) -> Iterator[ScannerAdapter]:
    """Serve a scanner adapter on 127.0.0.1 (a free port) until the block ends."""
    adapter = ScannerAdapter(findings_by_digest or {}, pending_polls, require_auth, refresh_after, api_version)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.adapter = adapter
    adapter.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                              name="scanner-adapter")
    thread.start()
    try:
        yield adapter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        adapter.close()
