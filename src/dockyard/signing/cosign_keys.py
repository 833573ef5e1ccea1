"""cosign key files and the raw signature primitives.

`cosign.key` is a PEM block `ENCRYPTED SIGSTORE PRIVATE KEY` (cosign's current writer) or
`ENCRYPTED COSIGN PRIVATE KEY` (older cosign; read only). Its body is the JSON document of
go-securesystemslib's `encrypted` package: scrypt derives a 32-byte key from the password,
nacl/secretbox (XSalsa20-Poly1305) seals the PKCS#8 DER private key. `cosign.pub` is a plain
PKIX `PUBLIC KEY` PEM. See /work/shared/reference/signing.md (c).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

PRIVATE_KEY_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
LEGACY_PRIVATE_KEY_PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"
PUBLIC_KEY_PEM_TYPE = "PUBLIC KEY"

# go-securesystemslib accepts exactly these scrypt settings (legacy, standard, OWASP) and refuses
# others, so a tampered file cannot make us burn memory; it writes "standard".
_ACCEPTED_SCRYPT = {(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)}
_WRITE_SCRYPT = (65536, 8, 1)
_SALT_SIZE = 32
_NONCE_SIZE = 24
_BOX_KEY_SIZE = 32

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey]


class KeyFileError(ValueError):
    """A key file cannot be read (wrong format, wrong password, unsupported key)."""


class WrongPasswordError(KeyFileError):
    pass


# -- PEM helpers (Go's encoding/pem: 64-column base64 lines) ------------------------------------


def _pem_encode(pem_type: str, der: bytes) -> bytes:
    body = base64.b64encode(der).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return ("-----BEGIN %s-----\n%s\n-----END %s-----\n" % (pem_type, "\n".join(lines), pem_type)).encode()


def _pem_decode(data: bytes) -> tuple[str, bytes]:
    text = data.decode("ascii", "replace")
    start = text.find("-----BEGIN ")
    if start < 0:
        raise KeyFileError("not a PEM file")
    head_end = text.find("-----", start + 11)
    pem_type = text[start + 11:head_end]
    end_marker = f"-----END {pem_type}-----"
    end = text.find(end_marker, head_end)
    if head_end < 0 or end < 0:
        raise KeyFileError("truncated PEM block")
    body = "".join(line.strip() for line in text[head_end + 5:end].splitlines() if ":" not in line)
    try:
        return pem_type, base64.b64decode(body, validate=True)
    except ValueError as exc:
        raise KeyFileError(f"bad base64 in PEM block {pem_type}") from exc


# -- scrypt + secretbox -------------------------------------------------------------------------


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    # OpenSSL needs a little more than 128*r*N bytes; hashlib's default cap (32 MiB) is too low.
    maxmem = 128 * r * n * (p + 1) + 16 * 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=_BOX_KEY_SIZE, maxmem=maxmem)


def encrypt_private_key(private_key: PrivateKey, password: bytes | str) -> bytes:
    """`cosign.key` bytes for `private_key`, sealed with `password` (may be empty, as in cosign)."""
    from nacl.secret import SecretBox

    if isinstance(password, str):
        password = password.encode()
    der = private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    n, r, p = _WRITE_SCRYPT
    salt, nonce = os.urandom(_SALT_SIZE), os.urandom(_NONCE_SIZE)
    box = SecretBox(_scrypt(password, salt, n, r, p))
    ciphertext = box.encrypt(der, nonce).ciphertext
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    # Field order as Go's encoding/json writes go-securesystemslib's struct.
    doc = {"kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": b64(salt)},
           "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)},
           "ciphertext": b64(ciphertext)}
    return _pem_encode(PRIVATE_KEY_PEM_TYPE, json.dumps(doc, separators=(",", ":")).encode())


def decrypt_private_key(data: bytes, password: bytes | str) -> PrivateKey:
    """Reads `cosign.key` (either PEM type). Raises WrongPasswordError or KeyFileError."""
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    if isinstance(password, str):
        password = password.encode()
    pem_type, body = _pem_decode(data)
    if pem_type not in (PRIVATE_KEY_PEM_TYPE, LEGACY_PRIVATE_KEY_PEM_TYPE):
        raise KeyFileError(f"unsupported private key PEM type {pem_type!r} "
                           f"(expected {PRIVATE_KEY_PEM_TYPE!r} or {LEGACY_PRIVATE_KEY_PEM_TYPE!r})")
    try:
        doc = json.loads(body)
        kdf, cipher = doc["kdf"], doc["cipher"]
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        salt = base64.b64decode(kdf["salt"])
        nonce = base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(doc["ciphertext"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"malformed encrypted key document: {exc}") from exc
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise KeyFileError(f"unsupported key encryption {kdf.get('name')!r}/{cipher.get('name')!r}")
    if (n, r, p) not in _ACCEPTED_SCRYPT:
        raise KeyFileError(f"unsupported scrypt parameters N={n} r={r} p={p}")
    if len(nonce) != _NONCE_SIZE:
        raise KeyFileError("incorrect nonce size")
    try:
        der = SecretBox(_scrypt(password, salt, n, r, p)).decrypt(ciphertext, nonce)
    except CryptoError as exc:
        raise WrongPasswordError("decryption failed: wrong password?") from exc
    if not _is_pkcs8(der):  # as cosign: a SEC1 or PKCS#1 key inside is refused
        raise KeyFileError("the decrypted key is not a PKCS#8 private key")
    try:
        key = serialization.load_der_private_key(der, password=None)
    except ValueError as exc:
        raise KeyFileError("the decrypted key is not a PKCS#8 private key") from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise KeyFileError(f"unsupported private key type {type(key).__name__}")
    return key


def _is_pkcs8(der: bytes) -> bool:
    """PrivateKeyInfo ::= SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }; SEC1
    and PKCS#1 keys have an OCTET STRING or INTEGER where PKCS#8 has the algorithm SEQUENCE."""
    def skip_header(pos: int) -> int:
        length = der[pos + 1]
        return pos + 2 + (length & 0x7F if length & 0x80 else 0)

    try:
        if der[0] != 0x30:
            return False
        pos = skip_header(0)  # into the outer SEQUENCE
        if der[pos] != 0x02:
            return False
        pos = pos + 2 + der[pos + 1]  # past the short version INTEGER
        return der[pos] == 0x30
    except IndexError:
        return False


