"""Issue 19 items 3, 5, 6 and 8d through the app: hostile images built here and scanned with real
syft. Item 3: terminal escapes in a dpkg status reach neither `dockyard scan --wait` nor the log
raw. Item 5: an unparseable version makes the report incomplete, and the gates say so. Item 6: an
index is one job per platform image, claimed fairly across projects. Item 8d: a pull-only client
is told a short reason for a failed scan; the API keeps the details."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
from typer.testing import CliRunner

from dockyard.app import create_app
from dockyard.cli import app as cli_app
from dockyard.policy.security_policy import BUILTIN_SCANNER
from dockyard.safe_text import SafeFormatter
from dockyard.scanning.limits import MiB
from dockyard.scanning.service import SCAN_JOB
from dockyard.scanning.vulndb import VulnDB
from dockyard.settings import Settings
from tests.support import hostile_images
from tests.support.scan_images import FIXED, java_app

from .governance_helpers import ADMIN, BASE, PASSWORD, Env, error, route_cli_to_app
from .helpers import OCI_INDEX, OCI_MANIFEST, Registry, descriptor, dumps

DEPLOY = ("deploy", PASSWORD)  # a guest: pull only, so the gates hold it
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


async def _env(tmp_path: Path, url: str | None, **settings):
    app = create_app(Settings(data_dir=tmp_path / "data", admin_password=ADMIN[1], database_url=url, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE, auth=ADMIN) as api:
            env = Env(Registry(app=app, client=api, driver="filesystem", data_dir=tmp_path / "data"), api)
            await env.project("prod")
            await env.user("deploy", prod="guest")
            yield env


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(request, tmp_path, database_url_for):
    """The app's own worker runs scans (as in production)."""
    async for e in _env(tmp_path, database_url_for(request.param)):
        yield e


@pytest.fixture
async def manual(tmp_path, database_url_for):
    """No background worker: the test claims and runs jobs itself (SQLite)."""
    async for e in _env(tmp_path, database_url_for("sqlite"), worker_enabled=False):
        yield e


async def push(env, repo: str, tag: str, image) -> str:
    for data in image.blobs.values():
        await env.reg.push_blob(repo, data)
    return await env.reg.push_manifest(repo, tag, image.manifest, OCI_MANIFEST)


async def gate(env, **policy) -> None:
    r = await env.api.patch("/api/v1/projects/prod/security", json=policy)
    assert r.status_code == 200, r.text


async def scanned(env, repo: str, ref: str) -> dict:
    """Request a scan and run it to completion (on the app's worker or, without one, here)."""
    r = await env.api.post(f"/api/v1/repositories/{repo}/artifacts/{ref}/scan", headers={"X-Dockyard-Client": "test"})
    assert r.status_code == 202, r.text
    if not env.services.settings.worker_enabled:
        await anyio.to_thread.run_sync(env.services.worker.run_pending)
    for _ in range(1200):
        status = (await env.api.get(f"/api/v1/repositories/{repo}/artifacts/{ref}/scan")).json()
        if not status["in_progress"] and all(i["report"] for i in status["images"]):
            return status
        await anyio.sleep(0.1)
    raise AssertionError(f"{repo}:{ref} was not scanned: {status}")


def import_hostile_advisory(env, tmp_path: Path) -> None:
    VulnDB(env.services.db).import_path(hostile_images.hostile_advisory(tmp_path / "osv").parent)


# -- item 5 -----------------------------------------------------------------------------------------


async def test_item5_unparseable_version_no_longer_passes_block_critical(env, tmp_path):
    import_hostile_advisory(env, tmp_path)
    await gate(env, block_severity="critical", unscanned="block")
    digest = await push(env, "prod/app", "1", hostile_images.unparseable_version(tmp_path / "img"))
    status = await scanned(env, "prod/app", "1")
    report = status["images"][0]["report"]
    # The matcher's error is in the report, not dropped: status ok, no findings, but incomplete.
    assert report["status"] == "ok" and report["findings"] == []
    assert report["incomplete"] is True and report["match_error_count"] == 1
    assert "hostilepkg 1.0-1!" in report["match_errors"][0] and "not evaluated" in report["match_errors"][0]
    assert status["incomplete"] is True and status["incomplete_policy"] == "block"
    message = error(await env.api.get("/v2/prod/app/manifests/1", auth=DEPLOY), 403, "DENIED")["message"]
    assert message.startswith(f"image {digest} cannot be pulled: its scan is incomplete (1 package(s) or advisories")
    assert "scan_incomplete_policy is block" in message
    # Promotion gates read the same report.
    await env.project("release")
    r = await env.api.patch("/api/v1/projects/release/security", json={"promotion_max_severity": "critical"})
    assert r.status_code == 200, r.text
    scan_gate = env.services.promotion_gates[0]
    verdict = await anyio.to_thread.run_sync(scan_gate.check, "prod/app", digest, OCI_MANIFEST, "release/app")
    assert not verdict.allowed and "incomplete" in verdict.reason


