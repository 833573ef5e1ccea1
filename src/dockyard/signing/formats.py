"""Wire formats of cosign and Notation signatures stored in an OCI registry.

Pure functions: build and parse the documents, no I/O. Two cosign layouts
(/work/shared/reference/signing.md (a), (b)):

- tag layout: tag `sha256-<hex>.sig` → image manifest whose layers are simple-signing payloads,
  each with its base64 signature in the `dev.cosignproject.cosign/signature` annotation;
- bundle layout (cosign v3's default): a referrer manifest (`subject` = the image) with one layer,
  a Sigstore bundle v0.3 holding a DSSE envelope of an in-toto Statement v1 whose predicateType is
  `https://sigstore.dev/cosign/sign/v1`.

Notation signatures are only recognized (config.mediaType or artifactType).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

# OCI media types come from the registry's one list; this module adds only the signature formats'.
from dockyard.domain.manifests import OCI_EMPTY, OCI_IMAGE_CONFIG, OCI_INDEX, OCI_MANIFEST  # noqa: F401 (re-exported)

EMPTY_JSON = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIMPLE_SIGNING_TYPE = "cosign container image signature"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
COSIGN_ARTIFACT_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"  # cosign's old experimental OCI 1.1 mode

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MEDIA_TYPES = frozenset({
    BUNDLE_V03,
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
})
BUNDLE_CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
BUNDLE_PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
CREATED_ANNOTATION = "org.opencontainers.image.created"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"

NOTATION_SIGNATURE = "application/vnd.cncf.notary.signature"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class FormatError(ValueError):
    """A document is not what its media type claims."""


class TooLarge(FormatError):
    """Signature data over the size limit: refused unread, and said so (not "missing")."""


# Typed accessors: every document here comes from someone with push, so a field of the wrong JSON
# type must become a FormatError (that signature's error), never a TypeError further down.


def _obj(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise FormatError(f"{what} is not a JSON object")
    return value


def _opt_obj(value: Any, what: str) -> dict:
    return {} if value is None else _obj(value, what)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{what} is not a string")
    return value


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise FormatError(f"{what} is not a list")
    return value


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(_str(value, what), validate=True)
    except ValueError as exc:  # binascii.Error is a ValueError
        raise FormatError(f"{what} is not base64") from exc


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise FormatError(f"{what} is not JSON: {str(exc)[:200]}") from exc


def go_json(obj: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, `<`, `>`, `&` escaped."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise FormatError(f"not a sha256 digest: {str(digest)[:80]!r}")
    return digest


def signature_tag(image_digest: str, suffix: str = "sig") -> str:
    """`sha256:abc…` → `sha256-abc….sig`: cosign's tag for the signatures of a digest."""
    algo, _, hexpart = check_digest(image_digest).partition(":")
    return f"{algo}-{hexpart}.{suffix}"


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict:
    d = {"mediaType": media_type, "size": len(data), "digest": sha256_digest(data)}
    d.update({k: v for k, v in extra.items() if v})
    return d


# -- simple signing (tag layout) ----------------------------------------------------------------


def simple_signing_payload(docker_reference: str, image_digest: str,
                           annotations: dict[str, Any] | None = None) -> bytes:
    """The payload `cosign sign --new-bundle-format=false` signs (sigstore `payload.Cosign`)."""
    return go_json({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": check_digest(image_digest)},
            "type": SIMPLE_SIGNING_TYPE,
        },
        "optional": annotations or None,
    })


@dataclass(frozen=True)
class SimpleSigning:
    docker_reference: str
    image_digest: str
    optional: dict | None


def parse_simple_signing(payload: bytes) -> SimpleSigning:
    doc = _obj(_json(payload, "simple-signing payload"), "simple-signing payload")
    critical = _obj(doc.get("critical"), "simple-signing critical")
    kind = _str(critical.get("type"), "simple-signing critical.type")
    digest = _str(_obj(critical.get("image"), "simple-signing critical.image").get("docker-manifest-digest"),
                  "simple-signing docker-manifest-digest")
    identity = _opt_obj(critical.get("identity"), "simple-signing critical.identity")
    reference = identity.get("docker-reference", "")
    if not isinstance(reference, str):
        raise FormatError("simple-signing docker-reference is not a string")
    if kind != SIMPLE_SIGNING_TYPE:
        raise FormatError(f"simple-signing payload of unknown type {kind[:100]!r}")
    optional = doc.get("optional")
    return SimpleSigning(reference, digest, optional if isinstance(optional, dict) else None)


