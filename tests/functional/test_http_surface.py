"""Finding 11 of issue 9 and the informational HTTP-surface items.

- The token realm was built from the Host header, unescaped: `Host: evil",error="x` came back in
  WWW-Authenticate. Now `public_url` is required off loopback, Host is validated otherwise, and
  every challenge parameter is an escaped quoted-string.
- /api/v1 answered `WWW-Authenticate: Basic` (browsers cache such credentials) and took body-less
  POSTs such as key rotation from any page (CSRF). Now it challenges with its own scheme, and each
  state-changing request needs a JSON body or an X-Dockyard-Client header.
- /api/v1/docs loaded Swagger UI from a CDN; now it is served locally, with framing and sniffing off.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from dockyard.app import create_app
from dockyard.settings import Settings

from .helpers import API_CLIENT

ADMIN = ("admin", "admin-password-1")
EVIL_HOST = 'evil",error="x'


async def _client(tmp_path: Path, **overrides):
    app = create_app(Settings(data_dir=tmp_path / "data", admin_password=ADMIN[1], **overrides))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return app, httpx.AsyncClient(transport=transport, base_url="http://registry.test")


async def test_finding11_host_header_is_validated_without_public_url(tmp_path):
    app, client = await _client(tmp_path)
    async with app.router.lifespan_context(app), client:
        for host in (EVIL_HOST, "a b", "evil>", "x\\y", "[::1", "host:port", 'h"'):
            r = await client.get("/v2/", headers={"Host": host})
            assert r.status_code == 400, (host, r.status_code)
            assert r.json()["errors"][0]["code"] == "INVALID_REQUEST"
            assert "www-authenticate" not in r.headers
        request = client.build_request("GET", "/v2/")
        request.headers = httpx.Headers([("Host", "registry.test"), ("Host", EVIL_HOST)])
        r = await client.send(request)
        assert r.status_code == 400 and "www-authenticate" not in r.headers  # a second Host header is refused too
        for host, realm in (("registry.test:5000", "http://registry.test:5000/token"), ("[::1]:5000", "http://[::1]:5000/token"),
                            ("10.1.2.3", "http://10.1.2.3/token")):
            r = await client.get("/v2/", headers={"Host": host})
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == f'Bearer realm="{realm}",service="dockyard"'


async def test_finding11_public_url_names_the_realm_whatever_the_host(tmp_path):
    app, client = await _client(tmp_path, public_url="https://registry.example.com/")
    async with app.router.lifespan_context(app), client:
        r = await client.get("/v2/team/app/tags/list", headers={"Host": EVIL_HOST})
        assert r.status_code == 401
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="https://registry.example.com/token",service="dockyard"')
        assert "evil" not in challenge and challenge.count('error="') == 0
        assert 'scope="repository:team/app:pull"' in challenge


async def test_finding11_challenge_parameters_are_escaped(tmp_path):
    app, client = await _client(tmp_path, token_service='dock"yard\\x')
    async with app.router.lifespan_context(app), client:
        r = await client.get("/v2/", headers={"Host": "registry.test"})
        challenge = r.headers["www-authenticate"]
        assert challenge == 'Bearer realm="http://registry.test/token",service="dock\\"yard\\\\x"'
        # Parsed as RFC 9110 quoted-strings, there are exactly the two parameters we sent.
        params = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', challenge)
        assert [name for name, _ in params] == ["realm", "service"]


def test_finding11_public_url_is_required_off_loopback(tmp_path):
    with pytest.raises(ValueError, match="public_url"):
        Settings(data_dir=tmp_path, host="0.0.0.0")
    with pytest.raises(ValueError, match="public_url"):
        Settings(data_dir=tmp_path, host="192.0.2.10")
    for bad in ('https://evil",error="x', "https://r.example.com/?q=1", "javascript:alert(1)", "https://user@r.example.com"):
        with pytest.raises(ValueError, match="public_url"):
            Settings(data_dir=tmp_path, host="0.0.0.0", public_url=bad)
    assert Settings(data_dir=tmp_path, host="0.0.0.0", public_url="https://r.example.com").public_url == "https://r.example.com"
    for loopback in ("127.0.0.1", "::1", "localhost", "127.1.2.3"):
        assert Settings(data_dir=tmp_path, host=loopback).public_url is None
    from dockyard.cli import app as cli

    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")], env={})
    assert result.exit_code == 2 and "public_url" in result.output


async def test_informational_api_v1_never_challenges_with_basic(tmp_path):
    app, client = await _client(tmp_path)
    async with app.router.lifespan_context(app), client:
        for kwargs in ({}, {"auth": ("admin", "wrong-password")}, {"headers": {"Authorization": "Bearer abc"}}):
            r = await client.get("/api/v1/projects", **kwargs)
            assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
            assert not r.headers["www-authenticate"].lower().startswith("basic"), r.headers["www-authenticate"]


async def test_informational_state_changing_api_requests_need_json_or_the_client_header(tmp_path):
    app, client = await _client(tmp_path)
    keys = app.state.services.tokens.keys
    async with app.router.lifespan_context(app), client:
        before = keys.active().kid
        for headers, content in (({}, None), ({"Content-Type": "application/x-www-form-urlencoded"}, b"a=1"),
                                 ({"Content-Type": "text/plain"}, b"{}"), ({"Content-Type": "multipart/form-data; boundary=x"}, b""),
                                 ({"X-Dockyard-Client": ""}, None)):
            r = await client.post("/api/v1/system/keys/rotate", auth=ADMIN, headers=headers, content=content)
            assert r.status_code == 403, (headers, r.status_code, r.text)
            error = r.json()["errors"][0]
            assert error["code"] == "DENIED" and "X-Dockyard-Client" in error["message"]
        assert keys.active().kid == before  # nothing rotated
        for method in ("PUT", "PATCH", "DELETE"):
            r = await client.request(method, "/api/v1/projects/team", auth=ADMIN)
            assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", method
        r = await client.post("/api/v1/system/keys/rotate", auth=ADMIN, headers=API_CLIENT)
        assert r.status_code == 200, r.text
        assert keys.active().kid != before
        r = await client.post("/api/v1/projects", auth=ADMIN, json={"name": "team"})  # a JSON body is enough
        assert r.status_code == 201, r.text
        assert (await client.get("/api/v1/projects", auth=ADMIN)).status_code == 200  # reads need nothing
        # /v2 and /token are not affected: registry clients send neither.
        assert (await client.post("/v2/team/app/blobs/uploads/", auth=ADMIN)).status_code == 202


async def test_informational_docs_are_served_locally_with_security_headers(tmp_path):
    app, client = await _client(tmp_path)
    async with app.router.lifespan_context(app), client:
        r = await client.get("/api/v1/docs")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert "swagger-ui-bundle.js" in r.text and "/api/v1/openapi.json" in r.text
        assert not re.search(r"(src|href)=\"(https?:)?//", r.text), "the docs page loads something from another origin"
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in r.text  # no inline script: CSP allows none
        for asset in re.findall(r'(?:src|href)="([^"]+)"', r.text):
            a = await client.get(f"/api/v1/{asset}")
            assert a.status_code == 200 and len(a.content) > 300, asset
        init = await client.get("/api/v1/docs/init.js")
        assert init.status_code == 200 and "X-Dockyard-Client" in init.text
        api = await client.get("/api/v1/projects")
        assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert api.headers["x-frame-options"] == "DENY" and api.headers["x-content-type-options"] == "nosniff"
