"""Signing and verification against an in-memory registry: both cosign layouts, the rejections
(wrong digest, tampered payload, untrusted key), Notation by presence, and the HTTP client
(token auth, referrers fallback)."""

from __future__ import annotations

import base64
import json

import pytest

from dockyard.signing import formats
from dockyard.signing.cosign_keys import fingerprint, generate_private_key, key_hint, sign_message
from dockyard.signing.registry import RegistryClient, RegistryError, parse_reference
from dockyard.signing.sign import sign_image
from dockyard.signing.verify import Layout, check_signatures, find_signatures, verify
from signing_fakes import MemoryRegistry

REPO = "proj/app"


@pytest.fixture(scope="module")
def key():
    return generate_private_key()


@pytest.fixture(scope="module")
def other_key():
    return generate_private_key()


@pytest.fixture
def reg():
    return MemoryRegistry()


def _client(reg: MemoryRegistry, **kw) -> RegistryClient:
    return RegistryClient("http://reg.test", transport=reg.transport(), **kw)


def _sign(reg, key, layout, tag="v1", **kw):
    with _client(reg) as client:
        return sign_image(client, parse_reference(f"reg.test/{REPO}:{tag}"), key, layout=layout, **kw)


@pytest.mark.parametrize("layout", [Layout.BUNDLE, Layout.TAG])
def test_sign_then_verify(reg, key, other_key, layout):
    digest = reg.push_image(REPO, "v1")
    result = _sign(reg, key, layout)
    assert result.image_digest == digest and result.layout is layout
    verdict = verify(reg, REPO, digest, [other_key.public_key(), key.public_key()])
    assert verdict.signed and verdict.verified
    assert verdict.verified_by == [fingerprint(key.public_key())]
    assert verdict.layouts == verdict.verified_layouts == {layout}
    # The same through the HTTP client.
    with _client(reg) as client:
        assert verify(client, REPO, digest, [key.public_key()]).verified_by == [fingerprint(key.public_key())]


def test_bundle_layout_written_as_cosign_does(reg, key):
    digest = reg.push_image(REPO, "v1")
    result = _sign(reg, key, Layout.BUNDLE)
    (desc,) = reg.referrers(REPO, digest)
    assert desc["digest"] == result.signature_ref and desc["artifactType"] == formats.BUNDLE_V03
    manifest = json.loads(reg.manifest(REPO, result.signature_ref))
    assert manifest["subject"]["digest"] == digest
    assert manifest["subject"]["size"] == len(reg.manifest(REPO, digest))
    assert reg.blob(REPO, formats.EMPTY_DIGEST) == b"{}"
    bundle = json.loads(reg.blob(REPO, manifest["layers"][0]["digest"]))
    assert bundle["verificationMaterial"] == {"publicKey": {"hint": key_hint(key.public_key())}}
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["subject"] == [{"digest": {"sha256": digest[7:]}}]
    assert not any(tag.endswith(".sig") for (_, tag) in reg.tags)


def test_tag_layout_appends_signatures(reg, key, other_key):
    digest = reg.push_image(REPO, "v1")
    _sign(reg, key, Layout.TAG)
    _sign(reg, other_key, Layout.TAG)
    _sign(reg, key, Layout.TAG)  # ECDSA signatures are randomized: a third layer
    sig_manifest = json.loads(reg.manifest(REPO, formats.signature_tag(digest)))
    assert len(sig_manifest["layers"]) == 3
    payload = reg.blob(REPO, sig_manifest["layers"][0]["digest"])
    assert formats.parse_simple_signing(payload).docker_reference == f"reg.test/{REPO}"
    verdict = verify(reg, REPO, digest, [key.public_key(), other_key.public_key()])
    assert sorted(verdict.verified_by) == sorted([fingerprint(key.public_key()), fingerprint(other_key.public_key())])


def test_unsigned_image_is_not_verified(reg, key):
    digest = reg.push_image(REPO, "v1")
    verdict = verify(reg, REPO, digest, [key.public_key()])
    assert not verdict.signed and not verdict.verified
    assert verdict.reasons == [f"no signatures found for {digest}"]