async def test_item5_incomplete_policy_warn_lets_the_findings_decide(tmp_path, database_url_for):
    async for env in _env(tmp_path, database_url_for("sqlite"), scan_incomplete_policy="warn"):
        import_hostile_advisory(env, tmp_path)
        await gate(env, block_severity="critical", unscanned="block")
        digest = await push(env, "prod/app", "1", hostile_images.unparseable_version(tmp_path / "img"))
        status = await scanned(env, "prod/app", "1")
        assert status["incomplete"] is True and status["incomplete_policy"] == "warn"
        r = await env.api.get("/v2/prod/app/manifests/1", auth=DEPLOY)
        assert r.status_code == 200 and r.headers["docker-content-digest"] == digest


async def test_item5_rescan_keeps_the_matcher_errors(manual, tmp_path):
    env = manual
    import_hostile_advisory(env, tmp_path)
    digest = await push(env, "prod/app", "1", hostile_images.unparseable_version(tmp_path / "img"))
    await scanned(env, "prod/app", "1")
    scans = env.services.scans
    await anyio.to_thread.run_sync(scans.handle_rescan, {"reason": "test"}, lambda _: None)
    report = scans.reports.get(digest, BUILTIN_SCANNER)
    assert report.incomplete and report.match_error_count == 1


# -- item 8d ----------------------------------------------------------------------------------------


async def test_item8_short_refusal_reason_for_a_failed_scan(tmp_path, database_url_for):
    """An over-limit image and a crashing syft: the guest's refusal names the limit or says the
    image could not be catalogued, nothing more; the API's report keeps the details."""
    crash = tmp_path / "fake-syft"
    crash.write_text('#!/bin/sh\necho "panic: runtime error at $TMPDIR/internal/cataloger.go:42" >&2\nexit 2\n')
    crash.chmod(0o755)
    async for env in _env(tmp_path, database_url_for("sqlite"), scan_max_unpacked_bytes=16 * MiB):
        await gate(env, block_severity="critical", unscanned="block")
        bomb = await push(env, "prod/app", "bomb", hostile_images.gzip_bomb(tmp_path / "bomb", 64 * MiB))
        status = await scanned(env, "prod/app", "bomb")
        report = status["images"][0]["report"]
        assert report["status"] == "failed" and "ScanLimitExceeded" in report["error"]  # details: for those who read scans
        assert report["reason"] == "the image exceeds the registry's scan limit scan_max_unpacked_bytes"
        message = error(await env.api.get("/v2/prod/app/manifests/bomb", auth=DEPLOY), 403, "DENIED")["message"]
        assert message == (
            f"image {bomb} cannot be pulled: its scan failed (the image exceeds the registry's scan limit "
            "scan_max_unpacked_bytes); policy block-unscanned of project prod"
        )

        env.services.scans.syft_path = str(crash)
        broken = await push(env, "prod/app", "broken", java_app(tmp_path / "broken", FIXED))
        status = await scanned(env, "prod/app", "broken")
        report = status["images"][0]["report"]
        assert "panic: runtime error" in report["error"] and str(tmp_path) not in report["error"]
        assert "<scan-dir>" in report["error"]  # the server's temp path is redacted even in the API
        message = error(await env.api.get("/v2/prod/app/manifests/broken", auth=DEPLOY), 403, "DENIED")["message"]
        assert message == (
            f"image {broken} cannot be pulled: its scan failed (the image could not be catalogued); "
            "policy block-unscanned of project prod"
        )
        assert "/" not in message.split("failed (")[1] and "panic" not in message


# -- item 3 -----------------------------------------------------------------------------------------


