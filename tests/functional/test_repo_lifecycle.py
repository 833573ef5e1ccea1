"""Repository and project lifecycle (issue 15 §1) and GC's grace report (§6), in-process on SQLite
and PostgreSQL: repository delete (force, immutable tags, break glass, audit, events), empty
repositories disappearing, project delete with force followed by GC reclaiming the bytes, and the
operator listings (paged, sorted, visibility filtered)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from dockyard.app import create_app
from dockyard.metadata.db import utcnow
from dockyard.settings import Settings

from .governance_helpers import index_body, push_referrer
from .helpers import API_CLIENT, OCI_INDEX, OCI_MANIFEST, Registry, pattern, sha256

ADMIN = ("admin", "admin-password-1")
BASE = "http://registry.test"
GRACE = 3600


@contextlib.asynccontextmanager
async def open_registry(tmp_path: Path, database_url: str | None) -> AsyncIterator[Registry]:
    """An app with an administrator and GC grace GRACE; its client acts as the administrator."""
    settings = Settings(data_dir=tmp_path / "data", admin_password=ADMIN[1], database_url=database_url,
                        gc_grace_seconds=GRACE, worker_poll_seconds=0.05)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url=BASE, auth=ADMIN) as client:
            yield Registry(app=app, client=client, driver="filesystem", data_dir=tmp_path / "data")


@pytest.fixture(params=["sqlite", "postgresql"])
async def reg(request, tmp_path: Path, database_url_for):
    async with open_registry(tmp_path, database_url_for(request.param)) as registry:
        yield registry


def error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["errors"][0]["code"] == code, body
    return body["errors"][0]


async def make_project(reg: Registry, name: str, public: bool = False) -> None:
    r = await reg.client.post("/api/v1/projects", json={"name": name, "public": public})
    assert r.status_code == 201, r.text


async def make_user(reg: Registry, name: str, project: str | None = None, role: str = "admin") -> tuple[str, str]:
    password = f"{name}-password-1"
    r = await reg.client.post("/api/v1/users", json={"username": name, "password": password})
    assert r.status_code == 201, r.text
    if project:
        r = await reg.client.post(f"/api/v1/projects/{project}/members", json={"username": name, "role": role})
        assert r.status_code == 201, r.text
    return name, password


def later(reg: Registry, seconds: int = GRACE + 60) -> None:
    """Move GC's clock (and the empty-repository check's) past the grace period of everything so far."""
    moment = utcnow() + timedelta(seconds=seconds)
    reg.services.gc.clock = lambda: moment
    reg.services.manifests.clock = lambda: moment


async def run_gc(reg: Registry, **body) -> dict:
    r = await reg.client.post("/api/v1/system/gc", json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        job = (await reg.client.get(f"/api/v1/system/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed") or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "succeeded", job
    return job["result"]


def repo_names(reg: Registry) -> list[str]:
    return [r[0] for r in reg.sql("SELECT name FROM repositories ORDER BY name")]


async def events_of(reg: Registry, type_: str) -> list[dict]:
    r = await reg.client.get("/api/v1/events", params={"type": type_})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["events"] if isinstance(body, dict) else body


async def audit_of(reg: Registry, action: str) -> list[dict]:
    r = await reg.client.get("/api/v1/audit", params={"action": action})
    assert r.status_code == 200, r.text
    return r.json()


# -- repository delete ----------------------------------------------------------------------------


async def test_repository_delete_needs_force_for_tags_then_removes_everything(reg):
    await make_project(reg, "team")
    image, _ = await reg.push_image("team/app", "v1", seed=1)
    await reg.push_image("team/app", None, seed=2)  # untagged
    sig_subject = reg.sql("SELECT payload FROM manifests WHERE digest = :d", d=image)[0][0]
    await push_referrer(reg, "team/app", OCI_MANIFEST, bytes(sig_subject), "application/vnd.example.sbom", b"sbom")

    refused = error(await reg.client.delete("/api/v1/repositories/team/app"), 409, "CONFLICT")
    assert "--force" in refused["message"] and refused["detail"]["tags"] == 1
    assert reg.count("manifests") == 3

    r = await reg.client.delete("/api/v1/repositories/team/app", params={"force": "true"})
    assert r.status_code == 200, r.text
    assert r.json() == {"repository": "team/app", "manifests": 3, "tags": 1, "overridden": []}
    assert repo_names(reg) == [] and reg.count("manifests") == 0 and reg.count("tags") == 0
    assert reg.count("repository_blobs") == 0 and reg.count("manifest_references") == 0
    assert reg.scalar("SELECT COUNT(*) FROM blobs WHERE ref_count <> 0") == 0  # every reference dropped: GC's business now
    error(await reg.client.get(f"/v2/team/app/manifests/{image}"), 404, "NAME_UNKNOWN")
    [event] = await events_of(reg, "repository.deleted")
    assert (event["repository"], event["data"]["via"], event["data"]["manifests"]) == ("team/app", "api", 3)
    [entry] = await audit_of(reg, "repository.delete")
    assert entry["object"] == "team/app" and entry["detail"]["force"] is True
    error(await reg.client.delete("/api/v1/repositories/team/app", params={"force": "true"}), 404, "NAME_UNKNOWN")
    # Pushing again afterwards simply creates it anew.
    await reg.push_image("team/app", "v1", seed=1)
    assert repo_names(reg) == ["team/app"]


async def test_immutable_tags_hold_unless_a_project_admin_breaks_glass(reg):
    await make_project(reg, "team")
    await reg.push_image("team/app", "v1", seed=1)
    await reg.push_image("team/app", "dev", seed=2)
    r = await reg.client.post("/api/v1/projects/team/tag-rules", json={"kind": "immutable", "tag_pattern": "v*"})
    assert r.status_code == 201, r.text
    dev = await make_user(reg, "dev", "team", role="developer")  # may delete, may not break glass

    error(await reg.client.delete("/api/v1/repositories/team/app", params={"force": "true"}), 403, "DENIED")
    error(await reg.client.delete("/api/v1/repositories/team/app", params={"force": "true", "override_reason": "x"},
                                  auth=dev), 403, "DENIED")
    error(await reg.client.delete("/api/v1/repositories/team/app", params={"force": "true", "override_reason": "  "}),
          400, "INVALID_REQUEST")
    assert reg.count("tags") == 2  # nothing went: all or nothing

    r = await reg.client.delete("/api/v1/repositories/team/app", params={"force": "true", "override_reason": "leaked secret"})
    assert r.status_code == 200, r.text
    assert r.json()["overridden"] == ["v1"]
    [override] = await audit_of(reg, "tag.override")
    assert override["object"] == "team/app:v1" and override["detail"]["reason"] == "leaked secret"
    [entry] = await audit_of(reg, "repository.delete")
    assert entry["detail"]["override_reason"] == "leaked secret"


async def test_a_project_admin_cannot_delete_another_projects_repositories(reg):
    await make_project(reg, "alpha")
    await make_project(reg, "beta")
    await make_project(reg, "open", public=True)
    await reg.push_image("beta/app", "v1", seed=1)
    await reg.push_image("open/app", "v1", seed=2)
    alpha_admin = await make_user(reg, "alice", "alpha", role="admin")
    # Private and not a member: the same 404 as a project that does not exist.
    hidden = error(await reg.client.delete("/api/v1/repositories/beta/app", params={"force": "true"}, auth=alpha_admin),
                   404, "NOT_FOUND")
    missing = error(await reg.client.delete("/api/v1/repositories/nope/app", params={"force": "true"}, auth=alpha_admin),
                    404, "NOT_FOUND")
    assert hidden["message"].replace("beta", "X") == missing["message"].replace("nope", "X")
    error(await reg.client.delete("/api/v1/repositories/open/app", params={"force": "true"}, auth=alpha_admin), 403, "DENIED")
    assert repo_names(reg) == ["beta/app", "open/app"]
    assert await audit_of(reg, "repository.delete") == []
    [denied] = await audit_of(reg, "api.denied")  # the 403 is on record
    assert denied["object"] == "DELETE /api/v1/repositories/open/app" and denied["actor"] == "alice"


# -- empty repositories -----------------------------------------------------------------------


async def test_deleting_the_last_manifest_removes_the_repository(reg):
    await make_project(reg, "team")
    one, _ = await reg.push_image("team/app", "v1", seed=1)
    two, _ = await reg.push_image("team/app", "v2", seed=2)
    later(reg)  # the pushes' blob links are older than the grace: no push can be in flight
    assert (await reg.client.delete(f"/v2/team/app/manifests/{one}")).status_code == 202
    assert repo_names(reg) == ["team/app"]  # still holds v2
    assert (await reg.client.delete(f"/v2/team/app/manifests/{two}")).status_code == 202
    assert repo_names(reg) == []
    assert [e["data"]["via"] for e in await events_of(reg, "repository.deleted")] == ["empty"]
    r = await reg.client.get("/api/v1/repositories", params={"project": "team"})
    assert r.status_code == 200 and r.json() == []


async def test_a_repository_with_recent_uploads_stays_until_gc_finds_it_empty_past_the_grace(reg):
    await make_project(reg, "team")
    digest, _ = await reg.push_image("team/app", "v1", seed=1)
    await reg.push_blob("team/app", pattern(500, seed=9))  # a push in flight: a blob, no manifest yet
    assert (await reg.client.delete(f"/v2/team/app/manifests/{digest}")).status_code == 202
    assert repo_names(reg) == ["team/app"]  # kept: the in-flight push may PUT its manifest any moment
    result = await run_gc(reg)
    assert result["repositories_removed"] == 0 and repo_names(reg) == ["team/app"]
    later(reg)
    result = await run_gc(reg)
    assert result["repositories_removed"] == 1 and repo_names(reg) == []


async def test_a_tag_delete_keeps_a_repository_that_still_holds_manifests(reg):
    await make_project(reg, "team")
    await reg.push_image("team/app", "v1", seed=1)
    later(reg)
    assert (await reg.client.delete("/api/v1/repositories/team/app/tags/v1")).status_code == 204
    assert repo_names(reg) == ["team/app"]  # the untagged manifest is still pullable by digest


# -- project delete with force, then GC -------------------------------------------------------


async def test_project_delete_with_force_then_gc_reclaims_its_bytes(reg):
    await make_project(reg, "scratch")
    await make_project(reg, "keep")
    await reg.push_image("scratch/app", "v1", seed=1, layers=2)
    await reg.push_image("scratch/tools/x", "v1", seed=2)
    kept, _ = await reg.push_image("keep/app", "v1", seed=3)
    before = set(reg.blob_objects())
    keep_blobs = {r[0] for r in reg.sql(
        "SELECT b.storage_key FROM blobs b JOIN repository_blobs rb ON rb.blob_id = b.id"
        " JOIN repositories r ON r.id = rb.repository_id WHERE r.name = 'keep/app'")}
    [(scratch_count, scratch_bytes)] = reg.sql(
        "SELECT COUNT(*), SUM(b.size) FROM blobs b WHERE b.id IN (SELECT rb.blob_id FROM repository_blobs rb"
        " JOIN repositories r ON r.id = rb.repository_id WHERE r.name LIKE 'scratch/%')")
    assert scratch_count == 5  # two configs, three layers

    refused = error(await reg.client.delete("/api/v1/projects/scratch"), 409, "CONFLICT")
    assert "force" in refused["message"]
    scratch_admin = await make_user(reg, "sam", "scratch", role="admin")
    error(await reg.client.delete("/api/v1/projects/scratch", params={"force": "true"}, auth=scratch_admin), 403, "DENIED")
    assert (await reg.client.delete("/api/v1/projects/scratch", params={"force": "true"})).status_code == 204
    assert repo_names(reg) == ["keep/app"]
    error(await reg.client.get("/api/v1/projects/scratch"), 404, "NOT_FOUND")
    [entry] = [e for e in await audit_of(reg, "project.delete") if e["outcome"] == "success"]
    assert entry["detail"]["repository_count"] == 2 and entry["detail"]["force"] is True
    assert {e["repository"] for e in await events_of(reg, "repository.deleted")} == {"scratch/app", "scratch/tools/x"}

    now = await run_gc(reg)  # right away: everything is inside the grace period, and GC says so
    assert now["bytes_freed"] == 0 and now["in_grace"] == 5 and now["in_grace_bytes"] == scratch_bytes
    assert now["next_eligible_at"] is not None and set(reg.blob_objects()) == before
    later(reg)
    result = await run_gc(reg)
    assert (result["deleted"], result["bytes_freed"], result["in_grace"]) == (5, scratch_bytes, 0)
    assert set(reg.blob_objects()) == keep_blobs
    r = await reg.client.get(f"/v2/keep/app/manifests/{kept}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200


async def test_gc_grace_seconds_has_a_server_side_minimum_and_is_admin_only(reg):
    user = await make_user(reg, "joe")
    error(await reg.client.post("/api/v1/system/gc", json={"grace_seconds": 600}, auth=user), 403, "DENIED")
    detail = error(await reg.client.post("/api/v1/system/gc", json={"grace_seconds": 599}), 400, "INVALID_REQUEST")
    assert detail["detail"]["minimum"] == 600
    result = await run_gc(reg, grace_seconds=600, dry_run=True)
    assert result["grace_seconds"] == 600


# -- listings ---------------------------------------------------------------------------------


async def test_repository_listing_is_sorted_paged_and_visibility_filtered(reg):
    await make_project(reg, "team")
    await make_project(reg, "secret")
    await make_project(reg, "a_b", public=True)
    await make_project(reg, "axb")
    await reg.push_image("team/big", "v1", seed=1, layers=3)
    await reg.push_image("team/small", "v1", seed=2)
    await reg.push_image("team/small", "v2", seed=3)
    await reg.push_image("secret/app", "v1", seed=4)
    await reg.push_image("axb/app", "v1", seed=5)
    member = await make_user(reg, "mia", "team", role="guest")

    r = await reg.client.get("/api/v1/repositories", params={"sort": "-tags"}, auth=member)
    assert r.status_code == 200, r.text
    assert [(x["name"], x["tag_count"]) for x in r.json()] == [("team/small", 2), ("team/big", 1)]
    assert r.headers["X-Total-Count"] == "2"  # secret/ and axb/ (beside the public a_b) do not leak
    error(await reg.client.get("/api/v1/repositories", params={"project": "secret"}, auth=member), 404, "NOT_FOUND")

    r = await reg.client.get("/api/v1/repositories", params={"sort": "-size", "page_size": 1})
    assert r.headers["X-Total-Count"] == "4" and 'rel="next"' in r.headers["Link"]
    every = (await reg.client.get("/api/v1/repositories", params={"sort": "-size"})).json()
    sizes = {x["name"]: x["size"] for x in every}
    assert r.json()[0]["name"] == max(sizes, key=sizes.get) and [x["size"] for x in every] == sorted(sizes.values(), reverse=True)
    expected = reg.scalar("SELECT SUM(size) FROM manifests") + reg.scalar(
        "SELECT SUM(b.size) FROM blobs b JOIN repository_blobs rb ON rb.blob_id = b.id")
    assert sum(sizes.values()) == expected and all(x["last_push"] and x["last_pull"] is None for x in every)
    r = await reg.client.get("/api/v1/repositories", params={"project": "team", "sort": "name"})
    assert [x["name"] for x in r.json()] == ["team/big", "team/small"]
    error(await reg.client.get("/api/v1/repositories", params={"sort": "owner"}), 400, "INVALID_REQUEST")


async def test_tag_listing_describes_each_image(reg):
    await make_project(reg, "team")
    _, amd_body = await reg.push_image("team/app", "amd", seed=1)
    _, arm_body = await reg.push_image("team/app", "arm", seed=2)
    body = index_body(("amd64", amd_body), ("arm64", arm_body))
    await reg.push_manifest("team/app", "multi", body, OCI_INDEX)
    await push_referrer(reg, "team/app", OCI_MANIFEST, amd_body, "application/vnd.cncf.notary.signature", b"sig")

    r = await reg.client.get("/api/v1/repositories/team/app/tags", params={"sort": "-pushed"})
    assert r.status_code == 200, r.text
    tags = {t["name"]: t for t in r.json()}
    assert [t["name"] for t in r.json()] == ["multi", "arm", "amd"]
    assert tags["multi"]["platforms"] == ["linux/amd64", "linux/arm64"] and tags["multi"]["digest"] == sha256(body)
    assert tags["amd"]["platforms"] == ["linux/amd64"]  # a single image: from its config blob
    blob_bytes = {n: tags[n]["size"] - len(b) for n, b in (("amd", amd_body), ("arm", arm_body))}
    assert tags["multi"]["size"] == len(body) + blob_bytes["amd"] + blob_bytes["arm"]  # the children's blobs count
    assert tags["amd"]["signed"] is True and tags["arm"]["signed"] is False
    assert {t["scan_verdict"] for t in r.json()} == {"unscanned"}
    doc = json.loads(amd_body)
    assert blob_bytes["amd"] == sum(d["size"] for d in [doc["config"], *doc["layers"]])
    r = await reg.client.get("/api/v1/repositories/team/app/tags", params={"sort": "name", "page_size": 2})
    assert [t["name"] for t in r.json()] == ["amd", "arm"] and r.headers["X-Total-Count"] == "3"


async def test_project_delete_with_force_stops_before_anything_goes_when_a_tag_is_immutable(reg):
    await make_project(reg, "scratch")
    await reg.push_image("scratch/a", "latest", seed=1)
    await reg.push_image("scratch/b", "v1", seed=2)
    r = await reg.client.post("/api/v1/projects/scratch/tag-rules", json={"kind": "immutable", "tag_pattern": "v*"})
    assert r.status_code == 201, r.text

    refused = error(await reg.client.delete("/api/v1/projects/scratch", params={"force": "true"}), 403, "DENIED")
    assert refused["detail"]["repositories"] == ["scratch/b"]
    assert repo_names(reg) == ["scratch/a", "scratch/b"]  # not half-way: scratch/a is still there
    r = await reg.client.delete("/api/v1/projects/scratch", params={"force": "true", "override_reason": "project retired"})
    assert r.status_code == 204, r.text
    assert repo_names(reg) == [] and [e["object"] for e in await audit_of(reg, "tag.override")] == ["scratch/b:v1"]


# -- across project lifetimes -----------------------------------------------------------------


async def test_a_push_authorized_before_its_project_was_deleted_leaves_nothing_for_a_namesake_project(reg):
    """Authorization reads the project; the write comes later. A project deleted in between must not
    get a repository created under its name (no foreign key stops it), or a project created later
    with the same name would hold the former project's image."""
    await make_project(reg, "team")
    db = reg.services.db
    write, armed = db.write, [True]

    def delete_then_write():
        if armed[0]:
            armed[0] = False
            reg.services.projects.delete("team")  # after authorization, before the push writes anything
        return write()

    db.write = delete_then_write
    try:
        data = b"layer bytes of the former project"
        r = await reg.client.post("/v2/team/app/blobs/uploads/", params={"digest": sha256(data)}, content=data,
                                  headers={"Content-Type": "application/octet-stream"})
    finally:
        db.write = write
    assert not armed[0]
    assert r.status_code == 404, r.text
    assert repo_names(reg) == []
    await make_project(reg, "team")
    listed = await reg.client.get("/api/v1/repositories", params={"project": "team"})
    assert listed.status_code == 200 and listed.json() == []