@pytest.mark.parametrize("layout", [Layout.BUNDLE, Layout.TAG])
def test_untrusted_key_is_rejected(reg, key, other_key, layout):
    digest = reg.push_image(REPO, "v1")
    _sign(reg, key, layout)
    verdict = verify(reg, REPO, digest, [other_key.public_key()])
    assert verdict.signed and not verdict.verified
    assert any("not signed by any trusted key" in r for r in verdict.reasons)
    assert not verify(reg, REPO, digest, []).verified


def test_signature_for_another_digest_is_rejected(reg, key):
    """A valid signature over a payload naming image A, copied to image B (tag layout)."""
    a = reg.push_image(REPO, "a", seed="a")
    b = reg.push_image(REPO, "b", seed="b")
    _sign(reg, key, Layout.TAG, tag="a")
    reg.tags[(REPO, formats.signature_tag(b))] = reg.tags[(REPO, formats.signature_tag(a))]
    verdict = verify(reg, REPO, b, [key.public_key()])
    assert not verdict.verified and any(f"payload signs {a}, not {b}" in r for r in verdict.reasons)
    assert verify(reg, REPO, a, [key.public_key()]).verified


def test_bundle_for_another_digest_is_rejected(reg, key):
    """A bundle whose statement names image A, attached as a referrer of image B."""
    a = reg.push_image(REPO, "a", seed="a")
    b = reg.push_image(REPO, "b", seed="b")
    statement = formats.sign_statement(a)
    bundle = formats.dsse_bundle(statement, sign_message(key, formats.pae(formats.INTOTO_PAYLOAD_TYPE, statement)),
                                 key_hint(key.public_key()))
    reg.put_blob(REPO, bundle)
    subject = {"mediaType": formats.OCI_MANIFEST, "size": len(reg.manifest(REPO, b)), "digest": b}
    reg.put_manifest(REPO, formats.bundle_referrer_manifest(bundle, subject))
    verdict = verify(reg, REPO, b, [key.public_key()])
    assert verdict.signed and not verdict.verified
    assert any(f"statement subject does not name {b}" in r for r in verdict.reasons)


def test_tampered_payload_is_rejected(reg, key):
    digest = reg.push_image(REPO, "v1")
    _sign(reg, key, Layout.TAG)
    found = find_signatures(reg, REPO, digest)
    assert check_signatures(found, digest, [key.public_key()]).verified
    found[0].payload = found[0].signed = found[0].signed.replace(b"cosign container", b"cosign Container")
    verdict = check_signatures(found, digest, [key.public_key()])
    assert not verdict.verified and any("not signed by any trusted key" in r for r in verdict.reasons)


def test_tampered_bundle_statement_is_rejected(reg, key):
    digest = reg.push_image(REPO, "v1")
    _sign(reg, key, Layout.BUNDLE)
    (sig,) = find_signatures(reg, REPO, digest)
    sig.payload = sig.payload.replace(b'"predicate":{}', b'"predicate":{"x":1}')
    sig.signed = formats.pae(sig.payload_type, sig.payload)
    assert not check_signatures([sig], digest, [key.public_key()]).verified


def test_attestation_is_not_a_signature(reg, key):
    digest = reg.push_image(REPO, "v1")
    statement = json.dumps({"_type": formats.STATEMENT_V1, "predicateType": "https://slsa.dev/provenance/v1",
                            "subject": [{"digest": {"sha256": digest[7:]}}], "predicate": {}}).encode()
    bundle = formats.dsse_bundle(statement, sign_message(key, formats.pae(formats.INTOTO_PAYLOAD_TYPE, statement)),
                                 key_hint(key.public_key()))
    reg.put_blob(REPO, bundle)
    subject = {"mediaType": formats.OCI_MANIFEST, "size": len(reg.manifest(REPO, digest)), "digest": digest}
    reg.put_manifest(REPO, formats.bundle_referrer_manifest(bundle, subject, predicate_type="https://slsa.dev/provenance/v1"))
    verdict = verify(reg, REPO, digest, [key.public_key()])
    assert not verdict.verified and any("an attestation" in r for r in verdict.reasons)


