"""`dockyard security …` and `dockyard scan` against the in-process app: the CLI's `Remote` client
is pointed at the ASGI app (as in test_promotion.py's CLI test); scans run on the app's own worker
with real syft and the OSV fixture advisories. SQLite only: the API itself is covered on both
databases by test_security_gates.py."""

from __future__ import annotations

import json
from pathlib import Path

import anyio.from_thread
import anyio.to_thread
import pytest
from typer.testing import CliRunner

from dockyard.cli import app as cli_app
from dockyard.cli.security import split_image_ref
from dockyard.client.credentials import CredentialStore
from dockyard.scanning.vulndb import VulnDB
from dockyard.signing.cosign_keys import fingerprint, generate_private_key, public_key_pem
from tests.support.scan_images import FIXED, LOG4SHELL, VULNERABLE, java_app

from .governance_helpers import route_cli_to_app, ADMIN, env  # noqa: F401
from .helpers import OCI_MANIFEST

OSV = Path(__file__).resolve().parents[1] / "fixtures" / "osv"

sqlite_only = pytest.mark.parametrize("env", ["sqlite"], indirect=True)


@pytest.fixture
async def cli(env, monkeypatch, tmp_path):
    """`await cli("security", "show", "prod")` → click Result; runs as admin unless `user=` is given."""
    await env.project("prod")
    app = env.reg.app

    route_cli_to_app(monkeypatch, app)
    runner = CliRunner()
    variables = {"COLUMNS": "200", "NO_COLOR": "1", "DOCKYARD_URL": "http://registry.test",
                 "DOCKYARD_CREDENTIALS_FILE": str(tmp_path / "credentials.json"), "DOCKER_CONFIG": str(tmp_path / "docker")}

    async def run(*args: str, user: tuple[str, str] | None = ADMIN):
        name, password = user or (None, None)
        account = {"DOCKYARD_USERNAME": name, "DOCKYARD_PASSWORD": password}
        environ = {**variables, **account}
        return await anyio.to_thread.run_sync(lambda: runner.invoke(cli_app, list(args), env=environ))

    return run


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def as_json(result):
    return json.loads(ok(result))


@sqlite_only
async def test_policy_set_and_show_round_trip(env, cli):
    policy = as_json(await cli("security", "set", "prod", "--auto-scan", "--block-severity", "HIGH", "--unscanned", "wait",
                               "--wait-seconds", "30", "--require-signature", "--promotion-max-severity", "critical", "--json"))
    assert policy == {"project": "prod", "auto_scan": True, "scanner": "builtin", "block_severity": "high", "unscanned": "wait",
                      "unscanned_wait_seconds": 30, "require_signature": True, "promotion_max_severity": "critical",
                      "promotion_require_signature": False}
    assert as_json(await cli("security", "show", "prod", "--json")) == policy
    # Only the options given change; "none" turns a gate off (null).
    changed = as_json(await cli("security", "--json", "set", "prod", "--block-severity", "none", "--no-require-signature"))
    assert changed == {**policy, "block_severity": None, "require_signature": False}
    table = ok(await cli("security", "show", "prod"))
    # not a terminal: tab-separated, the title as a comment, then the header; values whole
    assert table.splitlines()[:2] == ["# security policy of project prod", "setting\tvalue"] and "promotion_max_severity\tcritical" in table.splitlines()

    bad = await cli("security", "set", "prod", "--block-severity", "severe")
    assert bad.exit_code == 2
    assert "error: --block-severity 'severe': expected one of low, medium, high, critical, none" in bad.output
    nothing = await cli("security", "set", "prod")
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output
    # Server-side refusals: one line with the OCI code, exit 1.
    dev = await env.user("dev1", prod="developer")
    denied = await cli("security", "set", "prod", "--auto-scan", user=dev)
    assert denied.exit_code == 1 and "error: HTTP 403 DENIED" in denied.output
    unknown = await cli("security", "set", "prod", "--scanner", "nope")
    assert unknown.exit_code == 1 and "NOT_FOUND" in unknown.output
    assert as_json(await cli("security", "show", "prod", "--json", user=dev))["scanner"] == "builtin"


@sqlite_only
async def test_block_severity_alone_is_refused_with_a_hint(env, cli):
    """`--block-severity` without `--unscanned` on a project without a gate would leave unscanned images
    passing; the server refuses it and the CLI prints its hint, then the explicit choice is accepted."""
    refused = await cli("security", "set", "prod", "--block-severity", "critical")
    assert refused.exit_code == 1, refused.output
    assert "INVALID_REQUEST" in refused.output and "--unscanned block" in refused.output
    assert as_json(await cli("security", "show", "prod", "--json"))["block_severity"] is None
    chosen = as_json(await cli("security", "set", "prod", "--block-severity", "critical", "--unscanned", "block", "--json"))
    assert chosen["block_severity"] == "critical" and chosen["unscanned"] == "block"


