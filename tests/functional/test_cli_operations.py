"""`dockyard quotas|jobs|scanners` and `dockyard admin robots update` against the in-process app (the CLI's
client is routed to the ASGI app), with nothing but a saved `dockyard login` for the connection."""

from __future__ import annotations

import json

import anyio.to_thread
import pytest
from typer.testing import CliRunner

from dockyard.cli import app as cli_app
from dockyard.client.credentials import CredentialStore, set_current_registry

from .governance_helpers import ADMIN, PASSWORD, env, route_cli_to_app  # noqa: F401

pytestmark = pytest.mark.parametrize("env", ["sqlite"], indirect=True)
HOST = "registry.test"


@pytest.fixture
async def cli(env, monkeypatch, tmp_path):
    """`await cli("quotas", "show", "team")`: as whoever `login` names (admin by default), saved like `dockyard login`."""
    route_cli_to_app(monkeypatch, env.reg.app)
    for name in ("DOCKYARD_URL", "DOCKYARD_USERNAME", "DOCKYARD_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    set_current_registry(f"https://{HOST}")  # no -r anywhere below: the last login's registry is the default

    async def run(*args: str, login: tuple[str, str] = ADMIN):
        CredentialStore().put(HOST, *login)
        return await anyio.to_thread.run_sync(lambda: CliRunner().invoke(cli_app, list(args)))

    return run


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


async def test_quotas_show_and_set(env, cli):
    await env.project("team")
    await env.user("dev", team="developer")
    shown = json.loads(ok(await cli("quotas", "show", "team", "--json")))
    assert shown == {"project": "team", "quota_bytes": None, "used_bytes": 0}
    assert json.loads(ok(await cli("quotas", "set", "team", "--limit", "10MiB", "--json")))["quota_bytes"] == 10 * 2**20
    table = ok(await cli("quotas", "show", "team"))
    assert table.splitlines() == ["project\tquota\tused\tquota_bytes\tused_bytes", "team\t10 MiB\t0 B\t10485760\t0"]
    assert json.loads(ok(await cli("quotas", "show", "team", "--json", login=("dev", PASSWORD))))["quota_bytes"] == 10 * 2**20
    denied = await cli("quotas", "set", "team", "--limit", "1G", login=("dev", PASSWORD))
    assert denied.exit_code == 1 and "HTTP 403 DENIED" in denied.output
    assert json.loads(ok(await cli("quotas", "set", "team", "--unlimited", "--json")))["quota_bytes"] is None
    bad = await cli("quotas", "set", "team", "--limit", "lots")
    assert bad.exit_code == 2 and "expected a size" in bad.output
    assert [e["detail"]["quota_bytes"] for e in await env.audit("quota.set")] == [None, 10 * 2**20]


async def test_jobs_list_show_and_logs(env, cli):
    await env.project("team")
    await env.reg.push_image("team/app", "1.0", seed=5)
    started = ok(await cli("gc", "--dry-run", "--no-wait"))
    job_id = int(started.strip())
    listed = json.loads(ok(await cli("jobs", "list", "--kind", "gc", "--json")))
    assert [j["id"] for j in listed] == [job_id] and listed[0]["payload"] == {"dry_run": True}
    env.services.worker.run_pending()  # the app's own worker: the job runs to its end, synchronously
    shown = json.loads(ok(await cli("jobs", "show", str(job_id), "--json")))
    assert shown["state"] == "succeeded" and shown["result"]["dry_run"] is True
    logs = ok(await cli("jobs", "logs", str(job_id))).splitlines()
    assert logs[0].endswith(f'created gc job {job_id} {{"dry_run": true}}')
    assert "started (attempt 1 of" in logs[1]
    result_line = next(line for line in logs if line.startswith("result: "))
    assert "candidates=" in result_line and "dry_run=true" in result_line
    assert logs[-1].endswith("succeeded")
    followed = await cli("jobs", "logs", str(job_id), "--follow", "--json")
    assert followed.exit_code == 0 and json.loads(followed.stdout)["state"] == "succeeded"
    missing = await cli("jobs", "show", "999999")
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output


async def test_scanners_list(env, cli):
    assert json.loads(ok(await cli("scanners", "list", "--json"))) == []
    env.services.scanners.add("trivy", "http://trivy-adapter.example:8080", "Bearer t0ken")
    listed = json.loads(ok(await cli("scanners", "list", "--json")))
    assert [(s["name"], s["url"], s["has_authorization"]) for s in listed] == [("trivy", "http://trivy-adapter.example:8080", True)]
    assert "t0ken" not in ok(await cli("scanners", "list"))
    ok(await cli("scanners", "remove", "trivy", "--yes"))
    assert json.loads(ok(await cli("scanners", "list", "--json"))) == []


async def test_scanners_show_builtin_describes_the_built_in_scanner(env, cli):
    """Issue 15: `builtin` is always available (docs, `security show`), so `show builtin` describes it, not 404."""
    info = json.loads(ok(await cli("scanners", "show", "builtin", "--json")))
    assert (info["name"], info["vendor"]) == ("builtin", "Dockyard")
    assert "application/vnd.oci.image.manifest.v1+json" in info["consumes"] and "application/spdx+json" in info["produces"]
    assert ok(await cli("scanners", "show", "builtin")).splitlines()[1].startswith("builtin\tDockyard\t")
    missing = await cli("scanners", "show", "trivy")
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output and "not registered" in missing.output


async def test_admin_robots_update(env, cli):
    await env.project("team")
    await env.user("alice", team="admin")
    alice = ("alice", PASSWORD)
    created = json.loads(ok(await cli("admin", "robots", "create", "ci", "--project", "team", "--action", "push",
                                      "--json", login=alice)))
    name = created["name"]
    updated = json.loads(ok(await cli("admin", "robots", "update", name, "--action", "pull", "--action", "delete",
                                      "--json", login=alice)))
    assert updated["permissions"] == [{"project": "team", "actions": ["delete", "pull"]}]
    [event] = await env.audit("robot.update")
    assert event["actor"] == "alice"
    assert event["detail"]["permissions"] == {"before": {"team": ["push"]}, "after": {"team": ["delete", "pull"]}}
    # a system robot takes --grant, and only an administrator may
    await env.project("other")
    sysbot = json.loads(ok(await cli("admin", "robots", "create", "mirror", "--grant", "team=pull", "--json")))["name"]
    refused = await cli("admin", "robots", "update", sysbot, "--grant", "team=pull,push", login=alice)
    assert refused.exit_code == 1 and "NOT_FOUND" in refused.output
    widened = json.loads(ok(await cli("admin", "robots", "update", sysbot, "--grant", "team=pull", "--grant", "other=push",
                                      "--json")))
    assert widened["permissions"] == [{"project": "other", "actions": ["push"]}, {"project": "team", "actions": ["pull"]}]
    nothing = await cli("admin", "robots", "update", name)
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output
