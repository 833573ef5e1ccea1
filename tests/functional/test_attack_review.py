"""Attack review of the hardening branch: paths between features that reached the same data.
Each test runs on SQLite and PostgreSQL (the `env` fixture)."""

from __future__ import annotations

import json

import anyio.to_thread
import pytest
from typer.testing import CliRunner

from dockyard.cli import app as cli_app

from .governance_helpers import ADMIN, env, error, route_cli_to_app  # noqa: F401
from .helpers import OCI_MANIFEST, descriptor, dumps, sha256

CLIENT = {"X-Dockyard-Client": "test"}


async def test_attack_runnable_image_with_subject_or_artifact_type_is_gated(env):
    """A pusher without the signing key must not make an unsigned, runnable image pass require_signature
    by adding `subject` or `artifactType` to it: runtimes ignore both fields and run the layers, so the
    image is gated (and scanned) like any other, for deployments that pull as guests."""
    await env.project("secure")
    target, _ = await env.reg.push_image("secure/app", "base", seed=1)
    subject = {"mediaType": OCI_MANIFEST, "digest": target, "size": 10}
    with_subject, _ = await env.reg.push_image("secure/app", "evil", seed=2, extra={"subject": subject})
    with_type, _ = await env.reg.push_image("secure/app", "evil2", seed=3, extra={"artifactType": "application/x-anything"})
    r = await env.api.patch("/api/v1/projects/secure/security", json={"require_signature": True})
    assert r.status_code == 200, r.text
    deploy = await env.user("deploy", secure="guest")
    for reference in ("base", "evil", "evil2", with_subject, with_type):
        message = error(await env.api.get(f"/v2/secure/app/manifests/{reference}", auth=deploy), 403, "DENIED")["message"]
        assert "require-signature of project secure" in message
    # Real artifacts about an image (an SBOM with an empty config, a cosign-style attestation) stay exempt.
    empty = b"{}"
    await env.reg.push_blob("secure/app", empty)
    sbom = b'{"spdxVersion": "SPDX-2.3"}'
    await env.reg.push_blob("secure/app", sbom)
    doc = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": descriptor("application/vnd.oci.empty.v1+json", empty),
        "layers": [descriptor("application/spdx+json", sbom)], "subject": subject,
    }
    body = dumps(doc)
    await env.reg.push_manifest("secure/app", sha256(body), body, OCI_MANIFEST)
    assert (await env.api.get(f"/v2/secure/app/manifests/{sha256(body)}", auth=deploy)).status_code == 200


async def test_attack_promotion_with_referrers_runs_the_gate_on_each_referrer(env):
    """A guest may copy an image that passes the source's gate, but `include_referrers` must not carry along a
    referrer that is itself a runnable image the gate refuses to them (here: unsigned, under require-signature).
    Without include_referrers the copy still works."""
    await env.project("secure")
    await env.project("mal")
    # The subject is an SBOM-like artifact (not an image, so the gate passes it) ...
    empty, sbom = b"{}", b'{"spdxVersion": "SPDX-2.3"}'
    await env.reg.push_blob("secure/app", empty)
    await env.reg.push_blob("secure/app", sbom)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
           "config": descriptor("application/vnd.oci.empty.v1+json", empty),
           "layers": [descriptor("application/spdx+json", sbom)]}
    body = dumps(doc)
    await env.reg.push_manifest("secure/app", "doc", body, OCI_MANIFEST)
    # ... and a runnable, unsigned image names it as its subject.
    subject = {"mediaType": OCI_MANIFEST, "digest": sha256(body), "size": len(body)}
    evil, _ = await env.reg.push_image("secure/app", None, seed=7, extra={"subject": subject})
    r = await env.api.patch("/api/v1/projects/secure/security", json={"require_signature": True})
    assert r.status_code == 200, r.text
    mallory = await env.user("mallory", secure="guest", mal="admin")
    error(await env.api.get(f"/v2/secure/app/manifests/{evil}", auth=mallory), 403, "DENIED")

    body_in = {"source": "secure/app:doc", "destination": "mal/app", "tags": ["doc"], "include_referrers": True}
    message = error(await env.api.post("/api/v1/promotions", json=body_in, auth=mallory), 403, "DENIED")["message"]
    assert "require-signature of project secure" in message
    assert env.reg.count("repositories", "name = :n", n="mal/app") == 0
    body_in["include_referrers"] = False
    r = await env.api.post("/api/v1/promotions", json=body_in, auth=mallory)
    assert r.status_code == 201, r.text
    assert r.json()["referrers"] == []
    error(await env.api.get(f"/v2/mal/app/manifests/{evil}", auth=mallory), 404, "MANIFEST_UNKNOWN")


