"""Hostile signature data (issue 19 items 1, 4, 8): what anyone with push can attach to an image.

Every malformed signature becomes that signature's error and never hides a good one; one
evaluation is bounded (layers, referrers, one read per blob); concurrent evaluations of one digest
are merged and verdicts are cached until the project's security generation moves."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.signing import formats
from dockyard.signing.cosign_keys import fingerprint, generate_private_key, key_hint, sign_message
from dockyard.signing.verify import Layout, Limits, check_signatures, find_signatures, verify
from signing_fakes import MemoryRegistry

REPO = "proj/app"
KEY = generate_private_key()
FP = fingerprint(KEY.public_key())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def signed_image(reg: MemoryRegistry) -> str:
    """An image with one good tag-layout signature by KEY."""
    digest = reg.push_image(REPO, "v1")
    add_sig_layers(reg, digest, [good_layer(reg, digest)])
    return digest


def good_layer(reg: MemoryRegistry, digest: str) -> dict:
    payload = formats.simple_signing_payload(f"reg.test/{REPO}", digest)
    reg.put_blob(REPO, payload)
    return formats.legacy_layer(payload, sign_message(KEY, payload))


def add_sig_layers(reg: MemoryRegistry, digest: str, layers: list, config: dict | None = None) -> None:
    """(Re)write the `.sig` manifest of `digest` with these layers, however malformed."""
    cfg = b"{}"
    reg.put_blob(REPO, cfg)
    manifest = {"schemaVersion": 2, "mediaType": formats.OCI_MANIFEST,
                "config": config or formats.descriptor(formats.OCI_IMAGE_CONFIG, cfg), "layers": layers}
    reg.put_manifest(REPO, json.dumps(manifest).encode(), formats.signature_tag(digest))


def add_bundle_referrer(reg: MemoryRegistry, digest: str, bundle: bytes) -> str:
    reg.put_blob(REPO, bundle)
    reg.put_blob(REPO, formats.EMPTY_JSON)
    subject = {"mediaType": formats.OCI_MANIFEST, "size": len(reg.manifest(REPO, digest)), "digest": digest}
    return reg.put_manifest(REPO, formats.bundle_referrer_manifest(bundle, subject))


def bundle_doc(digest: str) -> dict:
    """A valid bundle by KEY for `digest`, as a dict to spoil."""
    statement = formats.sign_statement(digest)
    raw = formats.dsse_bundle(statement, sign_message(KEY, formats.pae(formats.INTOTO_PAYLOAD_TYPE, statement)),
                              key_hint(KEY.public_key()))
    return json.loads(raw)


def spoil(path: list, value):
    def apply(doc: dict) -> dict:
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        return doc
    return apply


BUNDLE_SPOILERS = {
    "verificationMaterial is a string": spoil(["verificationMaterial"], "junk"),
    "verificationMaterial is a list": spoil(["verificationMaterial"], ["junk"]),
    "publicKey is a list": spoil(["verificationMaterial", "publicKey"], [1]),
    "payloadType is a number": spoil(["dsseEnvelope", "payloadType"], 7),
    "payload is a number": spoil(["dsseEnvelope", "payload"], 7),
    "signatures is a string": spoil(["dsseEnvelope", "signatures"], "abc"),
    "a signature is a string": spoil(["dsseEnvelope", "signatures"], ["abc"]),
    "sig is a number": spoil(["dsseEnvelope", "signatures"], [{"sig": 5}]),
    "dsseEnvelope is a list": spoil(["dsseEnvelope"], []),
    "mediaType is a list": spoil(["mediaType"], [formats.BUNDLE_V03]),
    "statement is a list": spoil(["dsseEnvelope", "payload"], b64(b"[1, 2]")),
    "statement subject is an object": spoil(["dsseEnvelope", "payload"], b64(json.dumps(
        {"_type": formats.STATEMENT_V1, "predicateType": formats.COSIGN_SIGN_PREDICATE, "subject": {"a": 1}}).encode())),
    "statement subject digest is a list": spoil(["dsseEnvelope", "payload"], b64(json.dumps(
        {"_type": formats.STATEMENT_V1, "predicateType": formats.COSIGN_SIGN_PREDICATE, "subject": [{"digest": [1]}]}).encode())),
}


@pytest.mark.parametrize("case", sorted(BUNDLE_SPOILERS))
def test_item1_junk_bundle_next_to_good_signature_is_that_signatures_error(case):
    reg = MemoryRegistry()
    digest = signed_image(reg)
    junk = add_bundle_referrer(reg, digest, json.dumps(BUNDLE_SPOILERS[case](bundle_doc(digest))).encode())
    verdict = verify(reg, REPO, digest, [KEY.public_key()])
    assert verdict.verified and verdict.verified_by == [FP] and verdict.verified_layouts == {Layout.TAG}
    assert any(r.startswith(f"bundle signature {junk}:") for r in verdict.reasons), verdict.reasons
    # Alone, the junk bundle fails closed with its own reason.
    lone = MemoryRegistry()
    image = lone.push_image(REPO, "v1")
    junk = add_bundle_referrer(lone, image, json.dumps(BUNDLE_SPOILERS[case](bundle_doc(image))).encode())
    verdict = verify(lone, REPO, image, [KEY.public_key()])
    assert verdict.signed and not verdict.verified
    assert [r for r in verdict.reasons if r.startswith(f"bundle signature {junk}:")], verdict.reasons


LAYER_SPOILERS = {
    "signature annotation is a number": lambda layer: {**layer, "annotations": {formats.SIGNATURE_ANNOTATION: 12345}},
    "annotations is a string": lambda layer: {**layer, "annotations": "junk"},
    "annotations is a list": lambda layer: {**layer, "annotations": ["junk"]},
    "digest is a number": lambda layer: {**layer, "digest": 5},
    "digest is not a digest": lambda layer: {**layer, "digest": "../../etc/passwd"},
    "size is a string": lambda layer: {**layer, "size": "250"},
    "layer is a string": lambda layer: "junk",
    "layer is a list": lambda layer: [layer],
}


@pytest.mark.parametrize("case", sorted(LAYER_SPOILERS))
def test_item1_junk_sig_layer_next_to_good_layer_is_that_layers_error(case):
    reg = MemoryRegistry()
    digest = reg.push_image(REPO, "v1")
    good = good_layer(reg, digest)
    add_sig_layers(reg, digest, [LAYER_SPOILERS[case](good), good])
    found = find_signatures(reg, REPO, digest)
    assert len(found) == 2 and found[0].error and not found[1].error, found
    verdict = check_signatures(found, digest, [KEY.public_key()])
    assert verdict.verified_by == [FP]
    assert any(found[0].error in r for r in verdict.reasons)


@pytest.mark.parametrize("payload", [b"[1]", b'{"critical": []}', b'{"critical": {"type": 5}}',
                                     b'{"critical": {"type": "cosign container image signature", "image": "x"}}',
                                     b'{"critical": {"type": "cosign container image signature", "image": {"docker-manifest-digest": 5}}}',
                                     b'{"critical": {"type": "cosign container image signature", "identity": [], '
                                     b'"image": {"docker-manifest-digest": "sha256:00"}}}',
                                     b"\xff\xfe not utf-8", b"[" * 100_000])
def test_item1_junk_simple_signing_payload_signed_by_a_trusted_key_is_refused(payload):
    """Even correctly signed by a trusted key, a payload of the wrong shape is that signature's error."""
    reg = MemoryRegistry()
    digest = reg.push_image(REPO, "v1")
    reg.put_blob(REPO, payload)
    add_sig_layers(reg, digest, [formats.legacy_layer(payload, sign_message(KEY, payload)), good_layer(reg, digest)])
    verdict = verify(reg, REPO, digest, [KEY.public_key()])
    assert verdict.verified_by == [FP]
    lone = MemoryRegistry()
    image = lone.push_image(REPO, "v1")
    lone.put_blob(REPO, payload)
    add_sig_layers(lone, image, [formats.legacy_layer(payload, sign_message(KEY, payload))])
    verdict = verify(lone, REPO, image, [KEY.public_key()])
    assert verdict.signed and not verdict.verified and verdict.reasons