@sqlite_only
async def test_allowlist_with_expiry(env, cli):
    entry = as_json(await cli("security", "allow", "prod", LOG4SHELL, "--expires", "2099-01-31", "--reason", "mitigated by WAF", "--json"))
    assert entry["vulnerability"] == LOG4SHELL and entry["reason"] == "mitigated by WAF" and entry["active"] is True
    assert entry["expires_at"].startswith("2099-01-31T00:00:00")
    as_json(await cli("security", "allow", "prod", "GHSA-aaaa-bbbb-cccc", "--expires", "2099-06-01T12:30:00+02:00", "--json"))
    listed = {e["vulnerability"]: e for e in as_json(await cli("security", "allowlist", "prod", "--json"))}
    assert set(listed) == {LOG4SHELL, "GHSA-aaaa-bbbb-cccc"}
    assert listed["GHSA-aaaa-bbbb-cccc"]["expires_at"].startswith("2099-06-01T10:30:00")
    assert listed[LOG4SHELL]["created_by"] == "admin" and all(e["active"] for e in listed.values())
    table = ok(await cli("security", "allowlist", "prod"))
    assert LOG4SHELL in table and "mitigated by WAF" in table

    bad = await cli("security", "allow", "prod", LOG4SHELL, "--expires", "next tuesday")
    assert bad.exit_code == 2 and "--expires 'next tuesday'" in bad.output
    past = await cli("security", "allow", "prod", LOG4SHELL, "--expires", "2020-01-01")
    assert past.exit_code == 1 and "INVALID_REQUEST" in past.output

    removed = await cli("security", "disallow", "prod", "GHSA-aaaa-bbbb-cccc")
    assert removed.exit_code == 0 and "removed GHSA-aaaa-bbbb-cccc from the allowlist of project prod" in removed.output
    assert [e["vulnerability"] for e in as_json(await cli("security", "allowlist", "prod", "--json"))] == [LOG4SHELL]


@sqlite_only
async def test_trusted_keys(env, cli, tmp_path):
    key = generate_private_key()
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(public_key_pem(key))
    added = as_json(await cli("security", "trust-key", "prod", "release", "--key", str(pub), "--json"))
    assert added["name"] == "release" and added["fingerprint"] == fingerprint(key.public_key())
    keys = as_json(await cli("security", "keys", "prod", "--json"))
    assert [(k["name"], k["fingerprint"]) for k in keys] == [("release", added["fingerprint"])]
    assert "BEGIN PUBLIC KEY" in keys[0]["public_key"]
    assert added["fingerprint"] in ok(await cli("security", "keys", "prod"))
    # Without --username: the credentials `dockyard login` saved for the registry.
    anonymous = await cli("security", "-r", "registry.test", "keys", "prod", user=None)
    assert anonymous.exit_code == 1 and "UNAUTHORIZED" in anonymous.output
    CredentialStore(tmp_path / "credentials.json").put("registry.test", *ADMIN)
    assert added["fingerprint"] in ok(await cli("security", "-r", "registry.test", "keys", "prod", user=None))

    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    bad = await cli("security", "trust-key", "prod", "other", "--key", str(junk))
    assert bad.exit_code == 2 and "not a PEM public key" in bad.output
    missing = await cli("security", "trust-key", "prod", "other", "--key", str(tmp_path / "nope.pub"))
    assert missing.exit_code == 2 and "cannot read" in missing.output
    taken = await cli("security", "trust-key", "prod", "release", "--key", str(pub))
    assert taken.exit_code == 1 and "CONFLICT" in taken.output

    gone = await cli("security", "untrust-key", "prod", "release")
    assert gone.exit_code == 0 and "no longer trusts key release" in gone.output
    assert as_json(await cli("security", "keys", "prod", "--json")) == []
    again = await cli("security", "untrust-key", "prod", "release")
    assert again.exit_code == 1 and "NOT_FOUND" in again.output


async def _push(env, repo: str, tag: str, image) -> str:
    for data in image.blobs.values():
        await env.reg.push_blob(repo, data)
    return await env.reg.push_manifest(repo, tag, image.manifest, OCI_MANIFEST)


@sqlite_only
async def test_scan_wait_prints_findings(env, cli, tmp_path):
    VulnDB(env.services.db).import_path(OSV)
    digest = await _push(env, "prod/app", "bad", java_app(tmp_path / "bad", VULNERABLE))
    await _push(env, "prod/app", "good", java_app(tmp_path / "good", FIXED))

    # Not scanned yet (scan on push is off): --report-only says so and exits 1, without queueing a scan.
    pending = await cli("scan", "prod/app:bad", "--report-only")
    assert pending.exit_code == 1 and "no scan verdict yet" in pending.output

    result = await cli("scan", "prod/app:bad", "--wait", "--timeout", "120")
    text = ok(result)
    assert "1 Critical" in text and LOG4SHELL in text and "Critical" in text
    assert "scan of prod/app:bad queued (job " in result.stderr and "queued (job" not in text  # issue 15: the job id, on stderr
    row = next(line for line in text.splitlines() if LOG4SHELL in line)
    assert "org.apache.logging.log4j:log4j-core" in row and VULNERABLE in row and "2.15.0" in row and "sha256:" in row

    # With a host in REF the registry comes from it; --json prints the status document.
    status = as_json(await cli("scan", f"registry.test/prod/app@{digest}", "--report-only", "--json"))
    assert status["digest"] == digest and status["scanned"] is True and status["in_progress"] is False
    assert status["summary"]["Critical"] == 1

    # A second --wait rescans (a new report, so no "no new report" warning).
    again = await cli("scan", "prod/app:bad", "--wait", "--timeout", "120")
    assert LOG4SHELL in ok(again) and "warning" not in again.output

    queued = await cli("scan", "prod/app:good", "--json")
    assert queued.exit_code == 0 and isinstance(json.loads(queued.stdout)["job_id"], int)
    missing = await cli("scan", "prod/app:nope", "--wait")
    assert missing.exit_code == 1 and "MANIFEST_UNKNOWN" in missing.output


def test_image_references():
    assert split_image_ref("prod/app:1.0") == (None, "prod/app", "1.0")
    assert split_image_ref("prod/team/app") == (None, "prod/team/app", "latest")
    assert split_image_ref("localhost:5000/prod/app@sha256:" + "a" * 64) == ("localhost:5000", "prod/app", "sha256:" + "a" * 64)
    assert split_image_ref("registry.example.com/prod/app:v2") == ("registry.example.com", "prod/app", "v2")