async def test_item3_escape_sequences_reach_neither_the_cli_nor_the_log_raw(manual, tmp_path, monkeypatch):
    env = manual
    import_hostile_advisory(env, tmp_path)
    digest = await push(env, "prod/app", "1", hostile_images.escape_sequences(tmp_path / "img"))
    # The server's log handler, as configure_logging installs it.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        status = await scanned(env, "prod/app", "1")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    report = status["images"][0]["report"]
    # The hostile text is stored as it is (the API is JSON, which escapes it) ...
    assert report["findings"][0]["package"] == f"evil{hostile_images.WINDOW_TITLE}pkg"
    assert report["match_error_count"] == 1 and hostile_images.C1_CSI in report["match_errors"][0]
    log_text = stream.getvalue()
    assert "incomplete" in log_text and "\\x9b2J" in log_text  # the log line names it, escaped
    assert not RAW_CONTROL.search(log_text.replace("\n", "")), repr(log_text)

    # ... and `dockyard scan --wait` prints it escaped: no ESC, BEL or C1 on the terminal.
    route_cli_to_app(monkeypatch, env.reg.app)
    environ = {"COLUMNS": "250", "DOCKYARD_URL": "http://registry.test", "DOCKYARD_USERNAME": ADMIN[0],
               "DOCKYARD_PASSWORD": ADMIN[1], "DOCKYARD_CREDENTIALS_FILE": str(tmp_path / "creds.json"),
               "DOCKER_CONFIG": str(tmp_path / "docker")}

    def run_cli(*args: str):
        return CliRunner().invoke(cli_app, list(args), env=environ)

    # --report-only: the worker is not running here, so --wait would wait for nobody.
    result = await anyio.to_thread.run_sync(run_cli, "scan", f"prod/app@{digest}", "--report-only")
    output = result.output
    assert "DSA-9999-1" in output or "CVE-2099-0001" in output  # the finding row is there
    assert "evil\\x1b]0;pwned" in output and "1.0-1\\x1b[2J" in output  # shown escaped
    assert "link\\x1b]8;;https://evil.example/" in output and "0.9\\x9b2J" in output
    assert not RAW_CONTROL.search(output.replace("\n", "").replace("\t", "")), repr(output)
    assert result.exit_code == 1 and "incomplete" in output  # the report is incomplete (block)
    as_json = await anyio.to_thread.run_sync(run_cli, "scan", f"prod/app@{digest}", "--report-only", "--json")
    assert not RAW_CONTROL.search(as_json.stdout.replace("\n", "")) and "\\u001b]0;pwned" in as_json.stdout


# -- item 6 -----------------------------------------------------------------------------------------


def _index(*children: bytes) -> bytes:
    return dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, body, platform={"architecture": f"arch{n}", "os": "linux"})
                      for n, body in enumerate(children)],
    })  # fmt: skip


async def test_item6_an_index_is_one_job_per_platform_image_claimed_fairly(manual, tmp_path):
    env = manual
    await env.project("other")
    images = [java_app(tmp_path / f"p{n}", FIXED, marker=f"platform-{n}") for n in range(3)]
    for n, image in enumerate(images):
        await push(env, "prod/app", f"p{n}", image)
    index = await env.reg.push_manifest("prod/app", "multi", _index(*(i.manifest for i in images)), OCI_INDEX)
    scans, queue = env.services.scans, env.services.jobs
    parent = scans.request("prod/app", index, BUILTIN_SCANNER, force=True)
    # The index job only spawns one child job per platform image, and waits for them.
    job = queue.claim("test", [SCAN_JOB])
    assert job.id == parent
    result = await anyio.to_thread.run_sync(scans.handle_scan, job.payload, lambda _: None)
    queue.wait_for_children(job, "test", result)
    children = queue.children(parent)
    assert [c["payload"]["digest"] for c in children] == [i.digest for i in images]
    assert queue.get(parent)["state"] == "waiting"
    # Another project's first scan is claimed next, not after the index's images.
    other = await push(env, "other/app", "1", java_app(tmp_path / "other", FIXED, marker="other"))
    other_job = scans.request("other/app", other, BUILTIN_SCANNER)
    assert queue.claim("test", [SCAN_JOB]).id == other_job  # prod was served last (its index job)
    assert [queue.claim("test", [SCAN_JOB]).id for _ in children] == [c["id"] for c in children]
    assert scans.status("prod/app", index, BUILTIN_SCANNER)["in_progress"] is True
