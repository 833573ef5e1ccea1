"""Client-side helpers that must start fast (the credential helper runs on every docker pull)."""