async def test_the_audit_log_of_a_deleted_project_is_not_shown_to_the_admins_of_a_namesake(reg):
    await make_project(reg, "team")
    r = await reg.client.patch("/api/v1/projects/team", json={"public": True})
    assert r.status_code == 200, r.text
    assert (await reg.client.delete("/api/v1/projects/team")).status_code == 204
    await make_project(reg, "team")
    newcomer = await make_user(reg, "newcomer", "team", role="admin")
    r = await reg.client.get("/api/v1/audit", params={"project": "team"}, auth=newcomer)
    assert r.status_code == 200, r.text
    actions = [e["action"] for e in r.json()]
    assert "project.update" not in actions and "project.delete" not in actions, actions
    assert "member.add" in actions  # the new project's own history stays visible
    everything = [e["action"] for e in (await reg.client.get("/api/v1/audit", params={"project": "team"})).json()]
    assert "project.update" in everything  # administrators still read it all


# -- attacks between features -----------------------------------------------------------------


async def pull_everything(reg: Registry, repo: str, digest: str) -> None:
    """The manifest and every blob it names answer 200 with the right bytes."""
    r = await reg.client.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, r.text
    doc = r.json()
    for desc in [doc["config"], *doc["layers"]]:
        blob = await reg.client.get(f"/v2/{repo}/blobs/{desc['digest']}")
        assert blob.status_code == 200, (desc, blob.text)
        assert sha256(blob.content) == desc["digest"]


