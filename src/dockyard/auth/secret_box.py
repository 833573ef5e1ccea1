"""Encryption at rest for token-signing private keys: AES-256-GCM under a key-encryption key (KEK).

The KEK never enters the database, so a stolen database file (or backup, or replica) holds no
usable private key. It comes from the `secret_key` setting, or from a file (`secret_key_file`,
default data_dir/secrets/kek) that is generated 0600 on first start. Every node that shares a
database needs the same KEK.

A sealed value is `dky1:<kek id>:<base64url(nonce | ciphertext | tag)>`; the kek id (a hash of
the KEK, not the KEK) says which KEK opens it, and the key's `kid` is bound in as associated data,
so a ciphertext copied onto another key's row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "dky1"
PENDING_SUFFIX = ".new"  # a KEK that `dockyard admin rotate-kek` is installing
_INFO = b"dockyard signing-key encryption v1"


class KeyEncryptionError(Exception):
    """The KEK is missing, malformed or not the one that sealed a stored key."""


@dataclass(frozen=True)
class Kek:
    id: str
    aead: AESGCM = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> Kek:
        """Any secret of 32+ bytes; HKDF turns passphrases and base64 text alike into an AES-256 key."""
        if len(secret) < 32:
            # Checked here, not by pydantic, whose errors would echo the secret.
            raise KeyEncryptionError(
                "the key-encryption key (secret_key) must be at least 32 bytes, e.g. `openssl rand -base64 32`"
            )
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
        return cls(hashlib.sha256(b"dockyard kek id\0" + key).hexdigest()[:16], AESGCM(key))


class KeyRing:
    """The KEK that seals new values, plus any others that may still open old ones (a rotation
    interrupted between re-encrypting and installing the new KEK file)."""

    def __init__(self, primary: Kek, others: list[Kek] | None = None, source: str = ""):
        self.primary = primary
        self.source = source
        self._by_id = {k.id: k for k in [*(others or []), primary]}

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(12)
        blob = nonce + self.primary.aead.encrypt(nonce, plaintext, context.encode())
        return f"{PREFIX}:{self.primary.id}:{base64.urlsafe_b64encode(blob).decode()}"

    def open(self, sealed: str, context: str) -> bytes:
        prefix, _, rest = sealed.partition(":")
        kek_id, _, body = rest.partition(":")
        if prefix != PREFIX or not body:
            raise KeyEncryptionError("stored key is not in the dky1 format")
        kek = self._by_id.get(kek_id)
        if kek is None:
            raise KeyEncryptionError(
                f"stored signing key {context} was sealed with key-encryption key {kek_id}, but this node has "
                f"{self.primary.id} ({self.source}); every node must use the same secret_key or secret_key_file"
            )
        blob = base64.urlsafe_b64decode(body.encode())
        try:
            return kek.aead.decrypt(blob[:12], blob[12:], context.encode())
        except InvalidTag as exc:
            raise KeyEncryptionError(f"stored signing key {context} does not decrypt (tampered or moved)") from exc

    def sealed_kek_id(self, sealed: str) -> str | None:
        """The id of the KEK a stored value was sealed with, when this ring does not hold it (else None)."""
        kek_id = sealed.partition(":")[2].partition(":")[0]
        return None if kek_id in self._by_id else kek_id

def generate_secret() -> bytes:
    return base64.b64encode(secrets.token_bytes(32))


def read_secret_file(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError as exc:
        raise KeyEncryptionError(f"key-encryption key file {path} does not exist") from exc
    if len(secret) < 32:
        raise KeyEncryptionError(f"key-encryption key file {path} holds fewer than 32 bytes")
    return secret


def write_secret_file(path: Path, secret: bytes, *, replace: bool = False) -> None:
    """Write 0600 (directory 0700), durably. Without `replace`, an existing file wins: several
    processes starting at once agree on the first KEK written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, and fails if another process got there first
            except FileExistsError:
                pass
    finally:
        if tmp.exists():
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_keyring(secret_key: str | None, secret_key_file: Path, *, create: bool = True) -> KeyRing:
    """The KEK from `secret_key`, else from `secret_key_file` (generated when missing and `create`).
    A pending `<file>.new` left by an interrupted rotation is added for decryption."""
    pending = secret_key_file.with_name(secret_key_file.name + PENDING_SUFFIX)
    others = [Kek.from_secret(read_secret_file(pending))] if pending.exists() else []
    if secret_key is not None:
        return KeyRing(Kek.from_secret(secret_key.strip().encode()), others, source="setting secret_key")
    if not secret_key_file.exists():
        if not create:
            raise KeyEncryptionError(f"key-encryption key file {secret_key_file} does not exist")
        write_secret_file(secret_key_file, generate_secret())
    if secret_key_file.stat().st_mode & 0o077:
        os.chmod(secret_key_file, 0o600)
    return KeyRing(Kek.from_secret(read_secret_file(secret_key_file)), others, source=f"file {secret_key_file}")
