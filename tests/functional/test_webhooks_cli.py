"""`dockyard webhooks …` and `dockyard events …` against the in-process app (the CLI's client is
routed to the ASGI app; the webhook receiver is test_webhooks' mock). SQLite only: the API is
covered on both databases by test_webhooks.py and test_events.py."""

from __future__ import annotations

import json
from pathlib import Path

import anyio.to_thread
import pytest
from typer.testing import CliRunner

from dockyard.cli import app as cli_app

from .governance_helpers import route_cli_to_app
from .test_webhooks import ADMIN, Env, _open


@pytest.fixture
async def env(tmp_path: Path):
    async with await _open(tmp_path) as e:
        yield e


@pytest.fixture
def cli(env: Env, monkeypatch, tmp_path):
    """`await cli("webhooks", "list")` → click Result, as admin."""
    route_cli_to_app(monkeypatch, env.app)
    runner = CliRunner()
    environ = {"COLUMNS": "200", "NO_COLOR": "1", "DOCKYARD_URL": "http://registry.test",
               "DOCKYARD_USERNAME": ADMIN[0], "DOCKYARD_PASSWORD": ADMIN[1],
               "DOCKYARD_CREDENTIALS_FILE": str(tmp_path / "credentials.json"), "DOCKER_CONFIG": str(tmp_path / "docker")}

    async def run(*args: str, anonymous: bool = False):
        variables = {**environ, "DOCKYARD_USERNAME": None, "DOCKYARD_PASSWORD": None} if anonymous else environ
        return await anyio.to_thread.run_sync(lambda: runner.invoke(cli_app, list(args), env=variables))

    return run


async def test_ping_exits_1_when_the_receiver_failed_with_and_without_json(env: Env, cli):
    await env.project("acme")
    hook = await env.hook("acme")
    env.receiver.statuses = [500, 500]
    plain = await cli("webhooks", "ping", str(hook["id"]), "--project", "acme")
    assert plain.exit_code == 1, plain.output
    as_json = await cli("webhooks", "ping", str(hook["id"]), "--project", "acme", "--json")
    assert as_json.exit_code == 1, as_json.output
    assert json.loads(as_json.stdout)["state"] != "succeeded"
    good = await cli("webhooks", "ping", str(hook["id"]), "--project", "acme", "--json")
    assert good.exit_code == 0 and json.loads(good.stdout)["state"] == "succeeded", good.output


async def test_bad_enumerated_options_exit_2_before_anything_is_sent(env: Env, cli):
    await env.project("acme")
    for args in (
        ("webhooks", "create", "https://hooks.example/in", "--project", "acme", "--format", "teams"),
        ("webhooks", "create", "https://hooks.example/in", "--project", "acme", "--event", "artifact.exploded"),
        ("webhooks", "deliveries", "1", "--project", "acme", "--state", "lost"),
        ("events", "tail", "--project", "acme", "--type", "artefact"),
    ):
        result = await cli(*args)
        assert result.exit_code == 2, (args, result.output)
    r = await env.api.get("/api/v1/projects/acme/webhooks")
    assert r.json() == []  # nothing was created
    created = await cli("webhooks", "create", "https://hooks.example/in", "--project", "acme", "--format", "slack",
                        "--event", "artifact", "--json")
    assert created.exit_code == 0 and json.loads(created.stdout)["format"] == "slack", created.output


async def test_deliveries_with_attempts_labels_each_table_on_stdout(env: Env, cli):
    await env.project("acme")
    hook = await env.hook("acme")
    env.event("artifact.pushed", "acme/app")
    env.event("artifact.pushed", "acme/lib")
    await env.pump(lambda: len(env.deliveries()) == 2 and all(d.state == "succeeded" for d in env.deliveries()))
    result = await cli("webhooks", "deliveries", str(hook["id"]), "--project", "acme", "--attempts")
    assert result.exit_code == 0, result.output
    ids = [d.id for d in env.deliveries()]
    labels = [line for line in result.stdout.splitlines() if line.startswith("delivery ")]
    assert labels == [f"delivery {i}:" for i in sorted(ids, reverse=True)]
    assert "delivery " not in result.stderr


async def test_connection_options_are_taken_after_the_subcommand_too(env: Env, cli):
    """`dockyard events tail -r HOST -u USER …` (docs/cli.md): moved before the subcommand."""
    await env.project("acme")
    anonymous = await cli("events", "tail", "--project", "acme", "--json", anonymous=True)
    assert anonymous.exit_code == 1 and "401" in anonymous.output
    after = await cli("events", "tail", "--project", "acme", "-r", "registry.test", "-u", ADMIN[0], "-p", ADMIN[1],
                      "--json", anonymous=True)
    assert after.exit_code == 0, after.output
    assert [json.loads(line)["type"] for line in after.stdout.splitlines()] == ["project.created"]
    listed = await cli("webhooks", "list", "--username", ADMIN[0], "--project", "acme", f"--password={ADMIN[1]}",
                       "--json", anonymous=True)
    assert listed.exit_code == 0 and json.loads(listed.stdout) == [], listed.output
    # Before the subcommand, as ever.
    before = await cli("webhooks", "-u", ADMIN[0], "-p", ADMIN[1], "list", "--project", "acme", anonymous=True)
    assert before.exit_code == 0, before.output