async def test_promoted_and_mounted_images_survive_their_source_projects_force_delete_and_gc(reg):
    await make_project(reg, "dev")
    await make_project(reg, "prod")
    await make_project(reg, "other")
    promoted, _ = await reg.push_image("dev/app", "1.0", seed=7, layers=2)
    r = await reg.client.post("/api/v1/promotions", json={"source": "dev/app:1.0", "destination": "prod/app", "tags": ["1.0"]})
    assert r.status_code == 201, r.text
    mounted, body = await reg.push_image("dev/tool", "1.0", seed=8)
    doc = json.loads(body)
    for desc in [doc["config"], *doc["layers"]]:
        m = await reg.client.post("/v2/other/tool/blobs/uploads/", params={"mount": desc["digest"], "from": "dev/tool"})
        assert m.status_code == 201, m.text
    assert (await reg.put_manifest("other/tool", "1.0", body, OCI_MANIFEST)).status_code == 201

    assert (await reg.client.delete("/api/v1/projects/dev", params={"force": "true"})).status_code == 204
    later(reg)
    result = await run_gc(reg)
    assert result["deleted"] == 0, result  # every dev blob is still referenced from prod or other
    assert repo_names(reg) == ["other/tool", "prod/app"]
    await pull_everything(reg, "prod/app", promoted)
    await pull_everything(reg, "other/tool", mounted)


