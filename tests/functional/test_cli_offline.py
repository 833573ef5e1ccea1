"""Offline administration straight against a data directory (no server)."""

from __future__ import annotations

from typer.testing import CliRunner

from dockyard.auth.authenticator import Authenticator
from dockyard.cli import app
from dockyard.domain.projects import ProjectService
from dockyard.metadata.db import Database


def test_bootstrap_sets_admin_password_and_creates_projects(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKYARD_ADMIN_PASSWORD", raising=False)
    runner = CliRunner()
    data = tmp_path / "data"
    result = runner.invoke(
        app,
        ["admin", "bootstrap", "--data-dir", str(data), "--admin-password-stdin", "--project", "prod", "--public-project", "oss"],
        input="a-long-admin-password\n",
    )
    assert result.exit_code == 0, result.output
    assert "created private project prod" in result.output and "created public project oss" in result.output
    db = Database(f"sqlite:///{data / 'dockyard.db'}")
    projects = ProjectService(db)
    assert projects.get("prod").public is False and projects.get("oss").public is True
    from dockyard.app import build_services
    from dockyard.settings import Settings

    services = build_services(Settings(data_dir=data))
    authn: Authenticator = services.authenticator
    assert authn.verify("admin", "a-long-admin-password", None).is_admin
    # Running it again resets the password and refuses a duplicate project with a clear message.
    again = runner.invoke(
        app, ["admin", "bootstrap", "--data-dir", str(data), "--admin-password-stdin", "--project", "prod"], input="another-password-2\n"
    )
    assert again.exit_code == 1 and "CONFLICT" in again.output and "prod" in again.output
    assert authn.verify("admin", "another-password-2", None).is_admin
