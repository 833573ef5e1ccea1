"""cosign-compatible signing: key files (keys), wire formats (formats), a registry client
(registry), finding and verifying signatures (verify) and signing (sign)."""

from dockyard.signing.cosign_keys import (
    KeyFileError, WrongPasswordError, decrypt_private_key, encrypt_private_key, fingerprint,
    generate_private_key, load_public_key, public_key_pem,
)
from dockyard.signing.verify import (
    Layout, Signature, SignatureSource, Verdict, check_signatures, find_signatures, verify,
)

__all__ = [
    "KeyFileError", "WrongPasswordError", "decrypt_private_key", "encrypt_private_key", "fingerprint",
    "generate_private_key", "load_public_key", "public_key_pem",
    "Layout", "Signature", "SignatureSource", "Verdict", "check_signatures", "find_signatures", "verify",
]
