"""Finding 7 of issue 9: login throttling behind proxies, per (address, account), with reservations.

- All clients behind one proxy shared one IP key, and anyone could lock `admin` for 5 minutes.
- 25 concurrent wrong passwords were all evaluated before the lock engaged.
Now X-Forwarded-For counts only from `trusted_proxies`, a (client address, account) pair is what
locks, and each attempt is reserved atomically before argon2 runs. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from dockyard.api.access_gate import client_address
from dockyard.app import create_app
from dockyard.auth import authenticator as authenticator_module
from dockyard.settings import Settings

from .helpers import API_CLIENT

ADMIN_PASSWORD = "admin-password-1"
LOCK_AFTER = 4


def _request(peer: str, forwarded: list[str]) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (peer, 40000)})


def test_finding7_client_address_believes_x_forwarded_for_only_from_trusted_proxies():
    import ipaddress

    trusted = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    assert client_address(_request("203.0.113.5", ["198.51.100.1"]), trusted) == "203.0.113.5"  # not a proxy: ignored
    assert client_address(_request("10.0.0.2", ["198.51.100.1"]), trusted) == "198.51.100.1"
    # The client can prepend anything; the first untrusted hop from the right is who reached our proxies.
    assert client_address(_request("10.0.0.2", ["1.1.1.1, 198.51.100.1, 10.0.0.9"]), trusted) == "198.51.100.1"
    assert client_address(_request("10.0.0.2", ["1.1.1.1", "198.51.100.1"]), trusted) == "198.51.100.1"
    assert client_address(_request("10.0.0.2", ["10.0.0.3"]), trusted) == "10.0.0.3"  # all proxies: the farthest
    assert client_address(_request("10.0.0.2", ["1.1.1.1, not-an-ip"]), trusted) == "10.0.0.2"
    assert client_address(_request("10.0.0.2", []), trusted) == "10.0.0.2"
    assert client_address(_request("fd00::1", ["2001:db8::7"]), trusted) == "2001:db8::7"
    assert client_address(_request("10.0.0.2", ["198.51.100.1"]), ()) == "10.0.0.2"  # no trusted proxies


@pytest.fixture(params=["sqlite", "postgresql"])
async def proxied(request, tmp_path: Path, database_url_for):
    """A registry behind a proxy at 127.0.0.1 (the ASGI test client's address)."""
    settings = Settings(
        data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD, database_url=database_url_for(request.param),
        trusted_proxies=["127.0.0.1/32"], login_slowdown_after=100, login_lockout_after=LOCK_AFTER,
        login_address_lockout_after=6, credential_cache_seconds=0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url="http://registry.test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def _login(client, password: str, address: str, user: str = "admin") -> int:
    r = await client.get("/api/v1/users/me", auth=(user, password), headers={"X-Forwarded-For": address})
    return r.status_code


async def test_finding7_others_failures_do_not_block_a_correct_password_from_a_clean_address(proxied):
    attacker, colleague = "203.0.113.66", "198.51.100.20"
    statuses = [await _login(proxied, "wrong-password", attacker) for _ in range(LOCK_AFTER + 2)]
    assert statuses == [401] * LOCK_AFTER + [429, 429]
    assert await _login(proxied, ADMIN_PASSWORD, attacker) == 429  # that pair is locked, even with the password
    assert await _login(proxied, ADMIN_PASSWORD, colleague) == 200  # a clean address logs in
    # Behind the same proxy, a spoofed hop in front of the proxy's own entry changes nothing.
    assert await _login(proxied, "wrong-password", f"1.2.3.4, {attacker}") == 429


async def test_finding7_without_trusted_proxies_x_forwarded_for_is_ignored(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD, login_lockout_after=LOCK_AFTER,
                              login_slowdown_after=100, credential_cache_seconds=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url="http://registry.test") as client:
            statuses = [await _login(client, "wrong-password", f"203.0.113.{i}") for i in range(LOCK_AFTER + 1)]
            assert statuses == [401] * LOCK_AFTER + [429]  # a fresh forged address per try does not reset anything


async def test_finding7_one_address_spraying_many_accounts_is_locked_alone(proxied):
    services = proxied.app.state.services
    for i in range(4):
        services.users.create(f"user{i}", f"user{i}-password-1")
    sprayer = "203.0.113.99"
    statuses = [await _login(proxied, "wrong-password", sprayer, f"user{i % 4}") for i in range(7)]
    assert statuses[:6] == [401] * 6 and statuses[6] == 429  # the address budget (6) is spent
    assert await _login(proxied, "user0-password-1", sprayer, "user0") == 429
    assert await _login(proxied, "user0-password-1", "198.51.100.7", "user0") == 200


async def test_finding7_concurrent_wrong_passwords_are_reserved_before_argon2(proxied, monkeypatch):
    evaluated = []
    lock = threading.Lock()
    original = authenticator_module.verify_secret

    def counting_verify(stored_hash: str, secret: str) -> bool:
        if secret == "wrong-password":
            with lock:
                evaluated.append(secret)
        return original(stored_hash, secret)

    monkeypatch.setattr(authenticator_module, "verify_secret", counting_verify)
    statuses = await asyncio.gather(*(_login(proxied, "wrong-password", "203.0.113.25") for _ in range(25)))
    assert len(evaluated) == LOCK_AFTER, f"{len(evaluated)} of 25 concurrent wrong passwords were hashed"
    assert sorted(statuses) == [401] * LOCK_AFTER + [429] * (25 - LOCK_AFTER)
    # Concurrent CORRECT logins from a clean address all succeed (they wait for each other, not fail).
    statuses = await asyncio.gather(*(_login(proxied, ADMIN_PASSWORD, "198.51.100.25") for _ in range(12)))
    assert statuses == [200] * 12


async def test_attack_ipv6_addresses_of_one_slash64_share_a_throttle_key(proxied):
    """Issue 9 finding 7, attack review: a client given an IPv6 /64 (the usual allocation) could rotate
    through fresh addresses and so escape both the per-(address, account) lock and the spraying limit.
    Its /64 is one key; another /64 is unaffected, and an IPv4-mapped address counts as the IPv4 one."""
    statuses = [await _login(proxied, "wrong-password", f"2001:db8:1:2::{i + 1:x}") for i in range(LOCK_AFTER + 1)]
    assert statuses == [401] * LOCK_AFTER + [429]
    assert await _login(proxied, ADMIN_PASSWORD, "2001:db8:1:2:ffff::9") == 429  # same /64
    assert await _login(proxied, ADMIN_PASSWORD, "2001:db8:1:3::1") == 200  # another /64 logs in
    statuses = [await _login(proxied, "wrong-password", "::ffff:203.0.113.7") for _ in range(LOCK_AFTER)]
    assert statuses == [401] * LOCK_AFTER
    assert await _login(proxied, "wrong-password", "203.0.113.7") == 429
