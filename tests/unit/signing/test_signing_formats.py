"""Byte-exact cosign documents: simple signing, the in-toto statement, DSSE PAE, the bundle."""

from __future__ import annotations

import base64
import json

import pytest

from dockyard.signing import formats

DIGEST = "sha256:" + "ab" * 32


def test_simple_signing_payload_bytes():
    """What sigstore's payload.Cosign marshals (Go encoding/json, struct field order)."""
    assert formats.simple_signing_payload("127.0.0.1:5000/proj/app", DIGEST) == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/proj/app"},'
        b'"image":{"docker-manifest-digest":"sha256:' + b"ab" * 32 + b'"},'
        b'"type":"cosign container image signature"},"optional":null}')
    with_annotations = formats.simple_signing_payload("r/a", DIGEST, {"env": "<prod>"})
    assert with_annotations.endswith(b'"optional":{"env":"\\u003cprod\\u003e"}}')


def test_simple_signing_parse():
    parsed = formats.parse_simple_signing(formats.simple_signing_payload("r/a", DIGEST, {"k": "v"}))
    assert (parsed.docker_reference, parsed.image_digest, parsed.optional) == ("r/a", DIGEST, {"k": "v"})
    with pytest.raises(formats.FormatError, match="unknown type"):
        formats.parse_simple_signing(b'{"critical":{"identity":{},"image":{"docker-manifest-digest":"x"},"type":"atomic"}}')
    with pytest.raises(formats.FormatError):
        formats.parse_simple_signing(b"[]")


def test_signature_tag():
    assert formats.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    with pytest.raises(formats.FormatError):
        formats.signature_tag("sha256:abc")


def test_pae_bytes():
    # The DSSE spec's own example.
    assert formats.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert formats.pae("application/vnd.in-toto+json", b"") == b"DSSEv1 28 application/vnd.in-toto+json 0 "
    # Lengths count bytes, not characters.
    assert formats.pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_statement_bytes_and_parse():
    statement = formats.sign_statement(DIGEST)
    assert statement == (b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"'
                         + b"ab" * 32 + b'"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}')
    parsed = formats.parse_statement(statement)
    assert parsed.predicate_type == formats.COSIGN_SIGN_PREDICATE
    assert formats.statement_names_digest(parsed, DIGEST)
    assert not formats.statement_names_digest(parsed, "sha256:" + "cd" * 32)
    with pytest.raises(formats.FormatError, match="statement type"):
        formats.parse_statement(b'{"_type":"x","predicateType":"p","subject":[]}')


def test_bundle_round_trip():
    bundle = formats.dsse_bundle(b'{"a":1}', b"\x01\x02", "aGludA==")
    doc = json.loads(bundle)
    assert doc == {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                   "verificationMaterial": {"publicKey": {"hint": "aGludA=="}},
                   "dsseEnvelope": {"payload": base64.b64encode(b'{"a":1}').decode(),
                                    "payloadType": "application/vnd.in-toto+json",
                                    "signatures": [{"sig": "AQI="}]}}
    env = formats.parse_bundle(bundle)
    assert (env.payload, env.payload_type, env.signatures, env.key_hint, env.keyless) == \
        (b'{"a":1}', "application/vnd.in-toto+json", [b"\x01\x02"], "aGludA==", False)


def test_bundle_parse_errors():
    with pytest.raises(formats.FormatError, match="message signature"):
        formats.parse_bundle(json.dumps({"mediaType": formats.BUNDLE_V03, "messageSignature": {}}).encode())
    with pytest.raises(formats.FormatError, match="media type"):
        formats.parse_bundle(b'{"mediaType":"x","dsseEnvelope":{}}')
    keyless = formats.parse_bundle(json.dumps({
        "mediaType": formats.BUNDLE_V03, "verificationMaterial": {"certificate": {"rawBytes": "AA=="}},
        "dsseEnvelope": {"payload": "e30=", "payloadType": "t", "signatures": [{"sig": "AA=="}]}}).encode())
    assert keyless.keyless


