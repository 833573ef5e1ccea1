"""/api/v1 supply-chain security: project security policy, CVE allowlist, trusted keys,
scans and SBOMs of artifacts, signature status, and external scanner registrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Response
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model
from dockyard.domain.names import validate_name, validate_reference
from dockyard.errors import InvalidRequest, NotFound
from dockyard.metadata.db import utcnow
from dockyard.policy.access import project_of
from dockyard.policy.security_policy import BUILTIN_SCANNER
from dockyard.scanning.builtin_info import builtin_metadata
from dockyard.scanning.harbor import HarborScannerClient, ScannerError
from dockyard.scanning.service import RESCAN_JOB
from dockyard.signing.verify import Layout

router = APIRouter(tags=["security"])

Severity = Literal["low", "medium", "high", "critical"]


class PolicyOut(Model):
    project: str
    auto_scan: bool = Field(description="Scan every pushed image and index (per platform).")
    scanner: str = Field(description="'builtin' (syft + OSV) or the name of a registered external scanner.")
    block_severity: str | None = Field(description="Pull gate: refuse images with a finding at or above this; null: off.")
    unscanned: str = Field(description="With a pull gate, images without a verdict are: allow, block, or wait.")
    unscanned_wait_seconds: int = Field(description="For unscanned=wait: how long a pull waits for the scan.")
    require_signature: bool = Field(description="Pull gate: images need a cosign signature by a trusted key.")
    promotion_max_severity: str | None = Field(description="Promotion into this project needs a scan with nothing at or above this.")
    promotion_require_signature: bool = Field(description="Promotion into this project needs a signature by a trusted key.")


class PolicyIn(Input):
    auto_scan: bool | None = None
    scanner: str | None = None
    block_severity: Severity | None = None
    unscanned: Literal["allow", "block", "wait"] | None = None
    unscanned_wait_seconds: int | None = Field(None, ge=0, le=600)
    require_signature: bool | None = None
    promotion_max_severity: Severity | None = None
    promotion_require_signature: bool | None = None


class AllowIn(Input):
    expires_at: datetime | None = Field(None, description="After this the entry is ignored; null: never expires.")
    reason: str | None = Field(None, max_length=500)


class AllowOut(Model):
    vulnerability: str
    expires_at: datetime | None
    reason: str | None
    created_at: datetime
    created_by: str | None
    active: bool


class KeyIn(Input):
    name: str = Field(min_length=1, max_length=100)
    public_key: str = Field(description="PEM public key, e.g. the cosign.pub written by `cosign generate-key-pair`.", max_length=20000)


class KeyOut(Model):
    name: str
    fingerprint: str
    public_key: str
    created_at: datetime
    created_by: str | None


class ScannerIn(Input):
    name: str
    url: str = Field(description="Adapter base URL, e.g. http://trivy-adapter:8080 (without /api/v1).")
    authorization: str | None = Field(None, description="Sent as the Authorization header to the adapter, e.g. 'Bearer …'.")
    verify: bool = Field(True, description="Fetch the adapter's metadata first and refuse to register an unreachable adapter.")


class ScannerOut(Model):
    name: str
    url: str
    has_authorization: bool
    created_at: datetime


class JobRef(Model):
    job_id: int
    state: str = "queued"


class ScanStatus(Model):
    digest: str
    kind: str = Field(description="image, index, or other (not scannable).")
    scanner: str
    scannable: bool
    scanned: bool = Field(description="Every image has a successful report (the verdict in force).")
    in_progress: bool = Field(description="A scan is queued or running; the previous verdict stays in force meanwhile.")
    incomplete: bool = Field(False, description="Some image's report lists packages or advisories the matcher could not evaluate.")
    incomplete_policy: str = Field("block", description="scan_incomplete_policy: block (gates treat it as no verdict) or warn.")
    summary: dict[str, int]
    images: list[dict[str, Any]]


class SignatureStatus(Model):
    digest: str
    signed: bool = Field(description="Some signature is attached (any layout, verified or not).")
    verified: bool = Field(description="A key trusted by the project verified it (own signature or a signed parent index).")
    verified_by: list[str]
    layouts: list[str] = Field(description="tag, bundle, legacy-referrer, notation (recognized, not verified).")
    notation: bool
    reasons: list[str]


# -- project policy -------------------------------------------------------------------------------


@router.get("/projects/{project}/security", response_model=PolicyOut, summary="A project's security policy (read-scan)")
def get_policy(project: str, caller: CallerDep):
    caller.require_project(project, "read-scan")
    return caller.services.security.get(project).as_dict()


@router.patch("/projects/{project}/security", response_model=PolicyOut, summary="Change a project's security policy (manage-policies)")
def patch_policy(project: str, body: PolicyIn, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    changes = body.model_dump(exclude_unset=True)
    for key in ("auto_scan", "unscanned", "unscanned_wait_seconds", "require_signature", "promotion_require_signature"):
        if key in changes and changes[key] is None:
            raise InvalidRequest(f"{key} cannot be null")
    policy = caller.services.security.update(project, changes)
    caller.audit("security.update", f"project/{project}", project=project, detail=changes)
    return policy.as_dict()


# -- CVE allowlist --------------------------------------------------------------------------------


@router.get("/projects/{project}/security/allowlist", response_model=list[AllowOut], summary="CVE allowlist (read-scan)")
def list_allowlist(project: str, caller: CallerDep):
    caller.require_project(project, "read-scan")
    now = utcnow()
    return [{**e.__dict__, "active": e.active(now)} for e in caller.services.security.allowlist(project)]


@router.put("/projects/{project}/security/allowlist/{vulnerability}", response_model=AllowOut, summary="Allowlist a vulnerability (manage-policies)")
def put_allowlist(project: str, vulnerability: str, body: AllowIn, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    entry = caller.services.security.allow(
        project, vulnerability, expires_at=body.expires_at, reason=body.reason, by=caller.principal.name
    )
    caller.audit("security.allowlist.add", f"project/{project} {entry.vulnerability}", project=project,
                 detail={"expires_at": body.expires_at.isoformat() if body.expires_at else None, "reason": body.reason})
    return {**entry.__dict__, "active": True}


@router.delete("/projects/{project}/security/allowlist/{vulnerability}", status_code=204, summary="Remove from the allowlist (manage-policies)")
def delete_allowlist(project: str, vulnerability: str, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    caller.services.security.disallow(project, vulnerability)
    caller.audit("security.allowlist.remove", f"project/{project} {vulnerability}", project=project)
    return Response(status_code=204)


# -- trusted keys ---------------------------------------------------------------------------------


@router.get("/projects/{project}/security/trusted-keys", response_model=list[KeyOut], summary="Trusted signing keys (read-scan)")
def list_keys(project: str, caller: CallerDep):
    caller.require_project(project, "read-scan")
    return [k.__dict__ for k in caller.services.trusted_keys.trusted_keys(project)]


@router.post("/projects/{project}/security/trusted-keys", response_model=KeyOut, status_code=201, summary="Trust a public key (manage-policies)")
def add_key(project: str, body: KeyIn, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    key = caller.services.trusted_keys.trust(project, body.name, body.public_key, by=caller.principal.name)
    caller.audit("security.key.add", f"project/{project} key {key.name}", project=project, detail={"fingerprint": key.fingerprint})
    return key.__dict__


@router.delete("/projects/{project}/security/trusted-keys/{name}", status_code=204, summary="Stop trusting a key (manage-policies)")
def delete_key(project: str, name: str, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    caller.services.trusted_keys.untrust(project, name)
    caller.audit("security.key.remove", f"project/{project} key {name}", project=project)
    return Response(status_code=204)


# -- artifacts: scans, SBOMs, signatures ------------------------------------------------------------


def _resolve(caller, name: str, reference: str, action: str) -> str:
    validate_name(name)
    caller.require_project(project_of(name), action)
    tag, digest = validate_reference(reference)
    return caller.services.manifests.lookup(name, tag, digest).digest


@router.post("/repositories/{name:path}/artifacts/{reference}/scan", response_model=JobRef, status_code=202,
             summary="Scan an image or index now (push)")
def request_scan(name: str, reference: str, caller: CallerDep):
    digest = _resolve(caller, name, reference, "push")
    job_id = caller.services.scans.request(name, digest, force=True)
    caller.audit("scan.request", f"{name}@{digest}", project=project_of(name), detail={"job": job_id})
    return {"job_id": job_id}


@router.get("/repositories/{name:path}/artifacts/{reference}/scan", response_model=ScanStatus,
            summary="Scan verdict and findings of an image or index (read-scan)")
def scan_status(name: str, reference: str, caller: CallerDep):
    digest = _resolve(caller, name, reference, "read-scan")
    policy = caller.services.security.get(project_of(name))
    return caller.services.scans.status(name, digest, policy.scanner)


@router.get("/repositories/{name:path}/artifacts/{reference}/sbom", summary="The image's SPDX SBOM (read-scan)",
            responses={200: {"content": {"application/spdx+json": {}}}})
def get_sbom(name: str, reference: str, caller: CallerDep):
    digest = _resolve(caller, name, reference, "read-scan")
    document = caller.services.scans.sbom(name, digest)
    if document is None:
        raise NotFound(f"{name}@{digest} has no SBOM yet; scan it with the built-in scanner", detail={"digest": digest})
    return Response(document, media_type="application/spdx+json")


@router.get("/repositories/{name:path}/artifacts/{reference}/signatures", response_model=SignatureStatus,
            summary="Signatures of an artifact, verified against the project's trusted keys (read-scan)")
def signature_status(name: str, reference: str, caller: CallerDep):
    digest = _resolve(caller, name, reference, "read-scan")
    services = caller.services
    keys = services.trusted_keys.public_keys(project_of(name))
    verified, verdict = services.signatures.covered(name, digest, keys)
    return {
        "digest": digest,
        "signed": verdict.signed,
        "verified": verified,
        "verified_by": verdict.verified_by,
        "layouts": sorted(str(layout) for layout in verdict.layouts),
        "notation": Layout.NOTATION in verdict.layouts,
        "reasons": verdict.reasons,
    }


# -- scanners and rescans (registry administrators) ----------------------------------------------


@router.get("/system/scanners", response_model=list[ScannerOut], summary="External scanners (admin)")
def list_scanners(caller: CallerDep):
    caller.require_admin()
    return [s.as_dict() for s in caller.services.scanners.list()]


@router.post("/system/scanners", response_model=ScannerOut, status_code=201, summary="Register a Harbor-API scanner adapter (admin)")
def add_scanner(body: ScannerIn, caller: CallerDep):
    caller.require_admin()
    caller.services.scanners.validate(body.name, body.url)
    if body.verify:
        try:
            with HarborScannerClient(body.url, body.authorization, name=body.name, timeout=5.0) as client:
                client.metadata()
        except (ScannerError, httpx.HTTPError) as exc:
            raise InvalidRequest(f"scanner adapter did not answer its metadata call: {exc}") from exc
    scanner = caller.services.scanners.add(body.name, body.url, body.authorization)
    caller.audit("scanner.add", f"scanner {scanner.name}", detail={"url": scanner.url})
    return scanner.as_dict()


@router.get("/system/scanners/{scanner}/metadata", summary="Ask a registered adapter for its metadata (admin)")
def scanner_metadata(scanner: str, caller: CallerDep):
    caller.require_admin()
    if scanner == BUILTIN_SCANNER:  # always there, never registered: describe it rather than 404
        return builtin_metadata()
    registered = caller.services.scanners.get(scanner)
    try:
        with HarborScannerClient(registered.url, registered.authorization, name=registered.name, timeout=5.0) as client:
            info = client.metadata()
    except ScannerError as exc:
        raise InvalidRequest(str(exc)) from exc
    return {"name": info.name, "vendor": info.vendor, "version": info.version, "consumes": list(info.consumes),
            "produces": list(info.produces), "properties": info.properties}


@router.delete("/system/scanners/{scanner}", status_code=204, summary="Remove a scanner no project uses (admin)")
def delete_scanner(scanner: str, caller: CallerDep):
    caller.require_admin()
    caller.services.scanners.remove(scanner)
    caller.audit("scanner.remove", f"scanner {scanner}")
    return Response(status_code=204)


@router.post("/system/scans/rescan", response_model=JobRef, status_code=202, summary="Re-match every scanned image now (admin)")
def rescan_all(caller: CallerDep):
    caller.require_admin()
    services = caller.services
    active = services.jobs.active(RESCAN_JOB)
    job_id = active["id"] if active and active["state"] == "queued" else services.jobs.enqueue(RESCAN_JOB, {"reason": "requested"})
    services.worker.wake()
    caller.audit("scan.rescan", "all", detail={"job": job_id})
    return {"job_id": job_id}