def test_item1_sig_manifest_of_the_wrong_shape_is_that_signatures_error():
    reg = MemoryRegistry()
    digest = reg.push_image(REPO, "v1")
    reg.put_manifest(REPO, b'{"schemaVersion": 2, "layers": "junk"}', formats.signature_tag(digest))
    good = add_bundle_referrer(reg, digest, json.dumps(bundle_doc(digest)).encode())
    verdict = verify(reg, REPO, digest, [KEY.public_key()])
    assert verdict.verified_by == [FP] and verdict.verified_layouts == {Layout.BUNDLE}, good
    assert any("manifest layers is not a list" in r for r in verdict.reasons)


class _JunkReferrers(MemoryRegistry):
    """A remote registry whose referrers list holds non-objects and wrongly typed fields."""

    def referrers(self, repo, digest, artifact_type=None):
        return ["junk", 5, {"artifactType": ["x"]}, {"artifactType": formats.BUNDLE_V03, "digest": 7},
                {"config": "x", "digest": "sha256:" + "0" * 64}] + super().referrers(repo, digest, artifact_type)


def test_item1_junk_referrer_descriptors_do_not_hide_a_good_signature():
    reg = _JunkReferrers()
    digest = signed_image(reg)
    verdict = verify(reg, REPO, digest, [KEY.public_key()])
    assert verdict.verified_by == [FP]
    assert any("referrer manifest is missing" in r for r in verdict.reasons)


