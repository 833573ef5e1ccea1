"""Scans and the pull gate end to end in-process: real syft, the real OSV fixture advisories, the
app's own background worker. Log4Shell (CVE-2021-44228, Critical) is the vulnerable case."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread
import pytest
from sqlalchemy import update

from dockyard.metadata.models import cve_allowlist
from dockyard.scanning.updates import run_update
from dockyard.scanning.vulndb import VulnDB
from tests.support.scan_images import FIXED, LOG4SHELL, VULNERABLE, java_app

from .governance_helpers import PASSWORD, env, error  # noqa: F401
from .helpers import OCI_MANIFEST
from .helpers import API_CLIENT

OSV = Path(__file__).resolve().parents[1] / "fixtures" / "osv"
# Pull gates hold accounts that cannot push (accounts that can push are let through, as in Harbor):
# every gated pull below is made by this guest.
DEPLOY = ("deploy", PASSWORD)
LOG4J_ADVISORY = "GHSA-jfh8-c2jp-5v3q"


def import_fixtures(env, *, without: set[str] = frozenset(), into: Path | None = None) -> None:
    if without:
        assert into is not None
        into.mkdir(parents=True, exist_ok=True)
        for f in OSV.glob("*.json"):
            if f.stem not in without:
                (into / f.name).write_bytes(f.read_bytes())
        VulnDB(env.services.db).import_path(into)
    else:
        VulnDB(env.services.db).import_path(OSV)


async def push_built(env, repo: str, tag: str, image) -> str:
    for data in image.blobs.values():
        await env.reg.push_blob(repo, data)
    return await env.reg.push_manifest(repo, tag, image.manifest, OCI_MANIFEST)


async def policy(env, project: str, **changes) -> dict:
    r = await env.api.patch(f"/api/v1/projects/{project}/security", json=changes)
    assert r.status_code == 200, r.text
    return r.json()


async def scan_status(env, repo: str, ref: str) -> dict:
    r = await env.api.get(f"/api/v1/repositories/{repo}/artifacts/{ref}/scan")
    assert r.status_code == 200, r.text
    return r.json()


async def wait_scanned(env, repo: str, ref: str, *, timeout: float = 120) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        status = await scan_status(env, repo, ref)
        if status["scanned"] and not status["in_progress"]:
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"{repo}:{ref} not scanned in {timeout} s: {status}")


@pytest.fixture
async def prod(env, tmp_path):
    await env.project("prod")
    await env.user("deploy", prod="guest")
    import_fixtures(env)
    bad = await push_built(env, "prod/app", "bad", java_app(tmp_path / "bad", VULNERABLE))
    good = await push_built(env, "prod/app", "good", java_app(tmp_path / "good", FIXED))
    return {"bad": bad, "good": good}


async def test_block_critical_with_unscanned_block(env, prod):
    await policy(env, "prod", block_severity="critical", unscanned="block")
    # Nothing is scanned yet (scan on push is off by default): refused, and a scan is queued.
    r = await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY)
    message = error(r, 403, "DENIED")["message"]
    assert "has not been scanned" in message and "policy block-unscanned of project prod" in message
    status = await wait_scanned(env, "prod/app", "bad")
    assert status["summary"]["Critical"] == 1
    finding = status["images"][0]["report"]["findings"][0]
    assert finding["id"] == LOG4J_ADVISORY and LOG4SHELL in finding["aliases"]
    assert finding["package"] == "org.apache.logging.log4j:log4j-core" and finding["installed_version"] == VULNERABLE
    assert finding["fixed_version"] == "2.15.0" and finding["severity"] == "Critical"

    r = await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY)
    message = error(r, 403, "DENIED")["message"]
    assert message == (
        f"image {prod['bad']} has 1 critical vulnerability ({LOG4SHELL}); policy block-critical of project prod"
    )
    # HEAD carries no content and stays allowed; by digest is gated like by tag.
    assert (await env.api.head("/v2/prod/app/manifests/bad", auth=DEPLOY)).status_code == 200
    error(await env.api.get(f"/v2/prod/app/manifests/{prod['bad']}", auth=DEPLOY), 403, "DENIED")

    await env.api.get("/v2/prod/app/manifests/good", auth=DEPLOY)  # queues its scan
    await wait_scanned(env, "prod/app", "good")
    r = await env.api.get("/v2/prod/app/manifests/good", auth=DEPLOY)
    assert r.status_code == 200 and r.headers["docker-content-digest"] == prod["good"]


async def test_allowlist_with_expiry(env, prod):
    await policy(env, "prod", block_severity="high", unscanned="block")
    await env.api.post(f"/api/v1/repositories/prod/app/artifacts/bad/scan")
    await wait_scanned(env, "prod/app", "bad")
    error(await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY), 403, "DENIED")

    r = await env.api.put(f"/api/v1/projects/prod/security/allowlist/{LOG4SHELL}", json={"reason": "mitigated by WAF"})
    assert r.status_code == 200, r.text
    assert (await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY)).status_code == 200

    # An expired entry is ignored, never silently honoured.
    with env.services.db.write() as conn:
        conn.execute(update(cve_allowlist).values(expires_at=datetime(2020, 1, 1, tzinfo=UTC)))
    env.services.security._changed()
    listed = (await env.api.get("/api/v1/projects/prod/security/allowlist")).json()
    assert listed[0]["vulnerability"] == LOG4SHELL and listed[0]["active"] is False
    error(await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY), 403, "DENIED")
    # A past expiry cannot be set through the API.
    r = await env.api.put(f"/api/v1/projects/prod/security/allowlist/{LOG4SHELL}", json={"expires_at": "2020-01-01T00:00:00Z"})
    error(r, 400, "INVALID_REQUEST")


async def test_unscanned_allow_passes_and_queues_a_scan(env, prod):
    await policy(env, "prod", block_severity="critical", unscanned="allow")
    r = await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY)
    assert r.status_code == 200  # explicit policy: unscanned images pass …
    await wait_scanned(env, "prod/app", "bad")  # … and the scan the pull queued lands
    error(await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY), 403, "DENIED")


async def test_unscanned_wait_holds_the_pull_until_the_verdict(env, prod):
    await policy(env, "prod", block_severity="critical", unscanned="wait", unscanned_wait_seconds=120)
    r = await env.api.get("/v2/prod/app/manifests/good", auth=DEPLOY)
    assert r.status_code == 200
    assert (await scan_status(env, "prod/app", "good"))["scanned"]
    r = await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY)
    assert "1 critical vulnerability" in error(r, 403, "DENIED")["message"]


async def test_scan_on_push_attaches_an_spdx_sbom_referrer(env, tmp_path):
    await env.project("team")
    await env.user("deploy", team="guest")
    import_fixtures(env)
    await policy(env, "team", auto_scan=True)
    digest = await push_built(env, "team/app", "1", java_app(tmp_path / "img", VULNERABLE))
    status = await wait_scanned(env, "team/app", "1")
    report = status["images"][0]["report"]
    assert report["package_count"] == 1 and report["sbom_digest"]
    r = await env.api.get(f"/v2/team/app/referrers/{digest}", auth=DEPLOY)
    referrers = r.json()["manifests"]
    assert [d["artifactType"] for d in referrers] == ["application/spdx+json"]
    assert referrers[0]["digest"] == report["sbom_digest"]
    sbom = await env.api.get("/api/v1/repositories/team/app/artifacts/1/sbom")
    assert sbom.status_code == 200 and sbom.headers["content-type"].startswith("application/spdx+json")
    doc = sbom.json()
    assert doc["spdxVersion"].startswith("SPDX-") and any(p["name"] == "log4j-core" for p in doc["packages"])
    # The SBOM artifact is not itself scanned, and pulling it is never gated.
    await policy(env, "team", block_severity="low", unscanned="block")
    assert (await env.api.get(f"/v2/team/app/manifests/{report['sbom_digest']}", auth=DEPLOY)).status_code == 200


async def test_rescan_after_db_update_never_turns_a_verdict_pending(env, tmp_path):
    await env.project("prod")
    await env.user("deploy", prod="guest")
    import_fixtures(env, without={LOG4J_ADVISORY}, into=tmp_path / "partial")
    await push_built(env, "prod/app", "bad", java_app(tmp_path / "bad", VULNERABLE))
    await push_built(env, "prod/app", "good", java_app(tmp_path / "good", FIXED))
    await policy(env, "prod", block_severity="critical", unscanned="block")
    for tag in ("bad", "good"):
        await env.api.post(f"/api/v1/repositories/prod/app/artifacts/{tag}/scan")
        await wait_scanned(env, "prod/app", tag)
    assert (await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY)).status_code == 200  # the DB does not know Log4Shell yet

    update_result = await anyio.to_thread.run_sync(lambda: run_update(env.services.db, env.services.jobs, from_path=OSV))
    assert update_result.written >= 1 and update_result.rescan_job is not None
    env.services.worker.wake()
    # Until the rescan lands the old verdicts stay in force: never "unscanned", never refused for lack of a scan.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        good = await scan_status(env, "prod/app", "good")
        bad = await scan_status(env, "prod/app", "bad")
        assert good["scanned"] and bad["scanned"], (good, bad)
        assert (await env.api.get("/v2/prod/app/manifests/good", auth=DEPLOY)).status_code == 200
        if bad["summary"]["Critical"] == 1:
            break
        assert loop.time() < deadline, "rescan did not land"
        await asyncio.sleep(0.1)
    jobs = (await env.api.get("/api/v1/system/jobs", params={"kind": "rescan"})).json()
    assert jobs[0]["result"] == {"reason": "vulndb-update", "rematched": 2, "changed": 1, "external_queued": 0}
    error(await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY), 403, "DENIED")

    # A deleted image's report goes at the next rescan.
    good_digest = (await scan_status(env, "prod/app", "good"))["digest"]
    assert (await env.api.delete(f"/v2/prod/app/manifests/{good_digest}")).status_code == 202
    r = await env.api.post("/api/v1/system/scans/rescan")
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = loop.time() + 60
    while (job := (await env.api.get(f"/api/v1/system/jobs/{job_id}")).json())["state"] in ("queued", "running"):
        assert loop.time() < deadline, f"rescan job {job_id} did not finish: {job}"
        await asyncio.sleep(0.1)
    assert job["result"]["rematched"] == 1, job
    assert env.reg.scalar("SELECT count(*) FROM scan_reports WHERE digest = :d", d=good_digest) == 0


async def test_promotion_gate_on_scan(env, tmp_path):
    await env.project("dev")
    await env.project("prod")
    import_fixtures(env)
    await push_built(env, "dev/app", "bad", java_app(tmp_path / "bad", VULNERABLE))
    await push_built(env, "dev/app", "good", java_app(tmp_path / "good", FIXED))
    await policy(env, "prod", promotion_max_severity="critical")
    body = {"source": "dev/app:good", "destination": "prod/app", "tags": ["1.0"]}
    r = await env.api.post("/api/v1/promotions", json=body)
    assert "has no successful scan" in error(r, 403, "DENIED")["message"]
    for tag in ("bad", "good"):
        await env.api.post(f"/api/v1/repositories/dev/app/artifacts/{tag}/scan")
        await wait_scanned(env, "dev/app", tag)
    r = await env.api.post("/api/v1/promotions", json=body)
    assert r.status_code == 201, r.text
    r = await env.api.post("/api/v1/promotions", json={**body, "source": "dev/app:bad", "tags": ["2.0"]})
    message = error(r, 403, "DENIED")["message"]
    assert "promotion gate scan refused" in message and LOG4SHELL in message
    # The signature gate: prod now wants a signature from a key it trusts; it has none.
    await policy(env, "prod", promotion_require_signature=True)
    r = await env.api.post("/api/v1/promotions", json={**body, "tags": ["1.1"]})
    assert "promotion gate signature refused" in error(r, 403, "DENIED")["message"]


async def test_policy_validation_and_permissions(env):
    await env.project("prod")
    r = await env.api.patch("/api/v1/projects/prod/security", json={"block_severity": "severe"})
    error(r, 400, "INVALID_REQUEST")
    r = await env.api.patch("/api/v1/projects/prod/security", json={"unscanned": "wait"})
    error(r, 400, "INVALID_REQUEST")  # wait needs a number of seconds
    r = await env.api.patch("/api/v1/projects/prod/security", json={"scanner": "nope"})
    error(r, 404, "NOT_FOUND")
    r = await env.api.post("/api/v1/projects/prod/security/trusted-keys", json={"name": "k", "public_key": "not a key"})
    error(r, 400, "INVALID_REQUEST")
    dev = await env.user("dev1", prod="developer")
    r = await env.api.patch("/api/v1/projects/prod/security", json={"block_severity": "low"}, auth=dev)
    error(r, 403, "DENIED")
    r = await env.api.get("/api/v1/projects/prod/security", auth=dev)
    assert r.status_code == 200 and r.json()["block_severity"] is None and r.json()["auto_scan"] is False


async def test_turning_on_the_vulnerability_gate_needs_an_unscanned_choice(env):
    """docs/security.md: nothing passes silently, `allow` has to be chosen. A threshold alone is refused
    with a hint and changes nothing; with `unscanned` (even `allow`) it is accepted; later threshold
    changes keep that choice."""
    await env.project("prod")
    r = await env.api.patch("/api/v1/projects/prod/security", json={"block_severity": "critical"})
    body = error(r, 400, "INVALID_REQUEST")
    assert "unscanned" in body["message"] and "--unscanned block" in body["message"]
    assert body["detail"] == {"missing": "unscanned", "allowed": ["allow", "block", "wait"]}
    r = await env.api.get("/api/v1/projects/prod/security")
    assert r.json()["block_severity"] is None  # the refused change changed nothing
    r = await env.api.patch("/api/v1/projects/prod/security", json={"block_severity": "critical", "unscanned": "allow"})
    assert r.status_code == 200 and r.json()["block_severity"] == "critical" and r.json()["unscanned"] == "allow"
    r = await env.api.patch("/api/v1/projects/prod/security", json={"block_severity": "high"})
    assert r.status_code == 200 and r.json()["block_severity"] == "high" and r.json()["unscanned"] == "allow"
    # Off, then on again: the choice is asked for again.
    r = await env.api.patch("/api/v1/projects/prod/security", json={"block_severity": None})
    assert r.status_code == 200 and r.json()["block_severity"] is None
    r = await env.api.patch("/api/v1/projects/prod/security", json={"block_severity": "low"})
    error(r, 400, "INVALID_REQUEST")


async def test_accounts_that_may_push_are_not_held(env, prod):
    """A developer (who could push a replacement anyway) reads the blocked image, as cosign must
    to sign it; the guest deploy account stays blocked."""
    await policy(env, "prod", block_severity="critical", unscanned="block")
    dev = await env.user("dev1", prod="developer")
    assert (await env.api.get("/v2/prod/app/manifests/bad", auth=dev)).status_code == 200
    error(await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY), 403, "DENIED")


async def test_registry_wide_scan_on_push_default(tmp_path, database_url_for):
    """scan_on_push_default turns scanning on for projects without a policy; a project's own choice wins."""
    import httpx

    from dockyard.app import create_app
    from dockyard.settings import Settings

    from .governance_helpers import ADMIN, BASE, Env
    from .helpers import Registry

    settings = Settings(data_dir=tmp_path / "data", admin_password=ADMIN[1], database_url=database_url_for("sqlite"),
                        scan_on_push_default=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url=BASE, auth=ADMIN) as api:
            env = Env(Registry(app=app, client=api, driver="filesystem", data_dir=tmp_path / "data"), api)
            await env.project("team")
            await env.project("quiet")
            assert (await api.get("/api/v1/projects/team/security")).json()["auto_scan"] is True
            await policy(env, "quiet", auto_scan=False)
            await push_built(env, "team/app", "1", java_app(tmp_path / "a", FIXED))
            await push_built(env, "quiet/app", "1", java_app(tmp_path / "b", FIXED, marker="quiet"))  # another digest
            assert (await wait_scanned(env, "team/app", "1"))["images"][0]["report"]["sbom_digest"]
            env.services.feed.drain()  # quiet/app's artifact.pushed has been judged too
            status = await scan_status(env, "quiet/app", "1")
            assert not status["scanned"] and not status["in_progress"]


