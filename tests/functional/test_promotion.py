"""Promotion: an index with children and referrers across projects with zero blob bytes written,
permissions, all-or-nothing multi-tag, the audit entry, promotion gates, and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio.from_thread
import anyio.to_thread
from typer.testing import CliRunner

from dockyard.cli import app as cli_app
from dockyard.policy.promotion_gates import GateVerdict, PromotionGate

from .governance_helpers import route_cli_to_app, ADMIN, env, error, index_body, push_referrer, storage_snapshot  # noqa: F401
from .helpers import OCI_INDEX, OCI_MANIFEST, pattern, sha256

SRC, DEST = "dev/app", "prod/app"


async def _projects(env) -> None:
    await env.project("dev")
    await env.project("prod")


async def _release(env) -> dict:
    """dev/app:1.0 = index(amd64, arm64) with a signature on the index, an SBOM on amd64, and a signature on the SBOM."""
    reg = env.reg
    amd, amd_body = await reg.push_image(SRC, seed=1, layers=2)
    arm, arm_body = await reg.push_image(SRC, seed=2, layers=2)
    body = index_body(("amd64", amd_body), ("arm64", arm_body))
    idx = await reg.push_manifest(SRC, "1.0", body, OCI_INDEX)
    sig, _ = await push_referrer(reg, SRC, OCI_INDEX, body, "application/vnd.dev.cosign.artifact.sig.v1+json", b"sig-of-index")
    sbom, sbom_body = await push_referrer(reg, SRC, OCI_MANIFEST, amd_body, "application/spdx+json", pattern(300, seed=9))
    sbom_sig, _ = await push_referrer(reg, SRC, OCI_MANIFEST, sbom_body, "application/vnd.dev.cosign.artifact.sig.v1+json", b"sig-of-sbom")
    return {"index": idx, "amd": amd, "arm": arm, "sig": sig, "sbom": sbom, "sbom_sig": sbom_sig, "amd_body": amd_body}


def _blob_digests(env, repo: str) -> set[str]:
    return {
        r[0]
        for r in env.reg.sql(
            "SELECT b.digest FROM blobs b JOIN repository_blobs rb ON rb.blob_id = b.id"
            " JOIN repositories r ON r.id = rb.repository_id WHERE r.name = :n",
            n=repo,
        )
    }


async def test_index_with_children_and_referrers_is_promoted_across_projects_without_moving_bytes(env):
    await _projects(env)
    rel = await _release(env)
    root = env.services.settings.resolved_storage_root
    before = storage_snapshot(root)
    uploads_before = env.reg.upload_rows()
    ref_counts_before = dict(env.reg.sql("SELECT digest, ref_count FROM blobs"))

    r = await env.api.post(
        "/api/v1/promotions",
        json={"source": f"{SRC}:1.0", "destination": DEST, "tags": ["1.0", "stable"], "include_referrers": True},
    )
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["source_digest"] == rel["index"] and out["media_type"] == OCI_INDEX
    assert {t["tag"]: t["previous"] for t in out["tags"]} == {"1.0": None, "stable": None}
    assert set(out["copied"]) == {rel[k] for k in ("index", "amd", "arm", "sig", "sbom", "sbom_sig")}
    assert out["copied"].index(rel["amd"]) < out["copied"].index(rel["index"])  # children first
    assert set(out["referrers"]) == {rel["sig"], rel["sbom"], rel["sbom_sig"]}

    # no bytes moved: same objects and bytes in storage, no upload sessions (rows or objects)
    assert storage_snapshot(root) == before
    assert env.reg.upload_rows() == uploads_before == 0
    assert env.reg.upload_objects() == []
    assert _blob_digests(env, DEST) == _blob_digests(env, SRC)
    assert out["blobs_linked"] == len(_blob_digests(env, SRC))
    # each copied manifest took its own reference on its blobs (the GC invariant's row write)
    ref_counts_after = dict(env.reg.sql("SELECT digest, ref_count FROM blobs"))
    assert {d: ref_counts_after[d] - ref_counts_before[d] for d in ref_counts_before} == {
        d: n for d, n in ref_counts_before.items()
    }

    # the destination serves the whole image, digest-verified
    for tag in ("1.0", "stable"):
        assert await env.digest_of(DEST, tag) == rel["index"]
    for key in ("amd", "arm", "sig", "sbom", "sbom_sig"):
        got = await env.api.get(f"/v2/{DEST}/manifests/{rel[key]}")
        assert got.status_code == 200 and sha256(got.content) == rel[key]
    for digest in _blob_digests(env, SRC):
        got = await env.api.get(f"/v2/{DEST}/blobs/{digest}")
        assert got.status_code == 200 and sha256(got.content) == digest
    referrers = (await env.api.get(f"/v2/{DEST}/referrers/{rel['index']}")).json()["manifests"]
    assert [d["digest"] for d in referrers] == [rel["sig"]]
    referrers = (await env.api.get(f"/v2/{DEST}/referrers/{rel['amd']}")).json()["manifests"]
    assert [d["digest"] for d in referrers] == [rel["sbom"]]

    [event] = await env.audit("image.promote")
    assert event["actor"] == "admin" and event["project"] == "prod" and event["object"] == f"{SRC}:1.0 -> {DEST}"
    assert event["detail"]["source_digest"] == rel["index"] and event["detail"]["destination"] == DEST
    assert event["detail"]["tags"] == {"1.0": None, "stable": None}


async def test_referrers_stay_behind_unless_asked_for(env):
    await _projects(env)
    rel = await _release(env)
    r = await env.api.post("/api/v1/promotions", json={"source": f"{SRC}@{rel['index']}", "destination": DEST, "tags": ["1.0"]})
    assert r.status_code == 201, r.text
    assert set(r.json()["copied"]) == {rel["index"], rel["amd"], rel["arm"]} and r.json()["referrers"] == []
    assert (await env.api.get(f"/v2/{DEST}/manifests/{rel['sig']}")).status_code == 404
    assert (await env.api.get(f"/v2/{DEST}/referrers/{rel['index']}")).json()["manifests"] == []
    # promoting again is idempotent and now brings the referrers
    r = await env.api.post(
        "/api/v1/promotions", json={"source": f"{SRC}:1.0", "destination": DEST, "include_referrers": True}
    )
    assert r.status_code == 201, r.text
    assert set(r.json()["copied"]) == {rel["sig"], rel["sbom"], rel["sbom_sig"]}
    assert r.json()["tags"] == [{"tag": "1.0", "previous": rel["index"]}]  # source tag is the default


async def test_permissions(env):
    await _projects(env)
    rel = await _release(env)
    outsider = await env.user("outsider", prod="developer")  # cannot see dev at all
    reader = await env.user("reader", dev="developer", prod="guest")  # pull on dev, no push on prod
    dev = await env.user("devel", dev="developer", prod="developer")
    maint = await env.user("maint", dev="maintainer")
    body = {"source": f"{SRC}:1.0", "destination": DEST, "tags": ["1.0"]}
    error(await env.api.post("/api/v1/promotions", json=body, auth=outsider), 404, "NOT_FOUND")
    error(await env.api.post("/api/v1/promotions", json=body, auth=reader), 403, "DENIED")
    assert env.reg.count("repositories", "name = :n", n=DEST) == 0  # nothing was created
    # a retag inside one repository needs "retag", which developers do not have
    same = {"source": f"{SRC}:1.0", "destination": SRC, "tags": ["stable"]}
    error(await env.api.post("/api/v1/promotions", json=same, auth=dev), 403, "DENIED")
    assert (await env.api.post("/api/v1/promotions", json=same, auth=maint)).status_code == 201
    assert await env.digest_of(SRC, "stable") == rel["index"]
    assert (await env.api.post("/api/v1/promotions", json=body, auth=dev)).status_code == 201
    assert await env.digest_of(DEST, "1.0") == rel["index"]
    # bad references are refused cleanly
    error(await env.api.post("/api/v1/promotions", json={**body, "source": f"{SRC}:nope"}), 404, "MANIFEST_UNKNOWN")
    error(await env.api.post("/api/v1/promotions", json={**body, "source": SRC}), 400, "INVALID_REQUEST")
    error(await env.api.post("/api/v1/promotions", json={**body, "destination": "Prod/App"}), 400, "NAME_INVALID")
    error(await env.api.post("/api/v1/promotions", json={**body, "tags": ["bad:tag"]}), 400, "TAG_INVALID")


async def test_multi_tag_promotion_is_all_or_nothing(env):
    await _projects(env)
    rel = await _release(env)
    await env.rule("prod", "immutable", "v*")
    old, _ = await env.reg.push_image(DEST, "v1", seed=7)
    manifests_before = env.reg.count("manifests", "repository_id = (SELECT id FROM repositories WHERE name = :n)", n=DEST)
    links_before = _blob_digests(env, DEST)
    body = {"source": f"{SRC}:1.0", "destination": DEST, "tags": ["stable", "latest", "v1"], "include_referrers": True}
    detail = error(await env.api.post("/api/v1/promotions", json=body), 403, "DENIED")
    assert "tag v1 of prod/app is immutable" in detail["message"]
    assert await env.digest_of(DEST, "stable") is None and await env.digest_of(DEST, "latest") is None
    assert await env.digest_of(DEST, "v1") == old
    assert env.reg.count("manifests", "repository_id = (SELECT id FROM repositories WHERE name = :n)", n=DEST) == manifests_before
    assert _blob_digests(env, DEST) == links_before
    assert await env.audit("image.promote") == []
    r = await env.api.post("/api/v1/promotions", json={**body, "tags": ["stable", "latest"]})
    assert r.status_code == 201 and await env.digest_of(DEST, "latest") == rel["index"]


@dataclass
class FakeGate:
    """A test double for the gate hook: refuses everything it is told to, and remembers what it saw."""

    name: str
    allowed: bool
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def check(self, source_repository: str, digest: str, manifest_media_type: str, destination: str) -> GateVerdict:
        self.seen.append((source_repository, digest, manifest_media_type))
        return GateVerdict(self.allowed, "" if self.allowed else "critical vulnerability CVE-2024-0001")


async def test_a_denying_gate_blocks_promotion_with_its_reason(env):
    await _projects(env)
    rel = await _release(env)
    passing, blocking = FakeGate("signed", True), FakeGate("scan", False)
    assert isinstance(blocking, PromotionGate)
    env.services.promotion_gates.extend([passing, blocking])
    body = {"source": f"{SRC}:1.0", "destination": DEST, "tags": ["1.0"]}
    detail = error(await env.api.post("/api/v1/promotions", json=body), 403, "DENIED")
    assert "promotion gate scan refused" in detail["message"] and "CVE-2024-0001" in detail["message"]
    assert detail["detail"]["gate"] == "scan"
    assert blocking.seen == passing.seen == [(SRC, rel["index"], OCI_INDEX)]
    assert env.reg.count("repositories", "name = :n", n=DEST) == 0
    env.services.promotion_gates.remove(blocking)
    assert (await env.api.post("/api/v1/promotions", json=body)).status_code == 201
    assert len(passing.seen) == 2


async def test_every_failing_gate_is_reported_at_once(env):
    """Gates do not stop at the first failure: the refusal names each failing gate and its reason."""
    await _projects(env)
    rel = await _release(env)
    scan, passing, signature = FakeGate("scan", False), FakeGate("signed", True), FakeGate("signature", False)
    env.services.promotion_gates.extend([scan, passing, signature])
    body = {"source": f"{SRC}:1.0", "destination": DEST, "tags": ["1.0"]}
    detail = error(await env.api.post("/api/v1/promotions", json=body), 403, "DENIED")
    assert detail["detail"]["gates"] == [
        {"gate": "scan", "reason": "critical vulnerability CVE-2024-0001"},
        {"gate": "signature", "reason": "critical vulnerability CVE-2024-0001"},
    ]
    assert "promotion gate scan refused" in detail["message"] and "promotion gate signature refused" in detail["message"]
    assert len(scan.seen) == len(passing.seen) == len(signature.seen) == 1
    assert env.reg.count("repositories", "name = :n", n=DEST) == 0
    for gate in (scan, passing, signature):
        env.services.promotion_gates.remove(gate)


async def test_cli_promote(env, monkeypatch):
    """`dockyard promote` is a client of POST /api/v1/promotions (driven in-process here)."""
    await _projects(env)
    digest, _ = await env.reg.push_image(SRC, "1.2.0", seed=4)
    app = env.reg.app

    route_cli_to_app(monkeypatch, app)
    runner = CliRunner()

    async def run(*args: str):
        return await anyio.to_thread.run_sync(lambda: runner.invoke(cli_app, ["promote", *args, "-u", "admin", "-p", ADMIN[1]]))

    result = await run(f"{SRC}:1.2.0", f"{DEST}:1.2.0", "--tag", "stable")
    assert result.exit_code == 0, result.output
    assert f"to {DEST}: 1.2.0, stable;" in result.output and "0 bytes copied" in result.output
    assert await env.digest_of(DEST, "stable") == digest == await env.digest_of(DEST, "1.2.0")
    await env.rule("prod", "immutable", "1.*")
    other, _ = await env.reg.push_image(SRC, "1.3.0", seed=5)
    result = await run(f"{SRC}:1.3.0", f"{DEST}:1.2.0")
    assert result.exit_code == 1 and "DENIED" in result.output and "is immutable" in result.output
    result = await run(f"{SRC}:1.3.0", f"{DEST}:1.2.0", "--override-reason", "bad build shipped")
    assert result.exit_code == 0, result.output
    assert f"1.2.0 (was {digest})" in result.output
    assert await env.digest_of(DEST, "1.2.0") == other
    result = await run(f"{SRC}:nope", DEST, "--referrers", "--json")
    assert result.exit_code == 1 and "MANIFEST_UNKNOWN" in result.output
    result = await run(f"{SRC}:1.2.0", f"{DEST}@{digest}")
    assert result.exit_code == 2


async def test_a_copy_counts_against_the_destination_quota(env):
    await _projects(env)
    rel = await _release(env)
    env.services.quotas.set("prod", 100)  # far less than the image's blobs
    detail = error(await env.api.post("/api/v1/promotions", json={"source": f"{SRC}:1.0", "destination": DEST}), 403, "DENIED")
    assert "quota of project prod exceeded" in detail["message"]
    assert env.reg.count("repositories", "name = :n", n=DEST) == 0
    env.services.quotas.set("prod", None)
    r = await env.api.post("/api/v1/promotions", json={"source": f"{SRC}:1.0", "destination": DEST})
    assert r.status_code == 201 and await env.digest_of(DEST, "1.0") == rel["index"]