async def test_a_robot_without_delete_cannot_delete_a_repository_and_paths_cannot_escape_the_project(reg):
    await make_project(reg, "team")
    await make_project(reg, "secret")
    await reg.push_image("team/app", "v1", seed=1)
    await reg.push_image("secret/app", "v1", seed=2)
    r = await reg.client.post("/api/v1/robots", json={"name": "ci", "project": "team", "actions": ["pull", "push"]})
    assert r.status_code == 201, r.text
    robot = (r.json()["name"], r.json()["secret"])
    error(await reg.client.delete("/api/v1/repositories/team/app", params={"force": "true"}, auth=robot), 403, "DENIED")
    error(await reg.client.delete("/api/v1/repositories/team/app/tags/v1", auth=robot), 403, "DENIED")
    admin = await make_user(reg, "ann", "team", role="admin")
    for path in ("team/..%2Fsecret/app", "team%2F..%2Fsecret%2Fapp", "team/app/..%2F..%2Fsecret%2Fapp"):
        r = await reg.client.delete(f"/api/v1/repositories/{path}", params={"force": "true"}, auth=admin)
        assert r.status_code in (400, 404), (path, r.status_code, r.text)
    listed = await reg.client.get("/api/v1/repositories", params={"sort": "-size"}, auth=admin)
    assert [x["name"] for x in listed.json()] == ["team/app"] and listed.headers["x-total-count"] == "1"
    error(await reg.client.get("/api/v1/repositories", params={"project": "secret"}, auth=admin), 404, "NOT_FOUND")
    assert repo_names(reg) == ["secret/app", "team/app"]