def test_notation_signature_is_recognized_not_verified(reg, key):
    digest = reg.push_image(REPO, "v1")
    envelope = b'{"payload":"x"}'
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": formats.OCI_MANIFEST,
        "config": {"mediaType": formats.NOTATION_SIGNATURE, "size": 2, "digest": reg.put_blob(REPO, b"{}")},
        "layers": [{"mediaType": "application/jose+json", "size": len(envelope), "digest": reg.put_blob(REPO, envelope)}],
        "subject": {"mediaType": formats.OCI_MANIFEST, "size": len(reg.manifest(REPO, digest)), "digest": digest},
    }).encode()
    reg.put_manifest(REPO, manifest)
    verdict = verify(reg, REPO, digest, [key.public_key()])
    assert verdict.signed and verdict.layouts == {Layout.NOTATION} and not verdict.verified


def test_missing_payload_blob_is_reported(reg, key):
    digest = reg.push_image(REPO, "v1")
    _sign(reg, key, Layout.TAG)
    layer = json.loads(reg.manifest(REPO, formats.signature_tag(digest)))["layers"][0]["digest"]
    del reg.blobs[layer]
    verdict = verify(reg, REPO, digest, [key.public_key()])
    assert verdict.signed and not verdict.verified and any("is missing" in r for r in verdict.reasons)


def test_rsa_key_signs_and_verifies(reg):
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    digest = reg.push_image(REPO, "v1")
    _sign(reg, key, Layout.BUNDLE)
    assert verify(reg, REPO, digest, [key.public_key()]).verified


def test_http_client_token_auth():
    reg = MemoryRegistry(token_auth=("alice", "pw"))
    digest = reg.push_image(REPO, "v1")
    key = generate_private_key()
    with _client(reg, username="alice", password="pw") as client:
        sign_image(client, parse_reference(f"reg.test/{REPO}:v1"), key)
        assert verify(client, REPO, digest, [key.public_key()]).verified
    scopes = {t.get("scope") for t in reg.token_requests}
    assert f"repository:{REPO}:pull,push" in scopes and f"repository:{REPO}:pull" in scopes
    assert all(t["service"] == "reg.test" for t in reg.token_requests)
    with _client(reg, username="alice", password="wrong") as client:
        with pytest.raises(RegistryError, match="token request"):
            verify(client, REPO, digest, [key.public_key()])


def test_http_client_referrers_tag_fallback(key):
    """Without a referrers API the client reads the `sha256-<hex>` referrers index."""
    reg = MemoryRegistry(referrers_api=False)
    digest = reg.push_image(REPO, "v1")
    _sign(reg, key, Layout.BUNDLE)
    with _client(reg) as client:
        assert not verify(client, REPO, digest, [key.public_key()]).signed
    index = json.dumps({"schemaVersion": 2, "mediaType": formats.OCI_INDEX,
                        "manifests": MemoryRegistry.referrers(reg, REPO, digest)}).encode()
    reg.put_manifest(REPO, index, digest.replace(":", "-"))
    with _client(reg) as client:
        assert verify(client, REPO, digest, [key.public_key()]).verified


def test_http_client_checks_blob_digests(key):
    reg = MemoryRegistry()
    digest = reg.push_image(REPO, "v1")
    _sign(reg, key, Layout.TAG)
    layer = json.loads(reg.manifest(REPO, formats.signature_tag(digest)))["layers"][0]["digest"]
    reg.blobs[layer] = reg.blobs[layer] + b" "
    with _client(reg) as client, pytest.raises(RegistryError, match="hashes to"):
        verify(client, REPO, digest, [key.public_key()])


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:5000/proj/app:v1", ("127.0.0.1:5000", "proj/app", "v1", None)),
    ("reg.example.com/a/b/c@" + "sha256:" + "0" * 64, ("reg.example.com", "a/b/c", None, "sha256:" + "0" * 64)),
    ("localhost/app", ("localhost", "app", None, None)),
])
def test_parse_reference(text, expected):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected
    assert str(ref) == text


@pytest.mark.parametrize("text", ["app:v1", "proj/app", "reg.io/App:v1", "reg.io/app@sha256:xyz"])
def test_parse_reference_rejects(text):
    with pytest.raises(ValueError):
        parse_reference(text)


def test_verify_rejects_bad_digest(reg):
    with pytest.raises(formats.FormatError):
        find_signatures(reg, REPO, "sha256:nothex")