def legacy_config(layer_payloads: list[bytes]) -> bytes:
    """The image config go-containerregistry synthesizes for cosign's `.sig` image."""
    return go_json({
        "architecture": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layer_payloads],
        "os": "", "rootfs": {"type": "layers", "diff_ids": [sha256_digest(p) for p in layer_payloads]},
        "config": {},
    })


def legacy_layer(payload: bytes, signature: bytes) -> dict:
    return descriptor(SIMPLE_SIGNING, payload,
                      annotations={SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()})


def legacy_manifest(layers: list[dict], config: bytes) -> bytes:
    return go_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_IMAGE_CONFIG, config),
        "layers": layers,
    })


@dataclass(frozen=True)
class LegacyEntry:
    """One layer of a `.sig` manifest: payload digest and the signature over the payload."""
    payload_digest: str
    payload_size: int
    signature: bytes | None
    keyless: bool
    error: str | None = None


def parse_legacy_manifest(manifest: dict, max_layers: int | None = None) -> list[LegacyEntry]:
    """One entry per simple-signing layer; a malformed layer is an entry with an error, so it
    never hides the others. Past `max_layers` signature layers one entry says how many were
    skipped (a `.sig` manifest of thousands of layers must not cost a verification each)."""
    layers = manifest.get("layers")
    layers = [] if layers is None else _list(layers, "manifest layers")
    entries: list[LegacyEntry] = []
    seen = 0
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            entries.append(LegacyEntry("", 0, None, False, f"layers[{i}] is not a descriptor object"))
            continue
        if layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        seen += 1
        if max_layers is not None and seen > max_layers:
            continue
        entries.append(_legacy_entry(layer, i))
    if max_layers is not None and seen > max_layers:
        entries.append(LegacyEntry("", 0, None, False,
                                   f"signature manifest has {seen} signature layers; only the first {max_layers} "
                                   "were examined (signature_max_layers)"))
    return entries


def _legacy_entry(layer: dict, i: int) -> LegacyEntry:
    try:
        ann = _opt_obj(layer.get("annotations"), f"layers[{i}].annotations")
        keyless = CERTIFICATE_ANNOTATION in ann
        digest = check_digest(_str(layer.get("digest"), f"layers[{i}].digest"))
        size = layer.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FormatError(f"layers[{i}].size is not a non-negative integer")
        if SIGNATURE_ANNOTATION not in ann:
            return LegacyEntry(digest, size, None, keyless, "layer has no signature annotation")
        sig = _b64(ann[SIGNATURE_ANNOTATION], "signature annotation")
    except FormatError as exc:
        return LegacyEntry("", 0, None, False, str(exc))
    return LegacyEntry(digest, size, sig, keyless)


# -- DSSE, in-toto, Sigstore bundle (bundle layout) --------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what a DSSE signature covers."""
    pt = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(pt), pt, len(payload), payload)


def sign_statement(image_digest: str, annotations: dict[str, Any] | None = None) -> bytes:
    """The in-toto Statement v1 `cosign sign` (v3) signs for an image."""
    algo, _, hexpart = check_digest(image_digest).partition(":")
    subject: dict[str, Any] = {"digest": {algo: hexpart}}
    if annotations:
        subject["annotations"] = annotations
    return go_json({"_type": STATEMENT_V1, "subject": [subject],
                    "predicateType": COSIGN_SIGN_PREDICATE, "predicate": {}})


@dataclass(frozen=True)
class Statement:
    type: str
    predicate_type: str
    subject_digests: list[dict[str, str]]


def parse_statement(payload: bytes) -> Statement:
    doc = _obj(_json(payload, "in-toto statement"), "in-toto statement")
    kind = _str(doc.get("_type"), "statement _type")
    predicate_type = _str(doc.get("predicateType"), "statement predicateType")
    subjects = []
    for i, subject in enumerate(_list(doc.get("subject"), "statement subject")):
        digests = _opt_obj(_obj(subject, f"statement subject[{i}]").get("digest"), f"statement subject[{i}].digest")
        subjects.append({k: v for k, v in digests.items() if isinstance(v, str)})
    if kind not in (STATEMENT_V1, STATEMENT_V01):
        raise FormatError(f"unknown in-toto statement type {kind[:100]!r}")
    return Statement(kind, predicate_type, subjects)


def statement_names_digest(statement: Statement, image_digest: str) -> bool:
    algo, _, hexpart = image_digest.partition(":")
    return any(d.get(algo) == hexpart for d in statement.subject_digests)


