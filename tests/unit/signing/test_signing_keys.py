"""cosign key files: generation, encryption round trip, cosign's own encrypted keys."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dockyard.signing.cosign_keys import (
    KeyFileError, WrongPasswordError, decrypt_private_key, encrypt_private_key, fingerprint,
    generate_private_key, key_hint, load_public_key, public_key_pem, sign_message, verify_message,
)


@pytest.fixture(scope="module")
def key():
    return generate_private_key()


@pytest.fixture(scope="module")
def encrypted(key):
    return encrypt_private_key(key, "s3cret")


def _doc(pem: bytes) -> dict:
    body = b"".join(pem.splitlines()[1:-1])
    return json.loads(base64.b64decode(body))


def test_generated_key_is_p256(key):
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


def test_encrypted_file_format(encrypted):
    lines = encrypted.decode().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"
    assert lines[-1] == "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"
    assert all(len(line) == 64 for line in lines[1:-2]) and 0 < len(lines[-2]) <= 64
    doc = _doc(encrypted)
    assert list(doc) == ["kdf", "cipher", "ciphertext"]
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["params"] == {"N": 65536, "r": 8, "p": 1}
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert doc["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 24


def test_round_trip(key, encrypted):
    loaded = decrypt_private_key(encrypted, "s3cret")
    assert fingerprint(loaded.public_key()) == fingerprint(key.public_key())
    assert verify_message(key.public_key(), sign_message(loaded, b"hello"), b"hello")


def test_wrong_password_fails(encrypted):
    with pytest.raises(WrongPasswordError):
        decrypt_private_key(encrypted, "not-the-password")


def test_empty_password_round_trip(key):
    assert fingerprint(decrypt_private_key(encrypt_private_key(key, ""), b"").public_key()) == fingerprint(key.public_key())


def test_tampered_scrypt_parameters_are_refused(encrypted):
    doc = _doc(encrypted)
    doc["kdf"]["params"]["N"] = 1 << 24  # a memory bomb: go-securesystemslib refuses it too
    pem = b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n" + base64.b64encode(json.dumps(doc).encode()) + \
        b"\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    with pytest.raises(KeyFileError, match="scrypt parameters"):
        decrypt_private_key(pem, "s3cret")


def _foreign_key_file(der: bytes, password: bytes, pem_type: str, n: int) -> bytes:
    """A key file built independently of keys.py (straight from the documented format), with the
    parameters older cosign releases used; interop with real cosign keys is covered in e2e."""
    import hashlib

    import nacl.secret

    salt, nonce = b"s" * 32, b"n" * 24
    box_key = hashlib.scrypt(password, salt=salt, n=n, r=8, p=1, dklen=32, maxmem=128 * 1024 * 1024)
    ciphertext = nacl.secret.SecretBox(box_key).encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": 8, "p": 1}, "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    body = base64.encodebytes(json.dumps(doc).encode())
    return f"-----BEGIN {pem_type}-----\n".encode() + body + f"-----END {pem_type}-----\n".encode()


def _pkcs8(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def test_reads_cosigns_legacy_pem_type(key):
    """`ENCRYPTED COSIGN PRIVATE KEY` with scrypt N=32768, as older cosign releases wrote."""
    pem = _foreign_key_file(_pkcs8(key), b"hello", "ENCRYPTED COSIGN PRIVATE KEY", 32768)
    loaded = decrypt_private_key(pem, "hello")
    assert verify_message(loaded.public_key(), sign_message(loaded, b"payload"), b"payload")
    assert fingerprint(loaded.public_key()) == fingerprint(key.public_key())
    with pytest.raises(WrongPasswordError):
        decrypt_private_key(pem, "hell0")


def test_reads_the_sigstore_pem_type_with_other_scrypt_cost(key):
    pem = _foreign_key_file(_pkcs8(key), b"hello", "ENCRYPTED SIGSTORE PRIVATE KEY", 32768)
    assert fingerprint(decrypt_private_key(pem, "hello").public_key()) == fingerprint(key.public_key())


def test_refuses_a_sec1_key_inside_as_cosign_does(key):
    from cryptography.hazmat.primitives import serialization

    sec1 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    pem = _foreign_key_file(sec1, b"hello", "ENCRYPTED COSIGN PRIVATE KEY", 32768)
    with pytest.raises(KeyFileError, match="PKCS#8"):
        decrypt_private_key(pem, "hello")


def test_refuses_other_pem_types(key):
    with pytest.raises(KeyFileError, match="PEM type"):
        decrypt_private_key(public_key_pem(key), "x")


def test_public_key_pem_round_trip_and_names(key):
    pem = public_key_pem(key)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    loaded = load_public_key(pem)
    assert fingerprint(loaded) == fingerprint(key.public_key())
    assert fingerprint(loaded).startswith("sha256:") and len(fingerprint(loaded)) == 71
    assert len(base64.b64decode(key_hint(loaded))) == 32
    with pytest.raises(KeyFileError):
        load_public_key(b"not a key")


def test_signature_is_der_ecdsa_over_sha256(key):
    from cryptography.hazmat.primitives import hashes

    sig = sign_message(key, b"message")
    key.public_key().verify(sig, b"message", ec.ECDSA(hashes.SHA256()))  # raises if not
    assert not verify_message(key.public_key(), sig, b"messagE")
    assert not verify_message(generate_private_key().public_key(), sig, b"message")