async def test_notation_signature_is_recognized_not_trusted(env, tmp_path):
    """A Notation signature shows up in the signature status, but cannot satisfy require_signature."""
    from dockyard.signing.cosign_keys import generate_private_key, public_key_pem

    from .governance_helpers import push_referrer

    await env.project("signed")
    await env.user("deploy", signed="guest")
    image = java_app(tmp_path / "img", FIXED)
    digest = await push_built(env, "signed/app", "1", image)
    await push_referrer(env.reg, "signed/app", OCI_MANIFEST, image.manifest,
                        "application/vnd.cncf.notary.signature", b"a JWS envelope, not verified")
    pem = public_key_pem(generate_private_key()).decode()
    r = await env.api.post("/api/v1/projects/signed/security/trusted-keys", json={"name": "release", "public_key": pem})
    assert r.status_code == 201, r.text
    r = await env.api.get("/api/v1/repositories/signed/app/artifacts/1/signatures")
    assert r.status_code == 200, r.text
    status = r.json()
    assert status["signed"] and status["notation"] and not status["verified"] and status["layouts"] == ["notation"]
    await policy(env, "signed", require_signature=True)
    message = error(await env.api.get("/v2/signed/app/manifests/1", auth=DEPLOY), 403, "DENIED")["message"]
    assert message == (
        f"image {digest} is not signed by a key trusted by project signed: it has only a Notation signature, "
        "which Dockyard recognizes but cannot verify; policy require-signature of project signed"
    )