def test_referrer_manifest_shape():
    subject = {"mediaType": formats.OCI_MANIFEST, "size": 123, "digest": DIGEST}
    bundle = b'{"bundle":true}'
    doc = json.loads(formats.bundle_referrer_manifest(bundle, subject))
    assert doc["artifactType"] == formats.BUNDLE_V03
    assert doc["config"] == {"mediaType": "application/vnd.oci.empty.v1+json", "artifactType": formats.BUNDLE_V03,
                             "size": 2, "digest": formats.sha256_digest(b"{}")}
    assert formats.EMPTY_DIGEST == formats.sha256_digest(formats.EMPTY_JSON)
    assert doc["layers"] == [{"mediaType": formats.BUNDLE_V03, "size": len(bundle), "digest": formats.sha256_digest(bundle)}]
    assert doc["subject"] == subject
    assert doc["annotations"]["dev.sigstore.bundle.predicateType"] == "https://sigstore.dev/cosign/sign/v1"
    assert doc["annotations"]["dev.sigstore.bundle.content"] == "dsse-envelope"
    assert formats.is_cosign_bundle(doc) and not formats.is_notation_signature(doc)


def test_legacy_manifest_round_trip():
    payload = formats.simple_signing_payload("r/a", DIGEST)
    layer = formats.legacy_layer(payload, b"sig")
    config = formats.legacy_config([payload])
    doc = json.loads(formats.legacy_manifest([layer], config))
    assert doc["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert json.loads(config)["rootfs"]["diff_ids"] == [formats.sha256_digest(payload)]
    (entry,) = formats.parse_legacy_manifest(doc)
    assert (entry.payload_digest, entry.signature, entry.keyless, entry.error) == \
        (formats.sha256_digest(payload), b"sig", False, None)
    del doc["layers"][0]["annotations"]
    assert formats.parse_legacy_manifest(doc)[0].error == "layer has no signature annotation"


@pytest.mark.parametrize("doc", [
    {"config": {"mediaType": "application/vnd.cncf.notary.signature"}},
    {"artifactType": "application/vnd.cncf.notary.signature", "config": {"mediaType": formats.OCI_EMPTY}},
])
def test_notation_detection(doc):
    assert formats.is_notation_signature(doc)
    assert not formats.is_cosign_bundle(doc)


def test_tag_layout_documents_match_cosign_byte_for_byte():
    """Digests of what cosign v3.1.3 (`sign --new-bundle-format=false`) pushed for this image."""
    image = "sha256:d54d053bf296d0a373bd4d49eb705905a2e715c3ebad95f829388ba576a50ed8"
    payload = formats.simple_signing_payload("127.0.0.1:51987/p/app", image)
    assert (len(payload), formats.sha256_digest(payload)) == \
        (237, "sha256:26fe211c87e30859494c9d5b45a47ebab831ea800465032a929a98758538f98c")
    config = formats.legacy_config([payload])
    assert (len(config), formats.sha256_digest(config)) == \
        (233, "sha256:8697c80569b97c2363e71279c9517df288f5426d948bb935eb2d0aabed4c6469")


def test_referrer_manifest_matches_cosign_byte_for_byte():
    """cosign v3.1.3's referrer manifest for a 667-byte bundle, rebuilt from the same inputs."""
    from datetime import datetime, timezone

    cosign_manifest = (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":'
        b'"application/vnd.oci.empty.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",'
        b'"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"},"layers":[{"mediaType":'
        b'"application/vnd.dev.sigstore.bundle.v0.3+json","size":667,"digest":"sha256:8049c3fad379584689a54cf2b760d6f17e74f5dbec410a3eeaa324fa039f113c"}],'
        b'"annotations":{"dev.sigstore.bundle.content":"dsse-envelope","dev.sigstore.bundle.predicateType":'
        b'"https://sigstore.dev/cosign/sign/v1","org.opencontainers.image.created":"2026-11-27T02:07:24Z"},'
        b'"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":402,"digest":'
        b'"sha256:d54d053bf296d0a373bd4d49eb705905a2e715c3ebad95f829388ba576a50ed8"},'
        b'"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"}')
    doc = json.loads(cosign_manifest)
    ours = formats.bundle_referrer_manifest(doc["layers"][0], doc["subject"],
                                            created=datetime(2026, 11, 27, 2, 7, 24, tzinfo=timezone.utc))
    assert ours == cosign_manifest