async def test_a_repository_delete_frees_quota_at_once_except_for_blobs_another_repository_still_links(reg):
    await make_project(reg, "team")
    await reg.push_image("team/a", "v1", seed=1, layers=2)
    body = await reg.client.get("/v2/team/a/manifests/v1", headers={"Accept": OCI_MANIFEST})
    doc = body.json()
    for desc in [doc["config"], *doc["layers"]]:
        m = await reg.client.post("/v2/team/b/blobs/uploads/", params={"mount": desc["digest"], "from": "team/a"})
        assert m.status_code == 201, m.text
    assert (await reg.put_manifest("team/b", "v1", body.content, OCI_MANIFEST)).status_code == 201
    _, c_manifest = await reg.push_image("team/c", "v1", seed=2)
    used = lambda: reg.client.get("/api/v1/projects/team/quota")  # noqa: E731
    before = (await used()).json()["used_bytes"]
    c_bytes = reg.scalar("SELECT SUM(b.size) FROM blobs b JOIN repository_blobs rb ON rb.blob_id = b.id"
                         " JOIN repositories r ON r.id = rb.repository_id WHERE r.name = 'team/c'")
    assert (await reg.client.delete("/api/v1/repositories/team/a", params={"force": "true"})).status_code == 200
    after_a = before - len(body.content)  # its manifest goes; team/b still links every blob of team/a
    assert (await used()).json()["used_bytes"] == after_a
    assert (await reg.client.delete("/api/v1/repositories/team/c", params={"force": "true"})).status_code == 200
    assert (await used()).json()["used_bytes"] == after_a - c_bytes - len(c_manifest)


