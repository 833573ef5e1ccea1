"""Hostile signatures against the registry in-process (issue 19 items 1, 4, 8): a gated pull and
GET …/signatures answer with a verdict and its reasons, never a 500; the work of one evaluation is
bounded and shared; verdicts stay cached until the project's security generation moves."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json

from dockyard.signing import formats
from dockyard.signing.in_registry import RegistrySignatureSource, SignatureChecker
from dockyard.signing.cosign_keys import generate_private_key, key_hint, public_key_pem, sign_message

from .governance_helpers import PASSWORD, env, error  # noqa: F401
from .helpers import OCI_MANIFEST, assert_error, sha256

DEPLOY = ("deploy", PASSWORD)
PROJECT = "signed"
REPO = "signed/app"
KEY = generate_private_key()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def setup(env) -> None:
    await env.project(PROJECT)
    await env.user("deploy", **{PROJECT: "guest"})
    r = await env.api.post(f"/api/v1/projects/{PROJECT}/security/trusted-keys",
                           json={"name": "release", "public_key": public_key_pem(KEY).decode()})
    assert r.status_code == 201, r.text
    r = await env.api.patch(f"/api/v1/projects/{PROJECT}/security", json={"require_signature": True})
    assert r.status_code == 200, r.text


async def sign_tag_layout(env, digest: str, layers: list[dict] | None = None, repo: str = REPO) -> str:
    """Push the `.sig` manifest of `digest`: a good signature by KEY, then `layers`."""
    payload = formats.simple_signing_payload(f"registry.test/{repo}", digest)
    await env.reg.push_blob(repo, payload)
    config = formats.legacy_config([payload])
    await env.reg.push_blob(repo, config)
    manifest = formats.legacy_manifest([formats.legacy_layer(payload, sign_message(KEY, payload))] + (layers or []), config)
    return await env.reg.push_manifest(repo, formats.signature_tag(digest), manifest, OCI_MANIFEST)


async def push_bundle(env, digest: str, subject_body: bytes, bundle: bytes, repo: str = REPO) -> str:
    await env.reg.push_blob(repo, formats.EMPTY_JSON)
    await env.reg.push_blob(repo, bundle)
    subject = {"mediaType": OCI_MANIFEST, "size": len(subject_body), "digest": digest}
    body = formats.bundle_referrer_manifest(bundle, subject)
    return await env.reg.push_manifest(repo, sha256(body), body, OCI_MANIFEST)


def junk_bundles(digest: str) -> list[tuple[str, bytes]]:
    """(the reason verification gives, bundle bytes): a valid bundle by KEY, spoiled as in issue 19."""
    statement = formats.sign_statement(digest)
    good = formats.dsse_bundle(statement, sign_message(KEY, formats.pae(formats.INTOTO_PAYLOAD_TYPE, statement)),
                               key_hint(KEY.public_key()))
    out = []
    for reason, envelope, field, value in [
        ("bundle verificationMaterial is not a JSON object", False, "verificationMaterial", "junk"),
        ("bundle verificationMaterial is not a JSON object", False, "verificationMaterial", ["junk"]),
        ("DSSE payloadType is not a string", True, "payloadType", 7),
    ]:
        doc = json.loads(good)
        (doc["dsseEnvelope"] if envelope else doc)[field] = value
        out.append((reason, json.dumps(doc).encode()))
    return out


async def signature_status(env, ref: str, repo: str = REPO) -> dict:
    r = await env.api.get(f"/api/v1/repositories/{repo}/artifacts/{ref}/signatures")
    assert r.status_code == 200, r.text
    return r.json()


async def test_item1_junk_bundles_next_to_a_good_signature_never_500(env):
    """One junk bundle referrer next to a valid tag signature turned every gated pull into a 500."""
    await setup(env)
    digest, body = await env.reg.push_image(REPO, "1", seed=1)
    await sign_tag_layout(env, digest)
    junk = [(reason, await push_bundle(env, digest, body, data)) for reason, data in junk_bundles(digest)]
    assert (await env.api.get(f"/v2/{REPO}/manifests/1", auth=DEPLOY)).status_code == 200
    status = await signature_status(env, "1")
    assert status["verified"] and status["layouts"] == ["bundle", "tag"]
    for reason, ref in junk:
        assert f"bundle signature {ref}: {reason}" in status["reasons"], status["reasons"]
    # The junk alone: 403 with the reason, and the status endpoint answers.
    lone, lone_body = await env.reg.push_image(REPO, "2", seed=2)
    await push_bundle(env, lone, lone_body, junk_bundles(lone)[2][1])
    message = error(await env.api.get(f"/v2/{REPO}/manifests/2", auth=DEPLOY), 403, "DENIED")["message"]
    assert f"image {lone} is not signed by a key trusted by project {PROJECT}" in message
    assert "DSSE payloadType is not a string" in message
    status = await signature_status(env, "2")
    assert status["signed"] and not status["verified"]


async def test_item1_descriptor_annotations_are_validated_on_push(env):
    await env.project(PROJECT)
    digest, body = await env.reg.push_image(REPO, "1", seed=1)
    payload = formats.simple_signing_payload(f"registry.test/{REPO}", digest)
    await env.reg.push_blob(REPO, payload)
    config = formats.legacy_config([payload])
    await env.reg.push_blob(REPO, config)
    layer = formats.legacy_layer(payload, sign_message(KEY, payload))
    spoiled = {
        "a signature annotation that is a number": lambda m: m["layers"][0].update(annotations={formats.SIGNATURE_ANNOTATION: 12345}),
        "layer annotations that are a string": lambda m: m["layers"][0].update(annotations="junk"),
        "config annotations that are a list": lambda m: m["config"].update(annotations=["junk"]),
        "subject annotations with a number": lambda m: m.update(subject={**formats.descriptor(OCI_MANIFEST, body), "annotations": {"a": 1}}),
        "a layer artifactType that is a number": lambda m: m["layers"][0].update(artifactType=5),
    }
    for name, change in spoiled.items():
        manifest = json.loads(formats.legacy_manifest([dict(layer)], config))
        change(manifest)
        r = await env.reg.put_manifest(REPO, formats.signature_tag(digest), json.dumps(manifest).encode(), OCI_MANIFEST)
        assert_error(r, 400, "MANIFEST_INVALID")
        expected = "artifactType must be a string" if "artifactType" in name else "annotations must be a map of strings"
        assert expected in r.text, (name, r.text)
    assert (await env.api.get(f"/v2/{REPO}/manifests/{formats.signature_tag(digest)}")).status_code == 404


async def test_item4_12000_layer_sig_manifest_is_bounded_on_a_gated_pull(env, monkeypatch):
    """A 12,000-layer `.sig` manifest (under the 4 MiB manifest cap) costs at most
    signature_max_layers verifications and one read of the payload it repeats."""
    verify_module = importlib.import_module("dockyard.signing.verify")
    checks, reads = [], []
    real_verify, real_blob = verify_module.verify_message, RegistrySignatureSource.blob
    monkeypatch.setattr(verify_module, "verify_message", lambda *a: checks.append(1) or real_verify(*a))
    monkeypatch.setattr(RegistrySignatureSource, "blob", lambda self, repo, d: reads.append(d) or real_blob(self, repo, d))
    await setup(env)
    digest, _ = await env.reg.push_image(REPO, "1", seed=1)
    payload = formats.simple_signing_payload(f"registry.test/{REPO}", digest)
    junk = formats.legacy_layer(payload, b"not a signature")
    sig_digest = await sign_tag_layout(env, digest, [junk] * 11_999)
    raw = (await env.api.get(f"/v2/{REPO}/manifests/{sig_digest}")).content
    assert len(json.loads(raw)["layers"]) == 12_000 and len(raw) <= 4 * 1024 * 1024
    assert (await env.api.get(f"/v2/{REPO}/manifests/1", auth=DEPLOY)).status_code == 200
    limit = env.services.settings.signature_max_layers
    assert 0 < len(checks) <= limit
    assert reads == [formats.sha256_digest(payload)]
    status = await signature_status(env, "1")
    assert status["verified"]
    assert f"tag signature {sig_digest}: signature manifest has 12000 signature layers; only the first {limit} " \
           "were examined (signature_max_layers)" in status["reasons"]


async def test_item4_concurrent_gated_pulls_evaluate_once_and_stay_cached_until_a_change(env):
    await setup(env)
    digest, body = await env.reg.push_image(REPO, "1", seed=1)
    await sign_tag_layout(env, digest)
    checker = env.services.signatures
    before = checker.evaluations
    responses = await asyncio.gather(*(env.api.get(f"/v2/{REPO}/manifests/1", auth=DEPLOY) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert checker.evaluations - before == 1
    # Past the gate's own short cache, the signature verdict is still cached: nothing changed.
    env.services.pull_gate._cache.clear()
    assert (await env.api.get(f"/v2/{REPO}/manifests/1", auth=DEPLOY)).status_code == 200
    assert (await signature_status(env, "1"))["verified"]
    assert checker.evaluations - before == 1
    # Another process over the same database (no local invalidation reaches it) sees changes too.
    other = SignatureChecker(RegistrySignatureSource(env.services.db, env.services.storage))
    assert other.covered(REPO, digest, env.services.trusted_keys.public_keys(PROJECT))[0]
    assert other.covered(REPO, digest, env.services.trusted_keys.public_keys(PROJECT))[0]
    assert other.evaluations == 1
    # A new referrer is a change: both evaluate again.
    await push_bundle(env, digest, body, junk_bundles(digest)[2][1])
    assert (await env.api.get(f"/v2/{REPO}/manifests/1", auth=DEPLOY)).status_code == 200
    assert checker.evaluations - before == 2
    assert other.covered(REPO, digest, env.services.trusted_keys.public_keys(PROJECT))[0] and other.evaluations == 2
    # Deleting the signature is a change: the pull is refused at once, on every node.
    r = await env.api.delete(f"/v2/{REPO}/manifests/{formats.signature_tag(digest)}")
    assert r.status_code == 202, r.text
    error(await env.api.get(f"/v2/{REPO}/manifests/1", auth=DEPLOY), 403, "DENIED")
    assert not other.covered(REPO, digest, env.services.trusted_keys.public_keys(PROJECT))[0]
    # A trusted-key change moves the generation too.
    generation = other.generation(REPO)
    r = await env.api.delete(f"/api/v1/projects/{PROJECT}/security/trusted-keys/release", headers={"X-Dockyard-Client": "test"})
    assert r.status_code == 204, r.text
    assert other.generation(REPO) > generation


async def test_item8_signature_payload_over_limit_says_it_exceeds_the_limit(env):
    """A 5 MiB signature payload was reported as "missing"."""
    await setup(env)
    digest, _ = await env.reg.push_image(REPO, "1", seed=1)
    payload = formats.simple_signing_payload(f"registry.test/{REPO}", digest, {"pad": "x" * (5 << 20)})
    await env.reg.push_blob(REPO, payload)
    config = formats.legacy_config([payload])
    await env.reg.push_blob(REPO, config)
    manifest = formats.legacy_manifest([formats.legacy_layer(payload, sign_message(KEY, payload))], config)
    await env.reg.push_manifest(REPO, formats.signature_tag(digest), manifest, OCI_MANIFEST)
    limit = 4 * 1024 * 1024  # signature_max_blob_bytes, default
    expected = f"over the {limit}-byte limit for signature data (signature_max_blob_bytes)"
    status = await signature_status(env, "1")
    assert not status["verified"] and any(expected in r for r in status["reasons"]), status["reasons"]
    assert not any("missing" in r for r in status["reasons"])
    message = error(await env.api.get(f"/v2/{REPO}/manifests/1", auth=DEPLOY), 403, "DENIED")["message"]
    assert expected in message and f"{len(payload)} bytes" in message


async def test_item1_gate_fails_closed_with_a_reason_on_an_unexpected_error(env, monkeypatch):
    """Defense in depth: should verification itself break, the gate refuses with a reason (403), not a 500."""
    await setup(env)
    digest, _ = await env.reg.push_image(REPO, "1", seed=1)
    await sign_tag_layout(env, digest)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(importlib.import_module("dockyard.signing.in_registry"), "verify", broken)
    message = error(await env.api.get(f"/v2/{REPO}/manifests/1", auth=DEPLOY), 403, "DENIED")["message"]
    assert "the signatures could not be evaluated" in message and "boom" not in message
    status = await signature_status(env, "1")
    assert not status["verified"]



async def test_planted_sbom_referrer_is_never_taken_for_the_scanners_own(env, tmp_path):
    """A pusher plants a referrer that looks exactly like the built-in scanner's SBOM (artifact type,
    layer type, the dev.dockyard.sbom.generator annotation) before the first scan. The scan must
    attach and record its own SBOM, and the SBOM endpoint must serve only that one, size-capped."""
    from dataclasses import replace

    from dockyard.scanning.service import SBOM_GENERATOR_ANNOTATION
    from tests.support.scan_images import FIXED, java_app

    from .helpers import EMPTY_JSON, OCI_EMPTY, descriptor, dumps
    from .test_security_gates import import_fixtures, push_built, wait_scanned

    spdx = "application/spdx+json"
    await env.project("team")
    import_fixtures(env)
    image = java_app(tmp_path / "img", FIXED)
    digest = await push_built(env, "team/app", "1", image)
    planted_doc = dumps({"spdxVersion": "SPDX-2.3", "name": "planted", "packages": [], "pad": "x" * (2 << 20)})
    await env.reg.push_blob("team/app", EMPTY_JSON)
    await env.reg.push_blob("team/app", planted_doc)
    planted_body = dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": spdx,
        "config": descriptor(OCI_EMPTY, EMPTY_JSON),
        "layers": [descriptor(spdx, planted_doc, annotations={"org.opencontainers.image.title": "sbom.spdx.json"})],
        "subject": descriptor(OCI_MANIFEST, image.manifest),
        "annotations": {SBOM_GENERATOR_ANNOTATION: "syft"},
    })
    planted = await env.reg.push_manifest("team/app", sha256(planted_body), planted_body, OCI_MANIFEST)

    async def scan() -> dict:
        r = await env.api.post("/api/v1/repositories/team/app/artifacts/1/scan", headers={"X-Dockyard-Client": "test"})
        assert r.status_code == 202, r.text
        return (await wait_scanned(env, "team/app", "1"))["images"][0]["report"]

    report = await scan()
    assert report["sbom_digest"] and report["sbom_digest"] != planted
    r = await env.api.get(f"/v2/team/app/referrers/{digest}")
    assert sorted(d["digest"] for d in r.json()["manifests"]) == sorted([planted, report["sbom_digest"]])
    sbom = await env.api.get("/api/v1/repositories/team/app/artifacts/1/sbom")
    assert sbom.status_code == 200, sbom.text
    assert sbom.json()["name"] != "planted" and any(p["name"] == "log4j-core" for p in sbom.json()["packages"])
    # A forced rescan keeps the scanner's first SBOM, still not the planted one.
    assert (await scan())["sbom_digest"] == report["sbom_digest"]
    # The read is capped: an SBOM over scan_max_sbom_bytes is refused, not buffered.
    env.services.scans.limits = replace(env.services.scans.limits, max_sbom_bytes=64)
    r = await env.api.get("/api/v1/repositories/team/app/artifacts/1/sbom")
    assert r.status_code == 404 and "over scan_max_sbom_bytes" in r.text, r.text


async def test_item1_junk_bundle_on_the_promotion_gate_is_a_refusal_with_a_reason(env):
    """The promotion gate reads the same signatures: junk is a 403 with the reason, and next to a
    good signature it does not stop the promotion."""
    await setup(env)
    await env.project("prod")
    r = await env.api.post("/api/v1/projects/prod/security/trusted-keys",
                           json={"name": "release", "public_key": public_key_pem(KEY).decode()})
    assert r.status_code == 201, r.text
    r = await env.api.patch("/api/v1/projects/prod/security", json={"promotion_require_signature": True})
    assert r.status_code == 200, r.text
    digest, body = await env.reg.push_image(REPO, "1", seed=1)
    await push_bundle(env, digest, body, junk_bundles(digest)[0][1])
    r = await env.api.post("/api/v1/promotions", json={"source": f"{REPO}:1", "destination": "prod/app"})
    message = error(r, 403, "DENIED")["message"]
    assert "bundle verificationMaterial is not a JSON object" in message
    await sign_tag_layout(env, digest)
    r = await env.api.post("/api/v1/promotions", json={"source": f"{REPO}:1", "destination": "prod/app"})
    assert r.status_code == 201, r.text


async def test_item4_security_generation_moves_with_every_relevant_change(env):
    """Every writer that can change a signature verdict moves the project's generation in its own
    transaction; an upload alone does not (cached verdicts stay valid)."""
    await setup(env)
    await env.project("prod")
    checker = env.services.signatures
    digest, body = await env.reg.push_image(REPO, "1", seed=1)
    seen = [checker.generation(REPO)]

    async def moved(project_repo: str = REPO) -> bool:
        now = checker.generation(project_repo)
        changed = now != seen[-1]
        seen.append(now)
        return changed

    await env.reg.push_blob(REPO, b"just a blob")
    assert not await moved()
    await sign_tag_layout(env, digest)
    assert await moved()
    await push_bundle(env, digest, body, junk_bundles(digest)[0][1])
    assert await moved()
    r = await env.api.put(f"/api/v1/repositories/{REPO}/tags/other", json={"digest": digest})
    assert r.status_code == 200, r.text
    assert await moved()
    r = await env.api.delete(f"/api/v1/repositories/{REPO}/tags/other", headers={"X-Dockyard-Client": "test"})
    assert r.status_code == 204, r.text
    assert await moved()
    r = await env.api.patch(f"/api/v1/projects/{PROJECT}/security", json={"block_severity": "critical", "unscanned": "allow"})
    assert r.status_code == 200, r.text
    assert await moved()
    before = checker.generation("prod/app")
    r = await env.api.post("/api/v1/promotions", json={"source": f"{REPO}:1", "destination": "prod/app", "include_referrers": True})
    assert r.status_code == 201, r.text
    assert checker.generation("prod/app") > before