json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
bundle_fields = st.fixed_dictionaries({}, optional={
    "mediaType": st.sampled_from([formats.BUNDLE_V03]) | json_junk,
    "verificationMaterial": json_junk,
    "dsseEnvelope": st.fixed_dictionaries({}, optional={
        "payload": st.sampled_from(["", b64(b"{}"), b64(b"[]")]) | json_junk,
        "payloadType": st.sampled_from([formats.INTOTO_PAYLOAD_TYPE]) | json_junk,
        "signatures": json_junk | st.lists(st.fixed_dictionaries({"sig": json_junk}), max_size=2),
    }) | json_junk,
})
layer_fields = st.fixed_dictionaries({"mediaType": st.just(formats.SIMPLE_SIGNING)}, optional={
    "digest": json_junk, "size": json_junk,
    "annotations": json_junk | st.dictionaries(st.sampled_from([formats.SIGNATURE_ANNOTATION, formats.CERTIFICATE_ANNOTATION]),
                                               json_junk, max_size=2),
}) | json_junk


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bundle=bundle_fields, layers=st.lists(layer_fields, max_size=4))
def test_item1_generated_junk_never_raises_and_never_hides_the_good_signature(bundle, layers):
    reg = MemoryRegistry()
    digest = reg.push_image(REPO, "v1")
    add_sig_layers(reg, digest, layers + [good_layer(reg, digest)])
    add_bundle_referrer(reg, digest, json.dumps(bundle).encode())
    verdict = verify(reg, REPO, digest, [KEY.public_key()])
    assert verdict.verified_by == [FP]


# -- item 4: bounded evaluation ------------------------------------------------------------------


class CountingRegistry(MemoryRegistry):
    def __init__(self):
        super().__init__()
        self.blob_reads: list[str] = []

    def blob(self, repo, digest):
        self.blob_reads.append(digest)
        return super().blob(repo, digest)


def test_item4_12000_layer_sig_manifest_is_bounded(monkeypatch):
    """12,000 layers naming one payload: at most `max_layers` are examined, the payload is read
    once, and the verdict says the rest were skipped; the good first layer still verifies."""
    import importlib

    verify_module = importlib.import_module("dockyard.signing.verify")
    checks = []
    real = verify_module.verify_message
    monkeypatch.setattr(verify_module, "verify_message", lambda *a: checks.append(1) or real(*a))
    reg = CountingRegistry()
    digest = reg.push_image(REPO, "v1")
    good = good_layer(reg, digest)
    junk = {**good, "annotations": {formats.SIGNATURE_ANNOTATION: b64(b"not a signature")}}
    add_sig_layers(reg, digest, [good] + [junk] * 11_999)
    assert len(json.loads(reg.manifest(REPO, formats.signature_tag(digest)))["layers"]) == 12_000
    reg.blob_reads.clear()
    verdict = verify(reg, REPO, digest, [KEY.public_key()], Limits(max_layers=64))
    assert verdict.verified_by == [FP]
    assert len(checks) <= 64
    assert reg.blob_reads == [good["digest"]]
    assert any("has 12000 signature layers; only the first 64 were examined (signature_max_layers)" in r
               for r in verdict.reasons)