async def test_gc_grace_seconds_has_an_upper_bound_so_a_run_cannot_fail_on_date_overflow(reg):
    detail = error(await reg.client.post("/api/v1/system/gc", json={"grace_seconds": 10**12}), 400, "INVALID_REQUEST")
    assert "grace_seconds" in json.dumps(detail)


async def test_a_repository_delete_of_a_name_the_tag_route_shadows_does_not_delete_a_tag_elsewhere(reg):
    """`team/tags/x` as a path is tag `x` of repository `team` (docs/api.md). `dockyard repos delete
    --force team/tags/x` sent exactly that and deleted tag x of `team`, not the repository asked for."""
    await make_project(reg, "team")
    await reg.push_image("team", "x", seed=1)
    await reg.push_image("team/tags/x", "v1", seed=2)
    refused = error(await reg.client.delete("/api/v1/repositories/team/tags/x", params={"force": "true"}), 400, "INVALID_REQUEST")
    assert "team/tags/x" in refused["message"]
    assert (await reg.client.get("/v2/team/manifests/x", headers={"Accept": OCI_MANIFEST})).status_code == 200
    assert (await reg.client.delete("/api/v1/repositories/team/tags/x")).status_code == 204  # a plain tag delete still works
    assert (await reg.client.get("/v2/team/manifests/x", headers={"Accept": OCI_MANIFEST})).status_code == 404


async def test_a_deleted_projects_retention_schedules_go_with_it(reg):
    """Retention policies cascade with their project, but their scheduler rows (`retention:<id>`) are
    keyed by name: they stayed and queued a failing job on every tick, forever."""
    await make_project(reg, "team")
    document = {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                                                          "countNumber": 5}, "action": {"type": "expire"}}]}
    r = await reg.client.post("/api/v1/projects/team/retention-policies",
                              json={"name": "keep5", "format": "ecr", "document": document, "schedule": "0 3 * * *"})
    assert r.status_code == 201, r.text
    name = f"retention:{r.json()['id']}"
    assert reg.services.scheduler.get(name) is not None
    assert (await reg.client.delete("/api/v1/projects/team")).status_code == 204
    assert reg.count("schedules", "name = :n", n=name) == 0