async def test_attack_anonymous_bodies_outside_v2_are_capped_before_parsing(env):
    """The management API and /token parse JSON, form and multipart bodies before they authenticate: an
    anonymous 100 MB POST to /api/v1/projects grew a worker by 200 MB and was answered 400 (parsed). Bodies
    outside /v2 are now capped before the app reads them, declared or streamed; /v2 uploads are not."""
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    anonymous = {"auth": None}

    async def chunks():
        for _ in range(40):
            yield b" " * 65536

    for r in (
        await env.api.post("/api/v1/projects", content=big, headers={"Content-Type": "application/json"}, **anonymous),
        await env.api.post("/api/v1/projects", content=chunks(), headers={"Content-Type": "application/json"}, **anonymous),
        await env.api.post("/token", files={"f": ("f", big)}, **anonymous),
        await env.api.post("/token", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"},
                           **anonymous),
    ):
        error(r, 413, "SIZE_INVALID")
    # Ordinary requests pass, bodies intact; a /v2 upload of the same size is not affected.
    r = await env.api.post("/api/v1/projects", json={"name": "ok", "public": False})
    assert r.status_code == 201, r.text
    r = await env.api.post("/token", data={"grant_type": "password", "username": "admin", "password": "admin-password-1",
                                           "service": env.services.settings.token_service})
    assert r.status_code == 200, r.text
    await env.reg.push_blob("ok/app", big)


@pytest.mark.parametrize("env", ["sqlite"], indirect=True)
async def test_attack_admin_cli_tables_escape_control_characters(env, monkeypatch, tmp_path):
    """An anonymous client puts an ESC sequence into the audit log (a failed login as `\\x1b[2Jevil`);
    `dockyard admin audit list` printed it raw into the admin's terminal (rich strips only BEL, BS, VT, FF
    and CR). Every table cell is now shown escaped."""
    r = await env.api.get("/api/v1/users/me", auth=("\x1b[2Jevil\x1b]8;;http://x\x07", "nope"))
    assert r.status_code == 401
    route_cli_to_app(monkeypatch, env.reg.app)
    environ = {"COLUMNS": "250", "NO_COLOR": "1", "DOCKYARD_URL": "http://registry.test",
               "DOCKYARD_USERNAME": ADMIN[0], "DOCKYARD_PASSWORD": ADMIN[1],
               "DOCKYARD_CREDENTIALS_FILE": str(tmp_path / "credentials.json"), "DOCKER_CONFIG": str(tmp_path / "docker")}
    result = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(cli_app, ["admin", "audit", "list", "--outcome", "failure"], env=environ)
    )
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b[2Jevil" in result.output


async def test_attack_manifests_count_against_the_project_quota(env):
    """Quotas counted blobs only, and manifests live in the database at up to max_manifest_bytes each: a
    pusher in a project at its quota stored any amount as manifests with large annotations (each 201).
    Manifest bytes now count in the usage, and a manifest PUT or promotion copy past the quota is DENIED."""
    await env.project("small")
    digest, body = await env.reg.push_image("small/app", "1", seed=1)
    usage = (await env.api.get("/api/v1/projects/small/quota")).json()["used_bytes"]
    blob_bytes = env.reg.scalar("SELECT SUM(size) FROM blobs")
    assert usage == blob_bytes + len(body)
    r = await env.api.put("/api/v1/projects/small/quota", json={"quota_bytes": usage + 5000})
    assert r.status_code == 200, r.text
    doc = json.loads(body)
    base = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": doc["config"], "layers": doc["layers"]}
    padded = dumps({**base, "annotations": {"pad": "x" * 100_000}})
    r = await env.reg.put_manifest("small/app", "big", padded, OCI_MANIFEST)
    message = error(r, 403, "DENIED")["message"]
    assert "quota of project small exceeded" in message and "this manifest needs" in message
    assert env.reg.count("manifests", "digest = :d", d=sha256(padded)) == 0
    # A small one fits; a promotion of the big one from elsewhere is refused the same way.
    assert (await env.reg.put_manifest("small/app", "2", dumps({**base, "annotations": {"a": "b"}}), OCI_MANIFEST)).status_code == 201
    await env.project("big")
    await env.reg.push_image("big/app", "1", seed=1)
    assert (await env.reg.put_manifest("big/app", "big", padded, OCI_MANIFEST)).status_code == 201
    r = await env.api.post("/api/v1/promotions", json={"source": "big/app:big", "destination": "small/copy", "tags": ["big"]})
    assert "quota of project small exceeded" in error(r, 403, "DENIED")["message"]
