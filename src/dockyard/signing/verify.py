"""Find and verify the signatures of an image.

`find_signatures` collects what is attached to an image digest, in every layout
(cosign `.sig` tag, cosign bundle referrer, Notation referrer), from any `SignatureSource`: the
HTTP client in dockyard.signing.registry, or the registry's own services in-process.
`check_signatures` is pure: it decides which trusted keys verified which signatures, checking the
cryptography AND that the signed payload names the image digest. `verify` does both.

Key-based verification only: transparency-log entries and certificates in a signature are not
used (like `cosign verify --key … --insecure-ignore-tlog`); a keyless signature is recognized
(counts towards `signed`) but verifies against no key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from dockyard.signing import formats
from dockyard.signing.formats import FormatError
from dockyard.signing.cosign_keys import PublicKey, fingerprint, verify_message


class Layout(str, enum.Enum):
    TAG = "tag"          # cosign sha256-<hex>.sig
    BUNDLE = "bundle"    # cosign Sigstore bundle referrer (cosign v3 default)
    NOTATION = "notation"
    LEGACY_REFERRER = "legacy-referrer"  # cosign's old experimental OCI 1.1 mode (simple signing + subject)

    def __str__(self) -> str:
        return self.value


class SignatureSource(Protocol):
    """What verification needs from a registry, read-only. Each returns None (or []) when absent."""

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict]: ...

    def manifest(self, repo: str, ref: str) -> bytes | None: ...

    def blob(self, repo: str, digest: str) -> bytes | None: ...


@dataclass
class Signature:
    """One signature found for an image. `signatures` are the raw signature bytes over `signed`
    (the payload for the tag layout, the DSSE PAE for bundles); `payload` is what they claim."""
    layout: Layout
    manifest_digest: str | None
    payload: bytes = b""
    signed: bytes = b""
    signatures: list[bytes] = field(default_factory=list)
    payload_type: str = ""
    keyless: bool = False
    error: str | None = None  # why this signature cannot verify at all (malformed, missing blob…)

    @property
    def where(self) -> str:
        return f"{self.layout} signature {self.manifest_digest or ''}".rstrip()


@dataclass
class Verdict:
    signed: bool                      # some signature (of any layout, verified or not) is attached
    verified_by: list[str]            # fingerprints (sha256:<hex> of SPKI DER) of trusted keys that verified
    layouts: set[Layout]              # layouts of the signatures found
    reasons: list[str]                # why signatures did not verify (or why none was found)
    verified_layouts: set[Layout] = field(default_factory=set)

    @property
    def verified(self) -> bool:
        return bool(self.verified_by)


@dataclass(frozen=True)
class Limits:
    """How much of what a pusher attached one evaluation examines (settings signature_max_*)."""
    max_layers: int = 64       # simple-signing layers per `.sig` manifest
    max_referrers: int = 64    # signature referrers per image


class _ReadOnce:
    """The source, read at most once per manifest and blob within one evaluation: a `.sig`
    manifest whose thousands of layers name one payload costs one read, not thousands."""

    def __init__(self, source: SignatureSource):
        self.source = source
        self._manifests: dict[tuple[str, str], bytes | None] = {}
        self._blobs: dict[tuple[str, str], bytes | None | FormatError] = {}

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict]:
        return self.source.referrers(repo, digest, artifact_type)

    def manifest(self, repo: str, ref: str) -> bytes | None:
        key = (repo, ref)
        if key not in self._manifests:
            self._manifests[key] = self.source.manifest(repo, ref)
        return self._manifests[key]

    def blob(self, repo: str, digest: str) -> bytes | None:
        key = (repo, digest)
        if key not in self._blobs:
            try:
                self._blobs[key] = self.source.blob(repo, digest)
            except FormatError as exc:  # e.g. over the size limit: the same answer for every layer naming it
                self._blobs[key] = exc
        value = self._blobs[key]
        if isinstance(value, FormatError):
            raise value
        return value


# What malformed signature data can raise while it is parsed: it becomes that signature's error.
# The typed parsers in formats raise FormatError; the rest is a last line of defense.
_PARSE_ERRORS = (FormatError, ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError)


def find_signatures(source: SignatureSource, repo: str, image_digest: str, limits: Limits | None = None) -> list[Signature]:
    """Every signature attached to `image_digest`; one that cannot be read or parsed is a Signature
    with an error, so it can neither hide the others nor abort the evaluation."""
    formats.check_digest(image_digest)
    limits = limits or Limits()
    source = _ReadOnce(source)
    found: list[Signature] = []
    tag = formats.signature_tag(image_digest)
    raw = source.manifest(repo, tag)
    if raw is not None:
        found.extend(_legacy_signatures(source, repo, raw, limits=limits))
    candidates = [d for d in source.referrers(repo, image_digest) if isinstance(d, dict) and _is_signature(d)]
    if len(candidates) > limits.max_referrers:
        found.append(Signature(Layout.BUNDLE, None, error=(
            f"more than {limits.max_referrers} signature referrers; only the first {limits.max_referrers} "
            "were examined (signature_max_referrers)")))
    for desc in candidates[:limits.max_referrers]:
        digest = desc.get("digest")
        digest = digest if isinstance(digest, str) else ""
        if formats.is_notation_signature(desc):
            found.append(Signature(Layout.NOTATION, digest, error="Notation signatures are recognized, not verified"))
        elif formats.is_cosign_bundle(desc):
            found.append(_bundle_signature(source, repo, digest))
        else:
            try:
                raw = source.manifest(repo, digest)
            except _PARSE_ERRORS as exc:
                found.append(Signature(Layout.LEGACY_REFERRER, digest, error=_message(exc)))
                continue
            if raw is not None:
                found.extend(_legacy_signatures(source, repo, raw, Layout.LEGACY_REFERRER, limits=limits))
    return found


def _is_signature(desc: dict) -> bool:
    return (formats.is_notation_signature(desc) or formats.is_cosign_bundle(desc)
            or formats.is_cosign_legacy_referrer(desc))


def _message(exc: BaseException) -> str:
    return str(exc)[:500] if isinstance(exc, FormatError) else f"malformed signature data ({type(exc).__name__})"


def _legacy_signatures(source: SignatureSource, repo: str, raw: bytes,
                       layout: Layout = Layout.TAG, *, limits: Limits) -> list[Signature]:
    digest = formats.sha256_digest(raw)
    try:
        entries = formats.parse_legacy_manifest(formats.manifest_json(raw), limits.max_layers)
    except _PARSE_ERRORS as exc:
        return [Signature(layout, digest, error=_message(exc))]
    if not entries:
        return [Signature(layout, digest, error="signature manifest has no simple-signing layer")]
    out = []
    for entry in entries:
        sig = Signature(layout, digest, signatures=[entry.signature] if entry.signature else [],
                        keyless=entry.keyless, error=entry.error, payload_type=formats.SIMPLE_SIGNING)
        if entry.payload_digest:
            try:
                payload = source.blob(repo, entry.payload_digest)
            except _PARSE_ERRORS as exc:
                sig.error = sig.error or _message(exc)
            else:
                if payload is None:
                    sig.error = sig.error or f"payload blob {entry.payload_digest} is missing"
                else:
                    sig.payload = sig.signed = payload
        out.append(sig)
    return out


def _bundle_signature(source: SignatureSource, repo: str, digest: str) -> Signature:
    sig = Signature(Layout.BUNDLE, digest, payload_type=formats.INTOTO_PAYLOAD_TYPE)
    try:
        raw = source.manifest(repo, digest) if digest else None
        if raw is None:
            sig.error = "referrer manifest is missing"
            return sig
        layers = formats.manifest_json(raw).get("layers")
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict) \
                or layers[0].get("mediaType") not in formats.BUNDLE_MEDIA_TYPES:
            raise FormatError("expected exactly one Sigstore bundle layer")
        layer_digest = layers[0].get("digest")
        if not isinstance(layer_digest, str):
            raise FormatError("bundle layer digest is not a string")
        formats.check_digest(layer_digest)
        bundle = source.blob(repo, layer_digest)
        if bundle is None:
            raise FormatError(f"bundle blob {layer_digest} is missing")
        env = formats.parse_bundle(bundle)
    except _PARSE_ERRORS as exc:
        sig.error = _message(exc)
        return sig
    sig.payload, sig.payload_type, sig.signatures, sig.keyless = env.payload, env.payload_type, env.signatures, env.keyless
    sig.signed = formats.pae(env.payload_type, env.payload)
    return sig


def _shown(claimed: str) -> str:
    """A claimed digest as it may appear in a refusal: pusher-controlled, so quoted unless well-formed."""
    try:
        return formats.check_digest(claimed)
    except FormatError:
        return repr(claimed[:80])


def _claims_digest(sig: Signature, image_digest: str) -> str | None:
    """None if the verified payload is a cosign signature of `image_digest`, else the reason."""
    try:
        if sig.payload_type == formats.SIMPLE_SIGNING:
            claimed = formats.parse_simple_signing(sig.payload).image_digest
            return None if claimed == image_digest else f"payload signs {_shown(claimed)}, not {image_digest}"
        if sig.payload_type != formats.INTOTO_PAYLOAD_TYPE:
            return f"unsupported DSSE payload type {sig.payload_type[:100]!r}"
        statement = formats.parse_statement(sig.payload)
    except _PARSE_ERRORS as exc:
        return _message(exc)
    if statement.predicate_type != formats.COSIGN_SIGN_PREDICATE:
        return f"an attestation ({statement.predicate_type[:200]!r}), not a signature"
    if not formats.statement_names_digest(statement, image_digest):
        return f"statement subject does not name {image_digest}"
    return None


def check_signatures(found: Iterable[Signature], image_digest: str,
                     public_keys: Iterable[PublicKey]) -> Verdict:
    found, keys = list(found), list(public_keys)
    verdict = Verdict(signed=bool(found), verified_by=[], layouts={s.layout for s in found}, reasons=[])
    if not found:
        verdict.reasons.append(f"no signatures found for {image_digest}")
    if not keys:
        verdict.reasons.append("no trusted public keys")
    for sig in found:
        if sig.error:
            verdict.reasons.append(f"{sig.where}: {sig.error}")
            continue
        matched = [k for k in keys if any(verify_message(k, s, sig.signed) for s in sig.signatures)]
        if not matched:
            hint = " (keyless: certificate-based signatures are not trusted by key)" if sig.keyless else ""
            verdict.reasons.append(f"{sig.where}: not signed by any trusted key{hint}")
            continue
        problem = _claims_digest(sig, image_digest)
        if problem:
            verdict.reasons.append(f"{sig.where}: {problem}")
            continue
        verdict.verified_layouts.add(sig.layout)
        for key in matched:
            fp = fingerprint(key)
            if fp not in verdict.verified_by:
                verdict.verified_by.append(fp)
    return verdict


def verify(source: SignatureSource, repo: str, image_digest: str, public_keys: Iterable[PublicKey],
           limits: Limits | None = None) -> Verdict:
    return check_signatures(find_signatures(source, repo, image_digest, limits), image_digest, public_keys)
