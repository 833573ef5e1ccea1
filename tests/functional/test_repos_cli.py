"""`dockyard repos …`, `dockyard tags …`, `dockyard admin projects delete --force` and `dockyard gc
--grace-seconds` against the in-process app (the CLI's client is routed to the ASGI app). SQLite
(the last_push listing also on PostgreSQL): the API underneath is covered on both databases by test_repo_lifecycle.py."""

from __future__ import annotations

import json
from pathlib import Path

import anyio.to_thread
import pytest
from typer.testing import CliRunner

from dockyard.cli import app as cli_app
from dockyard.domain.manifests import OCI_MANIFEST

from .governance_helpers import route_cli_to_app
from .test_repo_lifecycle import ADMIN, later, make_project, make_user, open_registry, repo_names


@pytest.fixture
async def reg(request, tmp_path: Path, database_url_for):
    """SQLite, unless a test asks for `postgresql` (indirect parametrization)."""
    database = getattr(request, "param", "sqlite")
    async with open_registry(tmp_path, None if database == "sqlite" else database_url_for(database)) as registry:
        yield registry


@pytest.fixture
def cli(reg, monkeypatch, tmp_path):
    """`await cli("repos", "ls")` → click Result, as admin (or as `user`, (name, password))."""
    route_cli_to_app(monkeypatch, reg.app)
    runner = CliRunner()
    environ = {"COLUMNS": "200", "NO_COLOR": "1", "DOCKYARD_URL": "http://registry.test",
               "DOCKYARD_USERNAME": ADMIN[0], "DOCKYARD_PASSWORD": ADMIN[1],
               "DOCKYARD_CREDENTIALS_FILE": str(tmp_path / "credentials.json"), "DOCKER_CONFIG": str(tmp_path / "docker")}

    async def run(*args: str, user: tuple[str, str] | None = None, stdin: str | None = None):
        variables = {**environ, "DOCKYARD_USERNAME": user[0], "DOCKYARD_PASSWORD": user[1]} if user else environ
        return await anyio.to_thread.run_sync(lambda: runner.invoke(cli_app, list(args), env=variables, input=stdin))

    return run


async def test_repos_ls_and_tags_ls_print_tables_and_json(reg, cli):
    await make_project(reg, "team")
    digest, _ = await reg.push_image("team/app", "v1", seed=1)
    await reg.push_image("team/app", "v2", seed=2)
    await reg.push_image("team/web", "v1", seed=3)

    table = await cli("repos", "ls", "team", "--sort", "-tags")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()  # not a terminal: tab-separated values, header first (docs/cli.md)
    assert lines[0].split("\t")[:2] == ["name", "tag_count"]
    assert [line.split("\t")[0] for line in lines[1:]] == ["team/app", "team/web"] and lines[1].split("\t")[1] == "2"
    as_json = await cli("repos", "ls", "--json")
    assert [(r["name"], r["tag_count"]) for r in json.loads(as_json.stdout)] == [("team/app", 2), ("team/web", 1)]

    tags = await cli("tags", "ls", "team/app", "--json")
    assert tags.exit_code == 0, tags.output
    rows = json.loads(tags.stdout)
    assert [(t["name"], t["scan_verdict"], t["signed"]) for t in rows] == [("v1", "unscanned", False), ("v2", "unscanned", False)]
    assert rows[0]["digest"] == digest
    text = await cli("tags", "ls", "team/app")
    assert digest in text.stdout and "unscanned" in text.stdout  # full digests: never cut to the terminal width

    missing = await cli("tags", "ls", "team/nope")
    assert missing.exit_code == 1 and "NAME_UNKNOWN" in missing.output


@pytest.mark.parametrize("reg", ["sqlite", "postgresql"], indirect=True)
async def test_last_push_ignores_the_sbom_the_scanner_attached(reg, cli):
    """Issue 15: a scan on pull attached its SBOM referrer and `last_push` became the scan's finish time. The
    registry's own referrer (the one the scan report records for its subject) is not a push; a user's is."""
    await make_project(reg, "team")
    digest, body = await reg.push_image("team/app", "v1", seed=1)

    async def last_push() -> str:
        result = await cli("repos", "ls", "team", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)[0]["last_push"]

    pushed = await last_push()
    later(reg, 3600)  # the referrer below is created an hour later
    subject = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)}
    sbom, _ = await reg.push_image("team/app", None, seed=2, extra={"artifactType": "application/spdx+json", "subject": subject})
    assert await last_push() > pushed  # unrecorded: anyone's referrer is a push
    reg.services.scans.reports.save(digest, "builtin", status="ok", findings=[], sbom_digest=sbom)
    assert await last_push() == pushed


