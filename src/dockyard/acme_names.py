"""The rules for the ACME settings' values (settings.py calls them; kept here to keep settings.py small)."""

from __future__ import annotations

import ipaddress


def acme_domain(value: str | None) -> str | None:
    """One spelling per name (DNS is case-insensitive; a trailing dot is the root), so one stored certificate;
    and a clear refusal of what HTTP-01 cannot prove, at start rather than as a CA error later."""
    if value is None:
        return None
    name = value.strip().lower()
    name = name[:-1] if name.endswith(".") else name
    if name.startswith("*"):
        raise ValueError(f"acme_domain {value!r}: a wildcard needs the DNS-01 challenge; Dockyard answers HTTP-01 only")
    if _is_ip_literal(name):
        raise ValueError(f"acme_domain {value!r} is an IP address (or looks like one): it must be a DNS name")
    return name


def acme_directory_url(value: str) -> str:
    """RFC 8555 6.1: HTTPS only. Over plain HTTP anyone on the path could hand us a chain from their own CA for
    our key and name (it passes every check but trust), and every node would install it."""
    if not value.startswith("https://") or len(value) <= len("https://"):
        raise ValueError(f"acme_directory_url {value!r} must be an https:// URL (ACME runs over HTTPS only)")
    return value


def _is_ip_literal(name: str) -> bool:
    """10.0.0.5, ::1, [::1], and names with a numeric top label (1.2.3.999), which no DNS name has."""
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
        return True
    except ValueError:
        return name.rpartition(".")[2].isdigit()
