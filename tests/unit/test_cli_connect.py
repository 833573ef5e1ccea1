"""One way to connect: every remote command resolves `--url`/`--registry`/`-r` and the credentials through
dockyard.cli.remote.connect(), so all of them use what `dockyard login` saved."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from dockyard.cli import app, remote
from dockyard.client.credentials import CredentialStore

HOST = "registry.example.com:5000"
ERROR = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}


@pytest.fixture
def sent(monkeypatch):
    """Every Remote the commands build: (url, username, password); the registry answers 401."""
    calls: list[tuple[str, str | None, str | None]] = []
    transport = httpx.MockTransport(lambda request: httpx.Response(401, json=ERROR))

    def client(self) -> httpx.Client:
        calls.append((self.url, self.username, self.password))
        return httpx.Client(base_url="http://x/api/v1", transport=transport)

    monkeypatch.setattr(remote.Remote, "client", client)
    for name in ("DOCKYARD_URL", "DOCKYARD_USERNAME", "DOCKYARD_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return calls


# One invocation of each remote command; `-r HOST` goes where its connection options go.
COMMANDS = [
    ["admin", "projects", "-r", HOST, "list"],
    ["admin", "users", "--registry", HOST, "show"],
    ["admin", "keys", "--url", HOST, "list"],
    ["admin", "audit", "-r", HOST, "list"],
    ["events", "-r", HOST, "tail"],
    ["policy", "retention", "-r", HOST, "list", "team"],
    ["security", "-r", HOST, "show", "team"],
    ["gc", "--no-wait", "-r", HOST],
    ["promote", "team/app:1", "prod/app", "--registry", HOST],
    ["scan", "--report-only", "--url", HOST, "team/app:1"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: " ".join(a for a in args if a != HOST and not a.startswith("-")))
def test_every_remote_command_uses_the_saved_login(sent, args):
    CredentialStore().put(HOST, "alice", "alice-secret")
    result = CliRunner().invoke(app, args)
    assert sent == [(f"https://{HOST}", "alice", "alice-secret")]
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"used the credentials saved for {HOST} as alice" in text
    assert f"run `dockyard login {HOST} -u alice` again" in text


def test_flags_beat_the_saved_login(sent):
    CredentialStore().put(HOST, "alice", "alice-secret")
    CliRunner().invoke(app, ["admin", "projects", "-r", HOST, "-u", "bob", "-p", "bob-secret", "list"])
    CliRunner().invoke(app, ["admin", "projects", "-r", HOST, "--plain-http", "-u", "alice", "--password-stdin", "list"],
                       input="typed\n")
    assert sent == [(f"https://{HOST}", "bob", "bob-secret"), (f"http://{HOST}", "alice", "typed")]


def test_a_saved_password_is_never_sent_under_another_name(sent):
    CredentialStore().put(HOST, "alice", "alice-secret")
    result = CliRunner().invoke(app, ["admin", "projects", "-r", HOST, "-u", "bob", "list"])
    assert result.exit_code == 1
    assert sent == []
    text = " ".join(result.output.split())
    assert f"no password for bob: the credentials saved for {HOST} are alice's" in text


def test_loopback_defaults_to_plain_http_and_anonymous_without_a_login(sent):
    result = CliRunner().invoke(app, ["admin", "projects", "-r", "127.0.0.1:5000", "list"])
    assert sent == [("http://127.0.0.1:5000", None, None)]
    assert result.exit_code == 1
    assert "run `dockyard login`" in " ".join(result.output.split())
