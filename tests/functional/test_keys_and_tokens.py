"""Issue 9, findings 1 and 2 and the token bounds: signing keys sealed under a KEK, retired and
revoked keys, token lifetimes per kind, credential epochs on login passwords, tokens and refresh
tokens, and the limits on scopes, header size and the token cache. SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update

from dockyard.app import create_app
from dockyard.auth.secret_box import KeyEncryptionError
from dockyard.domain.projects import ProjectService
from dockyard.domain.robots import RobotService
from dockyard.domain.users import UserService
from dockyard.metadata.db import utcnow
from dockyard.metadata.models import signing_keys, users
from dockyard.settings import Settings

ADMIN = ("admin", "admin-password-1")
ALICE = ("alice", "alice-password-1")
CLIENT = {"X-Dockyard-Client": "test"}
SECRET = "s" * 40


def settings_for(tmp_path, database_url, **overrides) -> Settings:
    values = dict(data_dir=tmp_path / "data", database_url=database_url, admin_password=ADMIN[1],
                  login_slowdown_after=50, login_lockout_after=100)
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running(settings: Settings):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reg") as client:
            client.services = app.state.services  # type: ignore[attr-defined]
            yield client


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.param


@pytest.fixture
def make(tmp_path, backend, database_url_for):
    url = database_url_for(backend)

    def factory(**overrides):
        return running(settings_for(tmp_path, url, **overrides))

    return factory


@pytest.fixture
async def reg(make):
    async with make() as client:
        services = client.services
        UserService(services.db).create(*ALICE)
        ProjectService(services.db).create("alpha")
        ProjectService(services.db).add_member("alpha", "alice", "developer")
        yield client


async def token(client, auth, scope="repository:alpha/app:pull,push") -> str:
    r = await client.get("/token", params={"service": "dockyard", "scope": scope}, auth=auth)
    assert r.status_code == 200, r.text
    return r.json()["token"]


async def pull_status(client, tok: str) -> int:
    return (await client.get("/v2/alpha/app/tags/list", headers={"Authorization": f"Bearer {tok}"})).status_code


async def login_password(client, auth) -> str:
    r = await client.post("/api/v1/auth/login-password", auth=auth, headers=CLIENT)
    assert r.status_code == 200, r.text
    return r.json()["password"]


async def whoami(client, auth) -> int:
    return (await client.get("/api/v1/auth/whoami", auth=auth)).status_code


def forge(client, claims: dict, *, kid_key=None) -> str:
    """Sign like the registry does, with its own private key (what a thief of that key could do)."""
    signer = kid_key or client.services.tokens.keys.signer()
    return jwt.encode(claims, signer.private_key, algorithm=signer.algorithm, headers={"kid": signer.kid, "typ": "JWT"})


def access_claims(client, name="alice", **overrides) -> dict:
    account = client.services.authenticator.account(name)
    now = int(time.time())
    claims = {"iss": "dockyard", "sub": name, "aud": "dockyard", "iat": now, "nbf": now, "exp": now + 300, "jti": "j",
              "uid": account.id, "cep": account.epoch,
              "access": [{"type": "repository", "name": "alpha/app", "actions": ["pull"]}]}
    claims.update(overrides)
    return claims


# -- finding 1: key storage ---------------------------------------------------------------------


def _loadable_private_keys(values) -> list:
    found = []
    for value in values:
        if isinstance(value, str):
            with contextlib.suppress(Exception):
                found.append(serialization.load_pem_private_key(value.encode(), password=None))
    return found


async def test_finding1_no_plaintext_private_key_in_a_stolen_database(reg, backend, tmp_path):
    services = reg.services
    pem = services.tokens.keys.signer().private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body = b"".join(pem.splitlines()[1:-1])[:40]  # a piece of the key itself, not just the armour
    with services.db.read() as conn:
        rows = conn.execute(select(signing_keys)).all()
    assert rows and all(r.private_pem is None and r.private_sealed.startswith("dky1:") for r in rows)
    assert _loadable_private_keys([v for r in rows for v in r]) == []
    if backend == "sqlite":
        raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("dockyard.db*"))
        assert b"PRIVATE KEY" not in raw and body not in raw
    # The sealed value opens only with this node's KEK, which lives outside the database.
    kek_file = tmp_path / "data" / "secrets" / "kek"
    assert kek_file.stat().st_mode & 0o777 == 0o600
    from dockyard.auth.secret_box import Kek, KeyRing

    with pytest.raises(KeyEncryptionError):
        KeyRing(Kek.from_secret(b"x" * 32)).open(rows[0].private_sealed, rows[0].kid)


async def test_finding1_plaintext_keys_of_an_older_version_are_sealed_on_start(tmp_path, backend, database_url_for):
    from alembic import command

    from dockyard.auth.token_keys import _generate, _pkcs8, jwk_thumbprint
    from dockyard.metadata.db import Database, _alembic_config

    url = database_url_for(backend)
    settings = settings_for(tmp_path, url)
    settings.data_dir.mkdir(parents=True)
    db = Database(settings.resolved_database_url)
    with db.engine.begin() as conn:  # the schema as cb381ad left it, with its plaintext key
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    private = _generate("ES256")
    pem = _pkcs8(private).decode()
    kid = jwk_thumbprint(private.public_key())
    public = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO signing_keys (kid, algorithm, private_pem, public_pem, active, created_at) VALUES "
            + ("(?, ?, ?, ?, ?, ?)" if backend == "sqlite" else "(%s, %s, %s, %s, %s, %s)"),
            (kid, "ES256", pem, public.decode(), True, utcnow()),
        )
    db.dispose()
    async with running(settings) as client:
        with client.services.db.read() as conn:
            row = conn.execute(select(signing_keys).where(signing_keys.c.kid == kid)).one()
        assert row.private_pem is None and row.private_sealed.startswith("dky1:")
        assert client.services.tokens.keys.signer().kid == kid  # the same key still signs
        assert (await whoami(client, ADMIN)) == 200
    if backend == "sqlite":
        raw = b"".join(p.read_bytes() for p in settings.data_dir.glob("dockyard.db*"))
        body = "".join(pem.splitlines()[1:-1])[:40].encode()
        assert b"PRIVATE KEY" not in raw and body not in raw


async def test_finding1_a_node_with_another_kek_refuses_to_start(tmp_path, backend, database_url_for):
    url = database_url_for(backend)
    async with running(settings_for(tmp_path, url, secret_key=SECRET)):
        pass
    # Same database, another KEK (e.g. a second node that generated its own): a clear error at start.
    with pytest.raises(KeyEncryptionError, match="same secret_key"):
        create_app(settings_for(tmp_path / "other", url or f"sqlite:///{tmp_path / 'data' / 'dockyard.db'}",
                                secret_key="t" * 40))
    async with running(settings_for(tmp_path / "third", url or f"sqlite:///{tmp_path / 'data' / 'dockyard.db'}",
                                    secret_key=SECRET)) as client:
        assert (await whoami(client, ADMIN)) == 200


# -- finding 1: retired keys, revocation, lifetimes --------------------------------------------


async def test_finding1_retired_key_verifies_only_until_retirement_plus_longest_lifetime(reg):
    keys = reg.services.tokens.keys
    old_signer = keys.signer()
    old = await token(reg, ALICE)
    keys.rotate()
    assert await pull_status(reg, old) == 404  # within the window: still fine (empty repository)
    stolen_forgery = forge(reg, access_claims(reg), kid_key=old_signer)
    assert await pull_status(reg, stolen_forgery) == 404
    # The window is the longest token lifetime; move the retirement back past it.
    window = keys.verify_window
    assert window == max(reg.services.settings.token_ttl_seconds, reg.services.settings.login_password_ttl_seconds) + 20
    with reg.services.db.write() as conn:
        conn.execute(update(signing_keys).where(signing_keys.c.kid == old_signer.kid)
                     .values(retired_at=utcnow() - timedelta(seconds=window + 1)))
    keys.reload()
    for tok in (old, stolen_forgery, forge(reg, access_claims(reg), kid_key=old_signer)):
        r = await reg.get("/v2/alpha/app/tags/list", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        assert "retired or revoked key" in r.json()["errors"][0]["message"]
    # A login password forged with the retired key does not work either.
    forged_login = forge(reg, {**access_claims(reg), "use": "login", "access": None}, kid_key=old_signer)
    assert await whoami(reg, ("alice", forged_login)) == 401
    assert await pull_status(reg, await token(reg, ALICE)) == 404  # the new key signs and verifies


async def test_finding1_revoked_key_never_verifies_and_revoking_the_active_key_rotates(reg):
    keys = reg.services.tokens.keys
    first = keys.active().kid
    tok = await token(reg, ALICE)
    lp = await login_password(reg, ALICE)
    assert await pull_status(reg, tok) == 404 and await whoami(reg, ("alice", lp)) == 200
    # Only administrators see and revoke keys.
    assert (await reg.get("/api/v1/system/keys", auth=ALICE)).status_code == 403
    assert (await reg.post(f"/api/v1/system/keys/{first}/revoke", auth=ALICE, headers=CLIENT)).status_code == 403
    r = await reg.post(f"/api/v1/system/keys/{first}/revoke", auth=ADMIN, headers=CLIENT)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert keys.active().kid != first
    assert await pull_status(reg, tok) == 401  # even though this token was cached
    assert await whoami(reg, ("alice", lp)) == 401
    listed = {k["kid"]: k for k in (await reg.get("/api/v1/system/keys", auth=ADMIN)).json()}
    assert listed[first]["status"] == "revoked" and listed[keys.active().kid]["status"] == "active"
    assert all("private" not in field for k in listed.values() for field in k)
    missing = await reg.post("/api/v1/system/keys/nope/revoke", auth=ADMIN, headers=CLIENT)
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "NOT_FOUND"
    assert await pull_status(reg, await token(reg, ALICE)) == 404


async def test_finding1_revocation_reaches_another_node(tmp_path, backend, database_url_for):
    url = database_url_for(backend) or f"sqlite:///{tmp_path / 'shared.db'}"
    async with running(settings_for(tmp_path / "a", url, secret_key=SECRET)) as a:
        UserService(a.services.db).create(*ALICE)
        ProjectService(a.services.db).create("alpha", public=False)
        ProjectService(a.services.db).add_member("alpha", "alice", "developer")
        async with running(settings_for(tmp_path / "b", url, secret_key=SECRET)) as b:
            tok = await token(a, ALICE)
            assert await pull_status(b, tok) == 404
            kid = jwt.get_unverified_header(tok)["kid"]
            assert (await a.post(f"/api/v1/system/keys/{kid}/revoke", auth=ADMIN, headers=CLIENT)).status_code == 200
            await b.services.db.run(b.services.tokens.keys.reload)  # what node b's refresher (app._refresh_keys) does every 10 s
            assert await pull_status(b, tok) == 401
            assert await pull_status(b, await token(b, ALICE)) == 404  # b signs with a's new key


async def test_finding1_revoked_key_ends_login_passwords_on_another_node_at_once(tmp_path, backend, database_url_for):
    """Login passwords live for hours: their key's revocation is read from the database on use, so a
    second process refuses one at once, cached verification or not, without waiting for its key refresh."""
    url = database_url_for(backend) or f"sqlite:///{tmp_path / 'shared.db'}"
    async with running(settings_for(tmp_path / "a", url, secret_key=SECRET)) as a:
        UserService(a.services.db).create(*ALICE)
        async with running(settings_for(tmp_path / "b", url, secret_key=SECRET)) as b:
            lp = await login_password(a, ALICE)
            assert await whoami(b, ("alice", lp)) == 200  # b has now cached this verification
            kid = jwt.get_unverified_header(lp)["kid"]
            assert (await a.post(f"/api/v1/system/keys/{kid}/revoke", auth=ADMIN, headers=CLIENT)).status_code == 200
            assert b.services.tokens.keys.usable(kid) is not None  # b's in-memory keys have not refreshed
            assert await whoami(b, ("alice", lp)) == 401
            assert b.services.tokens.keys.usable(kid) is None  # and b learnt the revocation from that check


async def test_finding1_token_living_longer_than_its_kind_allows_is_refused(reg):
    ttl = reg.services.settings.token_ttl_seconds
    login_ttl = reg.services.settings.login_password_ttl_seconds
    now = int(time.time())
    assert await pull_status(reg, forge(reg, access_claims(reg, iat=now, nbf=now, exp=now + ttl))) == 404
    r = await reg.get("/v2/alpha/app/tags/list",
                      headers={"Authorization": f"Bearer {forge(reg, access_claims(reg, iat=now, nbf=now, exp=now + ttl + 1))}"})
    assert r.status_code == 401 and "exceeds" in r.json()["errors"][0]["message"]
    ten_years = forge(reg, access_claims(reg, iat=now, nbf=now, exp=now + 10 * 365 * 86400))
    assert await pull_status(reg, ten_years) == 401
    future = forge(reg, access_claims(reg, iat=now + 3600, nbf=now, exp=now + 3600 + 60))
    assert await pull_status(reg, future) == 401
    login = {**access_claims(reg, iat=now, nbf=now), "use": "login"}  # iat = this now: no second boundary between
    login.pop("access")
    assert await whoami(reg, ("alice", forge(reg, {**login, "exp": now + login_ttl}))) == 200
    assert await whoami(reg, ("alice", forge(reg, {**login, "exp": now + login_ttl + 1}))) == 401
    assert await whoami(reg, ("alice", forge(reg, {**login, "use": "forever"}))) == 401


# -- finding 2: login passwords, epochs ----------------------------------------------------------


async def test_finding2_login_password_ends_on_password_change_disable_and_delete(reg):
    lp = await login_password(reg, ALICE)
    assert await whoami(reg, ("alice", lp)) == 200
    r = await reg.put("/api/v1/users/alice/password", json={"new_password": "alice-password-2"}, auth=ADMIN)
    assert r.status_code == 204
    assert await whoami(reg, ("alice", lp)) == 401

    alice = ("alice", "alice-password-2")
    lp = await login_password(reg, alice)
    assert (await reg.patch("/api/v1/users/alice", json={"disabled": True}, auth=ADMIN)).status_code == 200
    assert (await reg.patch("/api/v1/users/alice", json={"disabled": False}, auth=ADMIN)).status_code == 200
    assert await whoami(reg, alice) == 200 and await whoami(reg, ("alice", lp)) == 401  # stays dead

    lp = await login_password(reg, alice)
    tok = await token(reg, ("alice", lp))  # docker login with it, then a pull
    assert await pull_status(reg, tok) == 404
    assert (await reg.delete("/api/v1/users/alice", auth=ADMIN, headers=CLIENT)).status_code == 204
    UserService(reg.services.db).create("alice", "new-alice-password")  # a namesake, maybe the same id
    ProjectService(reg.services.db).add_member("alpha", "alice", "developer")
    assert await whoami(reg, ("alice", lp)) == 401
    assert await pull_status(reg, tok) == 401


async def test_finding2_changes_made_elsewhere_end_tokens_within_credential_check_seconds(make):
    async with make(credential_check_seconds=0) as client:
        UserService(client.services.db).create(*ALICE)
        ProjectService(client.services.db).create("alpha")
        ProjectService(client.services.db).add_member("alpha", "alice", "developer")
        tok = await token(client, ALICE)
        lp = await login_password(client, ALICE)
        assert await pull_status(client, tok) == 404
        # Another node (or the offline CLI) changes the password: no local hook runs here.
        UserService(client.services.db).change_password("alice", "alice-password-9")
        assert await pull_status(client, tok) == 401
        assert await whoami(client, ("alice", lp)) == 401


async def test_finding2_login_password_cannot_mint_a_login_password_or_a_refresh_token(reg):
    lp = await login_password(reg, ALICE)
    r = await reg.post("/api/v1/auth/login-password", auth=("alice", lp), headers=CLIENT)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    assert "login password" in r.json()["errors"][0]["message"]
    got = await reg.get("/token", params={"service": "dockyard", "offline_token": "true"}, auth=("alice", lp))
    assert got.status_code == 200 and got.json()["token"] and "refresh_token" not in got.json()
    posted = await reg.post("/token", data={"grant_type": "password", "service": "dockyard", "client_id": "docker",
                                           "access_type": "offline", "username": "alice", "password": lp})
    assert posted.status_code == 200 and "refresh_token" not in posted.json()
    # The account password still gets both.
    assert (await reg.post("/api/v1/auth/login-password", auth=ALICE, headers=CLIENT)).status_code == 200
    got = await reg.get("/token", params={"service": "dockyard", "offline_token": "true"}, auth=ALICE)
    assert got.json()["refresh_token"]


async def _refresh(client, refresh: str) -> int:
    return (await client.post("/token", data={"grant_type": "refresh_token", "service": "dockyard",
                                             "client_id": "docker", "refresh_token": refresh})).status_code


async def test_finding2_robot_tokens_end_on_rotate_disable_and_delete(reg):
    robots = RobotService(reg.services.db)
    robot, secret = robots.create("ci", project="alpha", permissions=["pull"])
    creds = (robot.name, secret)

    async def fresh():
        tok = await token(reg, creds, "repository:alpha/app:pull")
        got = await reg.get("/token", params={"service": "dockyard", "offline_token": "true"}, auth=creds)
        return tok, got.json()["refresh_token"]

    tok, refresh = await fresh()
    assert await pull_status(reg, tok) == 404 and await _refresh(reg, refresh) == 200
    rotated = await reg.post(f"/api/v1/robots/{robot.name}/rotate", auth=ADMIN, headers=CLIENT)
    assert rotated.status_code == 200
    assert await pull_status(reg, tok) == 401 and await _refresh(reg, refresh) == 401
    creds = (robot.name, rotated.json()["secret"])

    tok, refresh = await fresh()
    robots.update(robot.name, disabled=True)  # straight in the database, as another node would
    robots.update(robot.name, disabled=False)
    reg.services.authenticator.forget(robot.name)  # skip the credential_check_seconds wait
    assert await pull_status(reg, tok) == 401
    # The refresh token was not revoked by any hook; its epoch no longer matches.
    assert await _refresh(reg, refresh) == 401

    tok, refresh = await fresh()
    robots.delete(robot.name)
    robots.create("ci", project="alpha", permissions=["pull"])  # same name again
    reg.services.authenticator.forget(robot.name)
    assert await pull_status(reg, tok) == 401 and await _refresh(reg, refresh) == 401


async def test_finding2_refresh_token_ends_with_a_password_change_made_anywhere(reg):
    got = await reg.get("/token", params={"service": "dockyard", "offline_token": "true"}, auth=ALICE)
    refresh = got.json()["refresh_token"]
    assert await _refresh(reg, refresh) == 200
    UserService(reg.services.db).change_password("alice", "alice-password-3")  # offline, no revoke hook
    assert await _refresh(reg, refresh) == 401


async def test_finding2_tokens_of_anonymous_and_the_scanner_need_no_account(reg):
    ProjectService(reg.services.db).update("alpha", public=True)
    anon = await token(reg, None, "repository:alpha/app:pull")
    assert await pull_status(reg, anon) == 404
    from dockyard.auth.principals import Principal
    from dockyard.auth.scopes import Scope
    from dockyard.scanning.service import SCANNER_SUBJECT

    issued = reg.services.tokens.issue(Principal("robot", SCANNER_SUBJECT), [Scope("repository", "alpha/app", ("pull",))])
    assert await pull_status(reg, issued.token) == 404


# -- informational: bounds on scopes, header size, the token cache ---------------------------------


async def test_info_token_request_scope_count_is_bounded(make):
    async with make(token_max_scopes=4) as client:
        scopes = [f"repository:alpha/r{i}:pull" for i in range(5)]
        r = await client.get("/token", params=[("service", "dockyard")] + [("scope", s) for s in scopes], auth=ADMIN)
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_REQUEST"
        assert "at most 4 scopes" in r.json()["errors"][0]["message"]
        r = await client.post("/token", data={"grant_type": "password", "service": "dockyard", "client_id": "x",
                                             "username": ADMIN[0], "password": ADMIN[1], "scope": " ".join(scopes)})
        assert r.status_code == 400
        huge = [("scope", f"repository:alpha/r{i}:pull") for i in range(20_000)]
        form = urlencode([("grant_type", "password"), ("service", "dockyard"), ("client_id", "x"),
                          ("username", ADMIN[0]), ("password", ADMIN[1]), *huge])
        r = await client.post("/token", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400
        ok = await client.get("/token", params=[("service", "dockyard")] + [("scope", s) for s in scopes[:4]], auth=ADMIN)
        assert ok.status_code == 200 and len(jwt.decode(ok.json()["token"], options={"verify_signature": False})["access"]) == 4


async def test_info_oversized_authorization_and_tokens_are_refused(reg):
    big = "Bearer " + "a" * 9000
    for path in ("/v2/", "/v2/alpha/app/tags/list", "/api/v1/auth/whoami", "/token"):
        r = await reg.get(path, headers={"Authorization": big})
        assert r.status_code == 400, path
        assert r.json()["errors"][0]["code"] == "INVALID_REQUEST" and "8192" in r.json()["errors"][0]["message"]
    # A token padded with more access entries than a request may ask for (under the size cap) is refused.
    many = [{"type": "repository", "name": f"alpha/r{i}", "actions": ["pull"]} for i in range(40)]
    padded = forge(reg, access_claims(reg, access=many))
    assert len(padded) < 8192
    assert await pull_status(reg, padded) == 401


async def test_info_verified_token_cache_is_a_bounded_lru(make):
    async with make(token_cache_entries=3) as client:
        tokens = client.services.tokens
        issued = [await token(client, ADMIN, f"repository:alpha/r{i}:pull") for i in range(5)]
        for tok in issued:
            tokens.verify(tok)
        assert list(tokens._cache) == issued[2:]
        tokens.verify(issued[2])  # a hit moves it to the back
        tokens.verify(issued[0])
        assert list(tokens._cache) == [issued[4], issued[2], issued[0]]


# -- finding 1: rotating the key-encryption key ---------------------------------------------------


def _sealed_kek_ids(db) -> set[str]:
    with db.read() as conn:
        return {v.split(":")[1] for v in conn.execute(select(signing_keys.c.private_sealed)).scalars()}


async def test_finding1_rotate_kek_reencrypts_every_key(tmp_path, backend, database_url_for, monkeypatch):
    from typer.testing import CliRunner

    from dockyard.cli import app as cli

    monkeypatch.delenv("DOCKYARD_SECRET_KEY", raising=False)
    url = database_url_for(backend)
    settings = settings_for(tmp_path, url)
    async with running(settings) as client:
        client.services.tokens.keys.rotate()  # two keys: an active and a retired one
        lp = await login_password(client, ADMIN)
        old_ids = _sealed_kek_ids(client.services.db)
    kek_file = settings.data_dir / "secrets" / "kek"
    old_kek = kek_file.read_bytes()
    args = ["admin", "rotate-kek", "--data-dir", str(settings.data_dir)] + (["--database-url", url] if url else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert kek_file.read_bytes() != old_kek and kek_file.stat().st_mode & 0o777 == 0o600
    assert not kek_file.with_name("kek.new").exists()
    async with running(settings) as client:
        new_ids = _sealed_kek_ids(client.services.db)
        assert len(new_ids) == 1 and not new_ids & old_ids
        assert await whoami(client, ("admin", lp)) == 200  # signed before, still verifies
        assert await whoami(client, ("admin", await login_password(client, ADMIN))) == 200  # signing works
    # The old KEK opens nothing any more.
    kek_file.write_bytes(old_kek)
    with pytest.raises(KeyEncryptionError):
        create_app(settings)


async def test_newcomer_key_rotation_after_rotate_kek_under_a_running_server_is_refused(
        tmp_path, backend, database_url_for, monkeypatch):
    """`rotate-kek` while a server still ran, then `keys rotate` on that server: the new key was sealed under the
    old in-memory KEK and the next start failed. The server now refuses the rotation, names the cause, and
    nothing is written, so the restart works."""
    from typer.testing import CliRunner

    from dockyard.cli import app as cli

    monkeypatch.delenv("DOCKYARD_SECRET_KEY", raising=False)
    url = database_url_for(backend)
    settings = settings_for(tmp_path, url)
    async with running(settings) as client:
        before = {k.kid for k in client.services.tokens.keys.all()}
        args = ["admin", "rotate-kek", "--data-dir", str(settings.data_dir)] + (["--database-url", url] if url else [])
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        r = await client.post("/api/v1/system/keys/rotate", auth=ADMIN, headers=CLIENT)
        assert r.status_code == 503, r.text
        message = r.json()["errors"][0]["message"]
        assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert "rotate-kek" in message and "restart" in message
        with client.services.db.read() as conn:
            assert set(conn.execute(select(signing_keys.c.kid)).scalars()) == before
    async with running(settings) as client:  # the restart reads the new KEK and works
        r = await client.post("/api/v1/system/keys/rotate", auth=ADMIN, headers=CLIENT)
        assert r.status_code == 200, r.text
        assert await whoami(client, ("admin", await login_password(client, ADMIN))) == 200


async def test_finding1_rotate_kek_interrupted_after_the_database_commit_recovers(tmp_path, monkeypatch):
    """A crash between re-encrypting and installing the new KEK file leaves `kek.new`; start-up
    opens keys sealed under it, and running rotate-kek again finishes the job."""
    from typer.testing import CliRunner

    from dockyard.auth.token_keys import open_keystore
    from dockyard.auth.secret_box import Kek, KeyRing, generate_secret, write_secret_file
    from dockyard.cli import app as cli
    from dockyard.metadata.db import Database

    monkeypatch.delenv("DOCKYARD_SECRET_KEY", raising=False)
    settings = settings_for(tmp_path, None)
    async with running(settings):
        pass
    pending_secret = generate_secret()
    kek_file = settings.data_dir / "secrets" / "kek"
    write_secret_file(kek_file.with_name("kek.new"), pending_secret)
    db = Database(settings.resolved_database_url)
    open_keystore(db, settings).reencrypt(KeyRing(Kek.from_secret(pending_secret)))
    db.dispose()
    async with running(settings) as client:  # crash here: both files, rows under the new one
        assert await whoami(client, ADMIN) == 200
        assert client.services.tokens.keys.signer()
    result = CliRunner().invoke(cli, ["admin", "rotate-kek", "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    assert kek_file.read_bytes().strip() == pending_secret and not kek_file.with_name("kek.new").exists()
    async with running(settings) as client:
        assert await whoami(client, ("admin", await login_password(client, ADMIN))) == 200


def test_finding1_a_short_secret_key_is_refused_without_echoing_it(tmp_path):
    with pytest.raises(KeyEncryptionError, match="at least 32 bytes") as caught:
        create_app(settings_for(tmp_path, None, secret_key="short-but-secret"))
    assert "short-but-secret" not in str(caught.value)
    settings = settings_for(tmp_path, None, secret_key="k" * 40)
    assert "kkkk" not in repr(settings) and "kkkk" not in str(settings.model_dump())