async def test_tags_retag_and_delete(reg, cli):
    await make_project(reg, "team")
    digest, _ = await reg.push_image("team/app", "v1", seed=1)
    retagged = await cli("tags", "retag", "team/app", "v1", "stable")
    assert retagged.exit_code == 0, retagged.output
    assert reg.scalar("SELECT COUNT(*) FROM tags WHERE name = 'stable'") == 1
    assert f"team/app:stable -> {digest}" in retagged.output
    unknown = await cli("tags", "retag", "team/app", "nope", "x")
    assert unknown.exit_code == 1 and "tag nope is not in repository team/app" in unknown.output

    refused = await cli("tags", "delete", "team/app", "stable", stdin="n\n")
    assert refused.exit_code == 1 and reg.count("tags") == 2
    deleted = await cli("tags", "delete", "team/app", "stable", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert [r[0] for r in reg.sql("SELECT name FROM tags")] == ["v1"]


async def test_repos_delete_refuses_tags_without_force_and_honours_immutable_rules(reg, cli):
    await make_project(reg, "team")
    await reg.push_image("team/app", "v1", seed=1)
    r = await reg.client.post("/api/v1/projects/team/tag-rules", json={"kind": "immutable", "tag_pattern": "v*"})
    assert r.status_code == 201, r.text

    no_force = await cli("repos", "delete", "team/app", "--yes")
    assert no_force.exit_code == 1 and "--force" in no_force.output
    immutable = await cli("repos", "delete", "team/app", "--force", "--yes")
    assert immutable.exit_code == 1 and "DENIED" in immutable.output and "immutable" in immutable.output
    assert repo_names(reg) == ["team/app"]
    glass = await cli("repos", "delete", "team/app", "--force", "--break-glass-reason", "CVE rebuild", "--yes", "--json")
    assert glass.exit_code == 0, glass.output
    assert json.loads(glass.stdout) == {"repository": "team/app", "manifests": 1, "tags": 1, "overridden": ["v1"]}
    assert repo_names(reg) == []


async def test_project_delete_force_is_confirmed_and_admin_only(reg, cli):
    await make_project(reg, "scratch")
    await reg.push_image("scratch/app", "v1", seed=1)
    owner = await make_user(reg, "sam", "scratch", role="admin")

    plain = await cli("admin", "projects", "delete", "scratch", "--yes")
    assert plain.exit_code == 1 and "--force" in plain.output
    unconfirmed = await cli("admin", "projects", "delete", "scratch", "--force", stdin="")
    assert unconfirmed.exit_code != 0 and repo_names(reg) == ["scratch/app"]
    not_admin = await cli("admin", "projects", "delete", "scratch", "--force", "--yes", user=owner)
    assert not_admin.exit_code == 1 and "administrator" in not_admin.output
    done = await cli("admin", "projects", "delete", "scratch", "--force", stdin="y\n")
    assert done.exit_code == 0, done.output
    assert repo_names(reg) == [] and reg.count("projects", "name = 'scratch'") == 0


async def test_gc_reports_the_grace_period_and_takes_grace_seconds(reg, cli):
    await make_project(reg, "team")
    digest, _ = await reg.push_image("team/app", "v1", seed=1)
    assert (await reg.client.delete(f"/v2/team/app/manifests/{digest}")).status_code == 202

    now = await cli("gc")
    assert now.exit_code == 0, now.output
    assert "inside the grace period" in now.stdout and "reclaimable at" in now.stdout
    too_short = await cli("gc", "--grace-seconds", "59")
    assert too_short.exit_code == 1 and "at least 600" in too_short.output
    later(reg)
    result = await cli("gc", "--grace-seconds", "600", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{"):])
    assert data["grace_seconds"] == 600 and data["deleted"] == 2 and data["in_grace"] == 0
