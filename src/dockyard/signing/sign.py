"""Sign an image in a registry, writing what cosign writes.

- `Layout.BUNDLE` (default, as cosign v3): an in-toto Statement v1 (predicateType
  `https://sigstore.dev/cosign/sign/v1`) in a DSSE envelope inside a Sigstore bundle v0.3, pushed
  by digest as a referrer of the image.
- `Layout.TAG` (`cosign sign --new-bundle-format=false`): a simple-signing payload added as a layer
  to the `sha256-<hex>.sig` manifest (read-modify-write, as cosign does).
No transparency log: key-based signatures verify offline with the public key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dockyard.signing import formats
from dockyard.signing.cosign_keys import PrivateKey, key_hint, sign_message
from dockyard.signing.registry import ImageRef, RegistryClient, RegistryError
from dockyard.signing.verify import Layout


@dataclass(frozen=True)
class SignResult:
    image_digest: str
    layout: Layout
    signature_ref: str  # the tag (tag layout) or manifest digest (bundle layout) written


def resolve(client: RegistryClient, ref: ImageRef) -> dict:
    """The image's descriptor (mediaType, size, digest); a digest reference must exist too."""
    # Asked with push scope: the signer will push next, and a push-scoped read passes pull gates.
    fetched = client.fetch_manifest(ref.repository, ref.reference, push=True)
    if fetched is None:
        raise RegistryError(f"image {ref} not found")
    return {"mediaType": fetched.media_type, "size": len(fetched.data), "digest": fetched.digest}


def sign_image(client: RegistryClient, ref: ImageRef, key: PrivateKey, *, layout: Layout = Layout.BUNDLE,
               annotations: dict[str, Any] | None = None) -> SignResult:
    subject = resolve(client, ref)
    if layout is Layout.BUNDLE:
        return _sign_bundle(client, ref, subject, key, annotations)
    if layout is Layout.TAG:
        return _sign_tag(client, ref, subject["digest"], key, annotations)
    raise ValueError(f"cannot sign in layout {layout}")


def _sign_bundle(client: RegistryClient, ref: ImageRef, subject: dict, key: PrivateKey,
                 annotations: dict[str, Any] | None) -> SignResult:
    repo = ref.repository
    statement = formats.sign_statement(subject["digest"], annotations)
    signature = sign_message(key, formats.pae(formats.INTOTO_PAYLOAD_TYPE, statement))
    bundle = formats.dsse_bundle(statement, signature, key_hint(key.public_key()))
    client.upload_blob(repo, formats.EMPTY_JSON)
    client.upload_blob(repo, bundle)
    manifest = formats.bundle_referrer_manifest(bundle, subject)
    digest = client.put_manifest(repo, formats.sha256_digest(manifest), manifest, formats.OCI_MANIFEST)
    return SignResult(subject["digest"], Layout.BUNDLE, digest)


def _sign_tag(client: RegistryClient, ref: ImageRef, image_digest: str, key: PrivateKey,
              annotations: dict[str, Any] | None) -> SignResult:
    repo = ref.repository
    payload = formats.simple_signing_payload(ref.repository_name, image_digest, annotations)
    layer = formats.legacy_layer(payload, sign_message(key, payload))
    tag = formats.signature_tag(image_digest)
    layers, payloads = [], []
    existing = client.manifest(repo, tag)
    if existing is not None:  # keep the signatures already there (cosign appends)
        for old in formats.manifest_json(existing).get("layers") or []:
            if old == layer:
                continue
            data = client.blob(repo, old["digest"])
            if data is None:
                raise RegistryError(f"{repo}:{tag} references missing blob {old['digest']}")
            layers.append(old)
            payloads.append(data)
    layers.append(layer)
    payloads.append(payload)
    client.upload_blob(repo, payload)
    config = formats.legacy_config(payloads)
    client.upload_blob(repo, config)
    client.put_manifest(repo, tag, formats.legacy_manifest(layers, config), formats.OCI_MANIFEST)
    return SignResult(image_digest, Layout.TAG, tag)