# -- key pairs and public keys ------------------------------------------------------------------


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """cosign's default: ECDSA P-256."""
    return ec.generate_private_key(ec.SECP256R1())


def public_key_pem(key: PrivateKey | PublicKey) -> bytes:
    public = key.public_key() if hasattr(key, "private_bytes") else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _pem_encode(PUBLIC_KEY_PEM_TYPE, der)


def load_public_key(data: bytes) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise KeyFileError(f"unsupported public key type {type(key).__name__}")
    return key


def _spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: PublicKey) -> str:
    """`sha256:<hex>` of the key's SubjectPublicKeyInfo DER: how Dockyard names a trusted key."""
    return "sha256:" + hashlib.sha256(_spki_der(key)).hexdigest()


def key_hint(key: PublicKey) -> str:
    """The `verificationMaterial.publicKey.hint` cosign writes: base64(sha256(SPKI DER))."""
    return base64.b64encode(hashlib.sha256(_spki_der(key)).digest()).decode()


# -- signatures ---------------------------------------------------------------------------------
# As sigstore's default LoadSignerVerifier: ECDSA with the curve's hash (P-256/SHA-256,
# P-384/SHA-384, P-521/SHA-512), RSA PKCS#1 v1.5 with SHA-256, Ed25519 over the message itself.


def _ec_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    return {"secp384r1": hashes.SHA384(), "secp521r1": hashes.SHA512()}.get(curve.name, hashes.SHA256())


def sign_message(key: PrivateKey, message: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(_ec_hash(key.curve)))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(message)


def verify_message(key: PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(_ec_hash(key.curve)))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


__all__ = [
    "KeyFileError", "WrongPasswordError", "PrivateKey", "PublicKey",
    "encrypt_private_key", "decrypt_private_key", "generate_private_key", "public_key_pem",
    "load_public_key", "fingerprint", "key_hint", "sign_message", "verify_message",
]
