"""Client for the Harbor Pluggable Scanner API v1.2, so any adapter (Trivy, Clair, ...) can scan
Dockyard images the same way Harbor has it scan its own.

The protocol: `GET /metadata` says what the adapter consumes and produces; `POST /scan` hands it
the artifact and a registry credential, and the adapter pulls the image itself; `GET
/scan/{id}/report` answers 302 + `Refresh-After` while the scan runs, then 200 with the report or
500 when the scan failed. Redirects are never followed: the 302 is a "not yet", not a location.

Adapters written against spec 1.0 have no capability `type` and no `enabled_capabilities`, and
only produce the Harbor 1.0 report, so the client reads the metadata first and speaks the version
the adapter speaks (see `_is_v11`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from dockyard.scanning.matcher import Finding

METADATA_V11 = "application/vnd.scanner.adapter.metadata+json; version=1.1"
METADATA_V10 = "application/vnd.scanner.adapter.metadata+json; version=1.0"
SCAN_REQUEST_V11 = "application/vnd.scanner.adapter.scan.request+json; version=1.1"
SCAN_REQUEST_V10 = "application/vnd.scanner.adapter.scan.request+json; version=1.0"
REPORT_V11 = "application/vnd.security.vulnerability.report; version=1.1"
REPORT_HARBOR_V10 = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
ERROR_V10 = "application/vnd.scanner.adapter.error+json; version=1.0"

SEVERITIES = ("Unknown", "Negligible", "Low", "Medium", "High", "Critical")
_SEVERITY_BY_LOWER = {s.lower(): s for s in SEVERITIES} | {"none": "Negligible"}
DEFAULT_REFRESH_AFTER = 5.0
MIN_REFRESH_AFTER, MAX_REFRESH_AFTER = 0.1, 60.0
SUMMARY_LIMIT = 500


class ScannerError(Exception):
    """A scanner adapter refused, failed or could not be reached.

    `status` is the adapter's HTTP status, or None when it did not answer (connection error, deadline)
    or was not asked (the metadata already rules the request out)."""

    def __init__(self, adapter: str, call: str, status: int | None, message: str):
        self.adapter, self.call, self.status, self.message = adapter, call, status, message
        where = f" HTTP {status}:" if status is not None else ""
        super().__init__(f"scanner adapter {adapter!r}: {call}:{where} {message}")


@dataclass(frozen=True)
class AdapterInfo:
    """The adapter's identity and its *vulnerability* capability (an SBOM capability is ignored)."""

    name: str
    vendor: str
    version: str
    consumes: tuple[str, ...]
    produces: tuple[str, ...]
    properties: dict = field(default_factory=dict, hash=False)
    api_version: str = "1.1"  # "1.0" for adapters written against the first spec


def same_mime(a: str, b: str) -> bool:
    """Mime types compare without case or blanks: adapters write both `; version=1.1` and `;version=1.1`."""
    return "".join(a.split()).lower() == "".join(b.split()).lower()


def _contains(types: tuple[str, ...], wanted: str) -> bool:
    return any(same_mime(t, wanted) for t in types)


def _is_v11(content_type: str, capabilities: list[dict]) -> bool:
    """Spec 1.1 added the capability `type` and the 1.1 report; a 1.0 adapter has neither and
    answers with the 1.0 metadata type. Any one sign of 1.1 is enough."""
    if "version=1.1" in "".join(content_type.split()).lower():
        return True
    return any("type" in c or _contains(tuple(c.get("produces_mime_types") or ()), REPORT_V11) for c in capabilities)


def normalise_severity(value: object) -> str:
    """Harbor's scale spelling; `None` (no risk) ranks as Negligible, anything unrecognised as Unknown."""
    return _SEVERITY_BY_LOWER.get(str(value).strip().lower(), "Unknown") if value is not None else "Unknown"