def test_item4_signature_referrers_are_capped():
    reg = MemoryRegistry()
    digest = reg.push_image(REPO, "v1")
    for n in range(10):
        add_bundle_referrer(reg, digest, json.dumps({"mediaType": formats.BUNDLE_V03, "junk": n}).encode())
    found = find_signatures(reg, REPO, digest, Limits(max_referrers=3))
    assert len(found) == 4
    assert any(s.error and "only the first 3 were examined (signature_max_referrers)" in s.error for s in found)


# -- item 8 -------------------------------------------------------------------------------------


class LimitedRegistry(MemoryRegistry):
    def blob(self, repo, digest):
        data = super().blob(repo, digest)
        if data is not None and len(data) > 1024:
            raise formats.TooLarge(f"blob {digest} is {len(data)} bytes, over the 1024-byte limit for signature data")
        return data


def test_item8_signature_payload_over_limit_is_reported_as_over_the_limit():
    reg = LimitedRegistry()
    digest = reg.push_image(REPO, "v1")
    payload = formats.simple_signing_payload(f"reg.test/{REPO}", digest, {"pad": "x" * 2048})
    reg.put_blob(REPO, payload)
    add_sig_layers(reg, digest, [formats.legacy_layer(payload, sign_message(KEY, payload)), good_layer(reg, digest)])
    verdict = verify(reg, REPO, digest, [KEY.public_key()])
    assert verdict.verified_by == [FP]
    (reason,) = [r for r in verdict.reasons if "limit" in r or "missing" in r]
    assert "over the 1024-byte limit" in reason and "missing" not in reason


def test_item8_signature_payload_over_limit_through_the_http_client(monkeypatch):
    from dockyard.signing import registry as registry_module
    from dockyard.signing.registry import RegistryClient

    monkeypatch.setattr(registry_module, "MAX_DOCUMENT", 1024)
    reg = MemoryRegistry()
    digest = reg.push_image(REPO, "v1")
    payload = formats.simple_signing_payload(f"reg.test/{REPO}", digest, {"pad": "x" * 2048})
    reg.put_blob(REPO, payload)
    add_sig_layers(reg, digest, [formats.legacy_layer(payload, sign_message(KEY, payload)), good_layer(reg, digest)])
    with RegistryClient("http://reg.test", transport=reg.transport()) as client:
        verdict = verify(client, REPO, digest, [KEY.public_key()])
    assert verdict.verified_by == [FP]
    assert any("over the 1024-byte limit" in r for r in verdict.reasons), verdict.reasons


def test_item4_single_flight_merges_concurrent_evaluations():
    """Eight threads ask for the same verdict while the first evaluation is held: one evaluation."""
    from dockyard.signing.in_registry import SignatureChecker

    reg = MemoryRegistry()
    digest = signed_image(reg)
    release = threading.Event()

    class HeldSource:
        max_referrers = 64

        def __getattr__(self, name):
            return getattr(reg, name)

        def blob(self, repo, d):
            release.wait(30)
            return reg.blob(repo, d)

    checker = SignatureChecker(HeldSource())
    results = []
    threads = [threading.Thread(target=lambda: results.append(checker.verdict(REPO, digest, [KEY.public_key()], generation=1)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for _ in range(3000):  # wait (not a timing assertion) until the seven others joined the flight
        if checker.merged == 7:
            break
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join(30)
    assert checker.merged == 7 and checker.evaluations == 1
    assert len(results) == 8 and all(r is results[0] and r.verified for r in results)
    # Cached for this generation; a new generation evaluates again.
    checker.verdict(REPO, digest, [KEY.public_key()], generation=1)
    assert checker.evaluations == 1
    checker.verdict(REPO, digest, [KEY.public_key()], generation=2)
    assert checker.evaluations == 2
