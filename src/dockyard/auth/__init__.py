"""Identity: passwords, principals, token signing and verification, credential checks."""