async def test_promotion_and_retag_scan_like_a_push(env, tmp_path):
    """Acceptance 3 of issue 10: scan on push follows the change feed, so an image promoted into a
    project with auto-scan gets a report, and so does one retagged there, though neither was pushed."""
    await env.project("dev")
    await env.project("prod")
    import_fixtures(env)
    await policy(env, "prod", auto_scan=True)
    digest = await push_built(env, "dev/app", "1", java_app(tmp_path / "img", VULNERABLE))
    env.services.feed.drain()  # dev does not scan on push: its artifact.pushed queued nothing
    status = await scan_status(env, "dev/app", "1")
    assert not status["scanned"] and not status["in_progress"]
    r = await env.api.post("/api/v1/promotions", json={"source": "dev/app:1", "destination": "prod/app"})
    assert r.status_code == 201, r.text
    status = await wait_scanned(env, "prod/app", "1")
    assert status["summary"]["Critical"] == 1
    r = await env.api.get("/api/v1/events", params={"repository": "prod/app", "type": "scan"})
    assert [(e["type"], e["digest"]) for e in r.json()] == [
        ("scan.completed", digest), ("scan.verdict_changed", digest)]
    assert r.json()[1]["data"] == {"scanner": "builtin", "previous": "unscanned", "current": "critical"}

    await env.project("qa")
    fixed = await push_built(env, "qa/app", "1", java_app(tmp_path / "fixed", FIXED, marker="qa"))
    env.services.feed.drain()
    assert not (await scan_status(env, "qa/app", "1"))["scanned"]
    await policy(env, "qa", auto_scan=True)
    r = await env.api.put("/api/v1/repositories/qa/app/tags/stable", json={"digest": fixed})
    assert r.status_code == 200, r.text
    assert (await wait_scanned(env, "qa/app", "stable"))["summary"]["Critical"] == 0
