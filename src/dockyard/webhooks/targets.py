"""Where a webhook may send: URL rules and the SSRF guard.

A hook's URL is resolved and every address it resolves to is classified. Loopback, private,
link-local, shared (CGNAT), multicast, reserved and unspecified addresses (IPv4, IPv6, and IPv4
carried inside IPv6: `::ffff:127.0.0.1`, NAT64, 6to4, Teredo) are "internal". Only a system
administrator may target one, and only when `webhook_allow_private_targets` is on. The check runs
when a hook is saved AND before every attempt, and the attempt connects to the address that was
checked (the Host header and TLS SNI keep the name), so a DNS answer that changes in between
(rebinding) cannot redirect a delivery inside. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from dockyard.errors import InvalidRequest, WebhookTargetForbidden

MAX_URL_LENGTH = 2000
Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (A and AAAA), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        if address not in seen:
            seen.append(address)
    return seen


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def is_internal(address: str | IPAddress) -> bool:
    """True for any address that is not globally routable (or that carries one that is not)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return is_internal(ip.ipv4_mapped)  # ::ffff:a.b.c.d reaches a.b.c.d, and only it
    inner = embedded_ipv4(ip)
    if inner is not None and is_internal(inner):
        return True
    return (
        not ip.is_global or ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
        or ip.is_reserved or ip.is_unspecified
    )


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # as written (IPv6 without brackets)
    port: int
    addresses: tuple[str, ...]  # what the host resolved to, checked
    internal: bool  # at least one address is internal


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL without credentials; INVALID_REQUEST otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"url must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"url is not a valid URL: {exc}", detail={"url": url[:200]}) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("url must start with http:// or https:// and name a host", detail={"url": url[:200]})
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("url must not carry credentials; receivers verify the signature instead",
                             detail={"url": "(hidden)"})
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise InvalidRequest("url must not contain spaces or control characters")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def resolve(url: str, resolver: Resolver = system_resolver) -> Target:
    scheme, host, port = parse_url(url)
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise InvalidRequest(f"webhook host {host} does not resolve: {exc}", detail={"host": host[:255]}) from exc
    if not addresses:
        raise InvalidRequest(f"webhook host {host} does not resolve", detail={"host": host[:255]})
    return Target(url, scheme, host, port, tuple(addresses), any(is_internal(a) for a in addresses))


def check(target: Target, *, internal_allowed: bool) -> None:
    """Refuse an internal target unless the caller (or the hook's saved permission) allows it."""
    if target.internal and not internal_allowed:
        raise WebhookTargetForbidden(
            f"webhook host {target.host} resolves to a loopback, private or link-local address; only system "
            "administrators may target those, and only with webhook_allow_private_targets on",
            detail={"host": target.host[:255]},
        )


def pinned_request(target: Target) -> tuple[str, dict[str, str], dict]:
    """The URL to connect to (the checked address in place of the name), the Host header and the
    request extensions (TLS SNI and certificate name) that keep the name for the server."""
    address = target.addresses[0]
    ip = ipaddress.ip_address(address)
    netloc_host = f"[{ip}]" if ip.version == 6 else str(ip)
    parts = urlsplit(target.url)
    default = (target.scheme == "https" and target.port == 443) or (target.scheme == "http" and target.port == 80)
    host_header = (f"[{target.host}]" if ":" in target.host else target.host) + ("" if default else f":{target.port}")
    url = parts._replace(netloc=f"{netloc_host}:{target.port}").geturl()
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return url, {"Host": host_header}, extensions
