"""First-start bootstrap, RS256 signing keys, and auto-created projects."""

from __future__ import annotations

import hashlib
import json
import stat
import sys

import httpx
import jwt
import pytest

from dockyard.app import create_app
from dockyard.settings import Settings
from .helpers import API_CLIENT


def test_generated_admin_password_goes_to_a_0600_file_when_stderr_is_not_a_terminal(tmp_path, capsys, caplog, monkeypatch):
    """Container logs keep stderr: the password goes to data_dir/initial-admin-password (0600), the log names the file."""
    monkeypatch.delenv("DOCKYARD_ADMIN_PASSWORD", raising=False)
    caplog.set_level("WARNING", logger="dockyard.bootstrap")
    app = create_app(Settings(data_dir=tmp_path))
    secret_file = tmp_path / "initial-admin-password"
    password = secret_file.read_text().strip()
    assert len(password) >= 20 and stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert password not in capsys.readouterr().err and password not in caplog.text
    assert str(secret_file.resolve()) in caplog.text
    assert app.state.services.authenticator.verify("admin", password, None).is_admin
    create_app(Settings(data_dir=tmp_path))  # second start: nothing re-created, the file is not rewritten
    assert secret_file.read_text().strip() == password
    events, _ = app.state.services.audit.query(page_size=100)
    assert password not in json.dumps(events)


def test_newcomer_admin_password_hint_is_a_command_that_runs(tmp_path, capsys, caplog, monkeypatch):
    """The hint said `dockyard admin users set-password`, which without `-u admin` before the subcommand and a
    user name is refused; it now names the whole command, on a terminal and in the log."""
    monkeypatch.delenv("DOCKYARD_ADMIN_PASSWORD", raising=False)
    caplog.set_level("WARNING", logger="dockyard.bootstrap")
    create_app(Settings(data_dir=tmp_path / "a"))
    assert "`dockyard admin users -u admin set-password admin`" in caplog.text
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    create_app(Settings(data_dir=tmp_path / "b"))
    assert "`dockyard admin users -u admin set-password admin`" in capsys.readouterr().err


def test_generated_admin_password_is_printed_once_on_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DOCKYARD_ADMIN_PASSWORD", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    app = create_app(Settings(data_dir=tmp_path))
    printed = capsys.readouterr().err
    assert "created user 'admin' with password: " in printed
    password = printed.split("with password: ", 1)[1].split()[0]
    assert app.state.services.authenticator.verify("admin", password, None).is_admin
    assert not (tmp_path / "initial-admin-password").exists()
    create_app(Settings(data_dir=tmp_path))  # second start: nothing printed, nothing re-created
    assert "password" not in capsys.readouterr().err


def test_explicit_admin_password_is_used_and_not_printed(tmp_path, capsys):
    app = create_app(Settings(data_dir=tmp_path, admin_password="chosen-password-1"))
    assert "password" not in capsys.readouterr().err
    assert app.state.services.authenticator.verify("admin", "chosen-password-1", None).is_admin


async def test_rs256_keys_sign_verifiable_tokens(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, admin_password="admin-password-1", token_algorithm="RS256"))
    app.state.services.projects.create("team")
    async with httpx.AsyncClient(headers=API_CLIENT, transport=httpx.ASGITransport(app=app), base_url="http://reg") as client:
        r = await client.get("/token", params={"service": "dockyard", "scope": "repository:team/app:pull"}, auth=("admin", "admin-password-1"))
        token = r.json()["token"]
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "RS256" and header["kid"] == app.state.services.tokens.keys.active().kid
        r = await client.get("/v2/team/app/tags/list", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("auto_create", [True, False])
async def test_push_into_missing_project(tmp_path, auto_create):
    app = create_app(Settings(data_dir=tmp_path, admin_password="admin-password-1", auto_create_projects=auto_create))
    services = app.state.services
    services.users.create("alice", "alice-password-1")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(headers=API_CLIENT, transport=httpx.ASGITransport(app=app), base_url="http://reg") as client:
            r = await client.get(
                "/token", params={"service": "dockyard", "scope": "repository:newproj/app:pull,push"}, auth=("alice", "alice-password-1")
            )
            token = r.json()["token"]
            granted = jwt.decode(token, options={"verify_signature": False})["access"][0]["actions"]
            config = b"{}"
            r = await client.post(
                "/v2/newproj/app/blobs/uploads/", params={"digest": _digest(config)}, content=config,
                headers={"Authorization": f"Bearer {token}"},
            )
            if not auto_create:
                assert granted == []
                assert r.status_code == 403
                assert "project newproj does not exist" in r.json()["errors"][0]["message"]
                assert not services.access.project_exists("newproj")
                return
            assert granted == ["pull", "push"]
            assert r.status_code == 201, r.text
    project = services.projects.get("newproj")
    assert project.public is False
    members = services.projects.list_members("newproj")
    assert [(m.username, m.role) for m in members] == [("alice", "admin")]
    events, _ = services.audit.query(action="project.create")
    assert events and events[0]["actor"] == "alice"


async def test_attack_auto_create_grant_does_not_push_into_a_project_created_meanwhile(tmp_path):
    """With auto_create_projects, /token grants push on a missing project. Mallory asks for it before the
    project exists; alice's first push then creates it (alice as its admin). Mallory's token must not push
    into alice's project for the rest of its lifetime; alice's own token keeps working."""
    app = create_app(Settings(data_dir=tmp_path, admin_password="admin-password-1", auto_create_projects=True))
    services = app.state.services
    services.users.create("alice", "alice-password-1")
    services.users.create("mallory", "mallory-password-1")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(headers=API_CLIENT, transport=httpx.ASGITransport(app=app), base_url="http://reg") as client:
            async def token(user: str) -> dict:
                r = await client.get("/token", params={"service": "dockyard", "scope": "repository:newproj/app:pull,push"},
                                     auth=(user, f"{user}-password-1"))
                return {"Authorization": f"Bearer {r.json()['token']}"}

            early, alice = await token("mallory"), await token("alice")
            config = b"{}"
            r = await client.post("/v2/newproj/app/blobs/uploads/", params={"digest": _digest(config)}, content=config, headers=alice)
            assert r.status_code == 201, r.text
            assert [(m.username, m.role) for m in services.projects.list_members("newproj")] == [("alice", "admin")]
            for params in ({"digest": _digest(b"x")}, {}):
                r = await client.post("/v2/newproj/app/blobs/uploads/", params=params, content=b"x", headers=early)
                assert r.status_code == 403, r.text
                assert r.json()["errors"][0]["code"] == "DENIED"
            r = await client.post("/v2/newproj/app/blobs/uploads/", params={"digest": _digest(b"y")}, content=b"y", headers=alice)
            assert r.status_code == 201, r.text