class HarborScannerClient:
    """One adapter. `authorization` is what the adapter wants from *us* (Basic or Bearer); the
    registry credential the adapter pulls with travels per scan. The metadata is fetched once and
    decides the protocol version and report type; a passed-in `client` is not closed here."""

    def __init__(
        self,
        url: str,
        authorization: str | None = None,
        *,
        client: httpx.Client | None = None,
        timeout: float = 30.0,
        name: str = "adapter",
    ):
        base = url.rstrip("/")
        if base.endswith("/api/v1"):
            base = base[: -len("/api/v1")].rstrip("/")
        self.base_url = base + "/api/v1"
        self.authorization = authorization
        self.name = name
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout, follow_redirects=False)
        self._info: AdapterInfo | None = None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HarborScannerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the three operations ---------------------------------------------------------------

    def metadata(self) -> AdapterInfo:
        """Fetch (and remember) what the adapter scans and which report types it produces."""
        call = "GET /api/v1/metadata"
        response = self._request("GET", "/metadata", call, headers={"Accept": METADATA_V11})
        if response.status_code != 200:
            raise self._error(call, response)
        body = self._json(call, response)
        capabilities = body.get("capabilities")
        if not isinstance(body.get("scanner"), dict) or not isinstance(capabilities, list):
            raise ScannerError(self.name, call, 200, "metadata lacks `scanner` or `capabilities`")
        capabilities = [c for c in capabilities if isinstance(c, dict)]
        # A capability without `type` is a vulnerability capability (spec: backward compatibility).
        vulnerability = [c for c in capabilities if c.get("type", "vulnerability") == "vulnerability"]
        scanner = body["scanner"]
        self._info = AdapterInfo(
            name=str(scanner.get("name") or ""),
            vendor=str(scanner.get("vendor") or ""),
            version=str(scanner.get("version") or ""),
            consumes=tuple(dict.fromkeys(m for c in vulnerability for m in c.get("consumes_mime_types") or ())),
            produces=tuple(dict.fromkeys(m for c in vulnerability for m in c.get("produces_mime_types") or ())),
            properties=dict(body.get("properties") or {}),
            api_version="1.1" if _is_v11(response.headers.get("content-type", ""), capabilities) else "1.0",
        )
        return self._info

    def submit(
        self,
        *,
        registry_url: str,
        registry_authorization: str | None,
        repository: str,
        digest: str,
        tag: str | None,
        mime_type: str,
    ) -> str:
        """Ask the adapter to pull and scan one image manifest; return the scan request id.

        Refuses locally what the adapter's metadata says it cannot do, rather than waiting for a
        501 (or, worse, a report in a format we cannot read)."""
        call = "POST /api/v1/scan"
        info = self._info or self.metadata()
        if not info.consumes and not info.produces:
            raise ScannerError(self.name, call, None, "the adapter has no vulnerability capability")
        if info.consumes and not _contains(info.consumes, mime_type):
            raise ScannerError(self.name, call, None, f"the adapter does not scan {mime_type} artifacts")
        report_type = self._report_type(info, call)
        registry: dict = {"url": registry_url}
        if registry_authorization:
            registry["authorization"] = registry_authorization
        artifact = {"repository": repository, "digest": digest, "mime_type": mime_type}
        if tag:
            artifact["tag"] = tag
        payload: dict = {"registry": registry, "artifact": artifact}
        if info.api_version == "1.1":
            payload["enabled_capabilities"] = [{"type": "vulnerability", "produces_mime_types": [report_type]}]
        content_type = SCAN_REQUEST_V11 if info.api_version == "1.1" else SCAN_REQUEST_V10
        response = self._request(
            "POST", "/scan", call,
            content=json.dumps(payload).encode(),
            headers={"Content-Type": content_type},
        )
        if response.status_code not in (200, 201, 202):
            raise self._error(call, response)
        request_id = self._json(call, response).get("id")
        if not isinstance(request_id, str) or not request_id:
            raise ScannerError(self.name, call, response.status_code, "the answer has no scan request `id`")
        return request_id

    def poll(self, request_id: str) -> tuple[list[Finding] | None, float]:
        """One report poll: (None, seconds to wait) while the scan runs, (findings, 0) when done."""
        call = f"GET /api/v1/scan/{request_id}/report"
        info = self._info or self.metadata()
        report_type = self._report_type(info, call)
        response = self._request("GET", f"/scan/{request_id}/report", call, headers={"Accept": report_type})
        if response.status_code == 302:
            return None, _refresh_after(response.headers.get("refresh-after"))
        if response.status_code != 200:
            raise self._error(call, response)
        report = self._json(call, response)
        vulnerabilities = report.get("vulnerabilities")
        if vulnerabilities is None:  # Go adapters marshal an empty slice as null
            return [], 0.0
        if not isinstance(vulnerabilities, list):
            raise ScannerError(self.name, call, 200, "report `vulnerabilities` is not a list")
        try:
            return [finding_from_report(v) for v in vulnerabilities], 0.0
        except (TypeError, ValueError) as exc:
            raise ScannerError(self.name, call, 200, f"malformed vulnerability: {exc}") from None

    def scan(
        self,
        *,
        registry_url: str,
        registry_authorization: str | None,
        repository: str,
        digest: str,
        tag: str | None,
        mime_type: str,
        deadline_seconds: float = 600,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> list[Finding]:
        """Submit, then poll as the adapter asks until the report is ready or the deadline passes.

        The last poll happens at the deadline, so a scan finishing just in time still counts."""
        started = clock()
        request_id = self.submit(
            registry_url=registry_url, registry_authorization=registry_authorization,
            repository=repository, digest=digest, tag=tag, mime_type=mime_type,
        )
        while True:
            findings, wait = self.poll(request_id)
            if findings is not None:
                return findings
            remaining = started + deadline_seconds - clock()
            if remaining <= 0:
                raise ScannerError(
                    self.name, f"GET /api/v1/scan/{request_id}/report", None,
                    f"no report within {deadline_seconds:g} s for {repository}@{digest}",
                )
            sleep(min(wait, remaining))

    # -- plumbing ---------------------------------------------------------------------------

    def _report_type(self, info: AdapterInfo, call: str) -> str:
        """The 1.1 report when offered; the Harbor 1.0 report has the same schema and is the fallback."""
        for wanted in (REPORT_V11, REPORT_HARBOR_V10):
            if _contains(info.produces, wanted):
                return wanted
        if not info.produces:  # metadata lists nothing: ask for what every adapter must understand
            return REPORT_HARBOR_V10
        raise ScannerError(self.name, call, None, f"the adapter produces no report Dockyard reads: {info.produces}")

    def _request(self, method: str, path: str, call: str, **kwargs) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if self.authorization:
            headers["Authorization"] = self.authorization
        try:
            return self._client.request(
                method, self.base_url + path, headers=headers, follow_redirects=False,
                timeout=self._timeout, **kwargs,
            )
        except httpx.HTTPError as exc:  # connection refused, timeouts, protocol errors
            raise ScannerError(self.name, call, None, f"{type(exc).__name__}: {exc}") from exc

    def _json(self, call: str, response: httpx.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            raise ScannerError(self.name, call, response.status_code, "the answer is not JSON") from None
        if not isinstance(body, dict):
            raise ScannerError(self.name, call, response.status_code, "the answer is not a JSON object")
        return body

    def _error(self, call: str, response: httpx.Response) -> ScannerError:
        """Prefer the adapter's own `error.message`; otherwise show the start of whatever it said."""
        message = None
        try:
            error = response.json().get("error")
            if isinstance(error, dict) and error.get("message"):
                message = str(error["message"])
        except (ValueError, AttributeError):
            pass
        if message is None:
            text = response.text.strip()
            message = text[:200] if text else response.reason_phrase or "no error message"
        return ScannerError(self.name, call, response.status_code, message)


def _refresh_after(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else DEFAULT_REFRESH_AFTER
    except ValueError:
        seconds = DEFAULT_REFRESH_AFTER
    if seconds != seconds:  # NaN
        seconds = DEFAULT_REFRESH_AFTER
    return min(max(seconds, MIN_REFRESH_AFTER), MAX_REFRESH_AFTER)


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def finding_from_report(item: dict) -> Finding:
    """One report vulnerability as a Dockyard Finding (the same shape our own matcher produces)."""
    if not isinstance(item, dict) or not item.get("id"):
        raise ValueError(f"vulnerability without id: {item!r:.100}")
    vendor = item.get("vendor_attributes") if isinstance(item.get("vendor_attributes"), dict) else {}
    cvss = item.get("preferred_cvss") if isinstance(item.get("preferred_cvss"), dict) else {}
    if _number(cvss.get("score_v3")) is not None or cvss.get("vector_v3"):
        score, vector = _number(cvss.get("score_v3")), cvss.get("vector_v3")
    else:
        score, vector = _number(cvss.get("score_v2")), cvss.get("vector_v2")
    aliases = item.get("aliases", vendor.get("aliases"))
    summary = str(item.get("description") or "").strip()
    if len(summary) > SUMMARY_LIMIT:
        summary = summary[: SUMMARY_LIMIT - 1].rstrip() + "…"
    layer = item.get("layer")
    return Finding(
        id=str(item["id"]),
        aliases=tuple(a for a in aliases if isinstance(a, str)) if isinstance(aliases, list) else (),
        related=(),
        summary=summary,
        severity=normalise_severity(item.get("severity")),
        cvss_score=score,
        cvss_vector=str(vector) if vector else None,
        ecosystem=str(item.get("pkg_type") or vendor.get("pkg_type") or ""),
        package=str(item.get("package") or ""),
        source_package=None,
        installed_version=str(item.get("version") or ""),
        fixed_version=str(item["fix_version"]) if item.get("fix_version") else None,
        layer=str(layer["digest"]) if isinstance(layer, dict) and layer.get("digest") else None,
    )