def dsse_bundle(payload: bytes, signature: bytes, key_hint: str,
                payload_type: str = INTOTO_PAYLOAD_TYPE) -> bytes:
    """A Sigstore bundle v0.3 with a DSSE envelope and a public-key hint, no tlog entry: what
    `cosign sign --key … --tlog-upload=false` writes (protobuf JSON names)."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return go_json({
        "mediaType": BUNDLE_V03,
        "verificationMaterial": {"publicKey": {"hint": key_hint}},
        "dsseEnvelope": {"payload": b64(payload), "payloadType": payload_type,
                         "signatures": [{"sig": b64(signature)}]},
    })


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: list[bytes]
    key_hint: str | None
    keyless: bool


def parse_bundle(data: bytes) -> Envelope:
    doc = _obj(_json(data, "bundle"), "bundle")
    media_type = doc.get("mediaType")
    if not isinstance(media_type, str) or media_type not in BUNDLE_MEDIA_TYPES:
        raise FormatError(f"unknown bundle media type {str(media_type)[:100]!r}")
    env = doc.get("dsseEnvelope")
    if not isinstance(env, dict):
        if "messageSignature" in doc:
            raise FormatError("bundle holds a message signature, not a DSSE envelope")
        raise FormatError("bundle has no DSSE envelope")
    material = _opt_obj(doc.get("verificationMaterial"), "bundle verificationMaterial")
    payload = _b64(env.get("payload"), "DSSE payload")
    payload_type = _str(env.get("payloadType"), "DSSE payloadType")
    raw_sigs = env.get("signatures")
    sigs = [_b64(_obj(s, f"DSSE signatures[{i}]").get("sig"), f"DSSE signatures[{i}].sig")
            for i, s in enumerate([] if raw_sigs is None else _list(raw_sigs, "DSSE signatures"))]
    hint = _opt_obj(material.get("publicKey"), "bundle verificationMaterial.publicKey").get("hint")
    keyless = "certificate" in material or "x509CertificateChain" in material
    return Envelope(payload, payload_type, sigs, hint if isinstance(hint, str) else None, keyless)


def bundle_referrer_manifest(bundle: bytes | dict, subject: dict, created: datetime | None = None,
                             predicate_type: str = COSIGN_SIGN_PREDICATE) -> bytes:
    """The referrer manifest cosign's `WriteAttestationNewBundleFormat` pushes (by digest).
    `bundle` is the bundle's bytes or its layer descriptor."""
    layer = bundle if isinstance(bundle, dict) else descriptor(BUNDLE_V03, bundle)
    created = (created or datetime.now(timezone.utc)).astimezone(timezone.utc)
    # Field order as go-containerregistry's v1.Manifest/v1.Descriptor (annotation keys sorted).
    return go_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_EMPTY, "size": len(EMPTY_JSON), "digest": EMPTY_DIGEST,
                   "artifactType": BUNDLE_V03},
        "layers": [layer],
        "annotations": {BUNDLE_CONTENT_ANNOTATION: "dsse-envelope",
                        BUNDLE_PREDICATE_ANNOTATION: predicate_type,
                        CREATED_ANNOTATION: created.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "subject": {"mediaType": subject["mediaType"], "size": subject["size"], "digest": subject["digest"]},
        "artifactType": BUNDLE_V03,
    })


# -- classification -----------------------------------------------------------------------------


def _config_media_type(manifest: dict) -> str:
    config = manifest.get("config")
    media_type = config.get("mediaType") if isinstance(config, dict) else None
    return media_type if isinstance(media_type, str) else ""


def artifact_type(manifest: dict) -> str:
    """What the referrers API reports: artifactType, else config.mediaType ("" if neither is a string)."""
    declared = manifest.get("artifactType")
    return declared if isinstance(declared, str) and declared else _config_media_type(manifest)


def is_notation_signature(manifest_or_descriptor: dict) -> bool:
    return NOTATION_SIGNATURE in (manifest_or_descriptor.get("artifactType"), _config_media_type(manifest_or_descriptor))


def is_cosign_bundle(manifest_or_descriptor: dict) -> bool:
    return artifact_type(manifest_or_descriptor) in BUNDLE_MEDIA_TYPES


def is_cosign_legacy_referrer(manifest_or_descriptor: dict) -> bool:
    return artifact_type(manifest_or_descriptor) == COSIGN_ARTIFACT_SIG


def manifest_json(raw: bytes) -> dict:
    """The manifest as a JSON object, or FormatError (no registry-side validation: see domain.manifests)."""
    return _obj(_json(raw, "manifest"), "manifest")
