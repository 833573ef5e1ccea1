"""Issue 9, findings 4 and 6 and upload ownership: copies run the source's pull gate, quotas and
size caps hold on every append, and an upload session belongs to the account that opened it.
Each test runs on SQLite and PostgreSQL (the `env` fixture)."""

from __future__ import annotations

import json

import httpx

from .governance_helpers import ADMIN, PASSWORD, env, error  # noqa: F401
from .helpers import pattern, sha256

CLIENT = {"X-Dockyard-Client": "test"}


async def _layers(env, repo: str, tag: str) -> list[str]:
    r = await env.api.get(f"/v2/{repo}/manifests/{tag}")
    assert r.status_code == 200, r.text
    doc = json.loads(r.content)
    return [doc["config"]["digest"]] + [layer["digest"] for layer in doc["layers"]]


async def test_finding4_promotion_runs_source_pull_gate(env):
    """A guest refused a pull by require_signature can neither promote the image into their own project
    nor mount its layers there, so they cannot pull the layers by a detour."""
    await env.project("secure")
    await env.project("mal")
    digest, _ = await env.reg.push_image("secure/app", "1", seed=4, layers=2)
    blobs = await _layers(env, "secure/app", "1")
    r = await env.api.patch("/api/v1/projects/secure/security", json={"require_signature": True})
    assert r.status_code == 200, r.text
    mallory = await env.user("mallory", secure="guest", mal="admin")

    # The pull itself is refused by the gate ...
    message = error(await env.api.get("/v2/secure/app/manifests/1", auth=mallory), 403, "DENIED")["message"]
    assert "require-signature of project secure" in message
    # ... and so is the promotion into mallory's own project, with the same reason; nothing is copied.
    body = {"source": "secure/app:1", "destination": "mal/app", "tags": ["1"]}
    message = error(await env.api.post("/api/v1/promotions", json=body, auth=mallory), 403, "DENIED")["message"]
    assert "require-signature of project secure" in message
    assert env.reg.count("repositories", "name = :n", n="mal/app") == 0
    error(await env.api.get("/v2/mal/app/manifests/1", auth=mallory), 404, "NAME_UNKNOWN")
    # By digest too (a child or an image promoted by digest is the same pull).
    body = {"source": f"secure/app@{digest}", "destination": "mal/app", "tags": ["1"]}
    error(await env.api.post("/api/v1/promotions", json=body, auth=mallory), 403, "DENIED")

    # A cross-repository mount (named source, or automatic discovery) is declined: 202, upload instead.
    for params in ({"mount": blobs[1], "from": "secure/app"}, {"mount": blobs[1]}):
        r = await env.api.post("/v2/mal/app/blobs/uploads/", params=params, auth=mallory)
        assert r.status_code == 202, (params, r.status_code, r.text)
        assert (await env.api.delete(r.headers["location"], auth=mallory)).status_code == 204
    for blob in blobs:
        error(await env.api.get(f"/v2/mal/app/blobs/{blob}", auth=mallory), 404, "BLOB_UNKNOWN")

    # An account that may push to the source is exempt, as it is for a pull (cosign reads what it signs).
    dev = await env.user("dev", secure="developer", mal="developer")
    body = {"source": "secure/app:1", "destination": "mal/app", "tags": ["1"]}
    assert (await env.api.post("/api/v1/promotions", json=body, auth=dev)).status_code == 201
    r = await env.api.post("/v2/mal/other/blobs/uploads/", params={"mount": blobs[1], "from": "secure/app"}, auth=dev)
    assert r.status_code == 201, r.text
    # Without a pull gate on the source, guests copy as before.
    r = await env.api.patch("/api/v1/projects/secure/security", json={"require_signature": False})
    assert r.status_code == 200
    body = {"source": "secure/app:1", "destination": "mal/copy", "tags": ["1"]}
    assert (await env.api.post("/api/v1/promotions", json=body, auth=mallory)).status_code == 201


async def test_finding4_promotion_runs_source_severity_gate(env):
    """The same for the severity gate: an unscanned image under block-unscanned is not copied by a guest."""
    await env.project("secure")
    await env.project("mal")
    await env.reg.push_image("secure/app", "1", seed=5)
    r = await env.api.patch("/api/v1/projects/secure/security", json={"block_severity": "low", "unscanned": "block"})
    assert r.status_code == 200, r.text
    mallory = await env.user("mallory", secure="guest", mal="admin")
    error(await env.api.get("/v2/secure/app/manifests/1", auth=mallory), 403, "DENIED")
    body = {"source": "secure/app:1", "destination": "mal/app", "tags": ["1"]}
    message = error(await env.api.post("/api/v1/promotions", json=body, auth=mallory), 403, "DENIED")["message"]
    assert "block-unscanned of project secure" in message
    assert env.reg.count("repositories", "name = :n", n="mal/app") == 0


# -- finding 6: quotas and size caps on every append --------------------------------------------


async def _quota(env, project: str, value) -> None:
    r = await env.api.put(f"/api/v1/projects/{project}/quota", json={"quota_bytes": value})
    assert r.status_code == 200, r.text


async def test_finding6_repository_named_after_project_counts(env):
    await env.project("malproj")
    await env.reg.push_blob("malproj", pattern(700, seed=1))
    await env.reg.push_blob("malproj/x", pattern(200, seed=2))
    r = await env.api.get("/api/v1/projects/malproj/quota")
    assert r.json()["used_bytes"] == 900
    await _quota(env, "malproj", 1000)
    location = await env.reg.start_upload("malproj")
    data = pattern(300, seed=3)
    error(await env.api.put(location, params={"digest": sha256(data)}, content=data), 403, "DENIED")


async def test_finding6_patch_over_quota_is_refused_and_not_kept(env):
    """A 3 MB PATCH into a project with a 1000-byte quota is refused as it streams, and nothing stays."""
    await env.project("malproj")
    await _quota(env, "malproj", 1000)
    location = await env.reg.start_upload("malproj/app")
    big = pattern(3 * 1024 * 1024, seed=7)
    error(await env.api.patch(location, content=big), 403, "DENIED")
    assert env.reg.upload_rows() == 0 and env.reg.upload_objects() == []
    error(await env.api.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    # Declared up front (Content-Range): refused before the body is read.
    location = await env.reg.start_upload("malproj/app")
    r = await env.api.patch(location, content=big[:2000], headers={"Content-Range": "0-1999"})
    error(r, 403, "DENIED")
    assert env.reg.upload_rows() == 0 and env.reg.upload_objects() == []
    # Chunks under the quota are fine; open uploads count, so two sessions cannot each take the quota.
    first = await env.reg.start_upload("malproj/app")
    r = await env.api.patch(first, content=pattern(600, seed=8))
    assert r.status_code == 202, r.text
    second = await env.reg.start_upload("malproj/app")
    error(await env.api.patch(second, content=pattern(600, seed=9)), 403, "DENIED")
    assert env.reg.upload_rows() == 1
    # Monolithic uploads (POST ?digest=) are checked the same way.
    data = pattern(500, seed=10)
    r = await env.api.post("/v2/malproj/app/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    error(r, 403, "DENIED")
    assert env.reg.upload_rows() == 1 and env.reg.count("blobs", "digest = :d", d=sha256(data)) == 0


async def test_finding6_blob_size_cap_on_every_append(env):
    env.services.uploads.max_blob_bytes = 4096
    env.services.blobs.max_blob_bytes = 4096
    await env.project("team")
    location = await env.reg.start_upload("team/app")
    r = await env.api.patch(location, content=pattern(3000, seed=1))
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    error(await env.api.patch(location, content=pattern(3000, seed=2)), 413, "SIZE_INVALID")
    assert env.reg.upload_rows() == 0 and env.reg.upload_objects() == []
    data = pattern(5000, seed=3)
    location = await env.reg.start_upload("team/app")
    error(await env.api.put(location, params={"digest": sha256(data)}, content=data), 413, "SIZE_INVALID")
    assert env.reg.upload_rows() == 0 and env.reg.upload_objects() == []
    # A mount of a blob over the cap is refused too.
    env.services.uploads.max_blob_bytes = env.services.blobs.max_blob_bytes = 1 << 20
    digest = await env.reg.push_blob("team/src", data)
    env.services.uploads.max_blob_bytes = env.services.blobs.max_blob_bytes = 4096
    r = await env.api.post("/v2/team/dst/blobs/uploads/", params={"mount": digest, "from": "team/src"})
    error(r, 413, "SIZE_INVALID")


async def test_finding6_open_upload_sessions_are_capped(env):
    env.services.uploads.max_per_account = 3
    env.services.uploads.max_per_project = 5
    await env.project("team")
    await env.project("other")
    a = await env.user("alice", team="developer", other="developer")
    b = await env.user("bob", team="developer")
    for _ in range(3):
        assert (await env.api.post("/v2/team/app/blobs/uploads/", auth=a)).status_code == 202
    r = error(await env.api.post("/v2/other/app/blobs/uploads/", auth=a), 429, "TOOMANYREQUESTS")
    assert "3 open upload sessions" in r["message"]
    assert (await env.api.post("/v2/team/app/blobs/uploads/", auth=b)).status_code == 202
    assert (await env.api.post("/v2/team/app/blobs/uploads/", auth=b)).status_code == 202
    r = error(await env.api.post("/v2/team/app/blobs/uploads/", auth=b), 429, "TOOMANYREQUESTS")
    assert "project team has 5 open upload sessions" in r["message"]
    assert env.reg.upload_rows() == 5


async def test_newcomer_upload_session_cap_names_its_setting(env):
    """A 429 for too many sessions said only "the limit is 2"; an operator needs the setting to raise."""
    env.services.uploads.max_per_account = 1
    env.services.uploads.max_per_project = 2
    await env.project("team")
    a = await env.user("alice", team="developer")
    b = await env.user("bob", team="developer")
    c = await env.user("carol", team="developer")
    assert (await env.api.post("/v2/team/app/blobs/uploads/", auth=a)).status_code == 202
    r = error(await env.api.post("/v2/team/app/blobs/uploads/", auth=a), 429, "TOOMANYREQUESTS")
    assert "max_uploads_per_account" in r["message"]
    assert (await env.api.post("/v2/team/app/blobs/uploads/", auth=b)).status_code == 202
    r = error(await env.api.post("/v2/team/app/blobs/uploads/", auth=c), 429, "TOOMANYREQUESTS")
    assert "max_uploads_per_project" in r["message"]


# -- upload sessions belong to the account that opened them ---------------------------------------


async def test_upload_sessions_are_tied_to_their_owner(env):
    await env.project("team")
    alice = await env.user("alice", team="developer")
    bob = await env.user("bob", team="developer")
    r = await env.api.post("/v2/team/app/blobs/uploads/", auth=alice)
    assert r.status_code == 202
    location = r.headers["location"]
    assert (await env.api.patch(location, content=b"alice's", auth=alice)).status_code == 202
    data = b"alice's bytes"
    for method, kwargs in (
        ("GET", {}),
        ("PATCH", {"content": b"bob's"}),
        ("PUT", {"params": {"digest": sha256(data)}, "content": b" bytes"}),
        ("DELETE", {}),
    ):
        r = await env.api.request(method, location, auth=bob, **kwargs)
        error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    # Bob's answer is exactly the one for a session that never existed.
    ghost = location.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    assert (await env.api.get(location, auth=bob)).json()["errors"][0]["message"].replace(
        location.rsplit("/", 1)[1], "ID"
    ) == (await env.api.get(ghost, auth=bob)).json()["errors"][0]["message"].replace(ghost.rsplit("/", 1)[1], "ID")
    # Alice's session is untouched and she finishes it.
    r = await env.api.get(location, auth=alice)
    assert r.status_code == 204 and r.headers["range"] == "0-6"
    r = await env.api.put(location, params={"digest": sha256(data)}, content=b" bytes", auth=alice)
    assert r.status_code == 201, r.text
    # A bearer token of the same account continues a session opened with Basic credentials.
    r = await env.api.post("/v2/team/app/blobs/uploads/", auth=alice)
    location = r.headers["location"]
    token = (await env.api.get("/token", params={"service": env.services.settings.token_service,
                                                 "scope": "repository:team/app:pull,push"}, auth=alice)).json()["token"]
    r = await env.api.get(location, auth=None, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 204, r.text


# -- finding 5: the catalog filters before paging ------------------------------------------------


async def _walk_catalog(env, auth, n: int) -> tuple[list[list[str]], list[str]]:
    """Follow Link headers from the first page; returns the pages and every `last` the links named."""
    pages, lasts, url = [], [], f"/v2/_catalog?n={n}"
    while url:
        r = await env.api.get(url, auth=auth)
        assert r.status_code == 200, r.text
        pages.append(r.json()["repositories"])
        link = r.headers.get("link")
        if link is None:
            break
        url = link[link.index("<") + 1 : link.index(">")]
        lasts.append(httpx.URL(url).params["last"])
        assert len(pages) < 50
    return pages, lasts


async def test_finding5_catalog_paging_never_reveals_private_names(env):
    for name, public in (("alpha", False), ("beta", True), ("gamma", False), ("zeta", False)):
        await env.project(name, public=public)
    repos = ["alpha/a1", "alpha/a2", "alpha/a3", "beta/b1", "beta/b2", "gamma", "gamma/g1", "zeta/z1", "zeta/z2"]
    for i, repo in enumerate(repos):
        await env.reg.push_blob(repo, pattern(10, seed=i))
    carol = await env.user("carol", gamma="guest")
    visible = ["beta/b1", "beta/b2", "gamma", "gamma/g1"]
    for n in (1, 2, 3):
        pages, lasts = await _walk_catalog(env, carol, n)
        assert [name for page in pages for name in page] == visible
        assert set(lasts) <= set(visible)  # no Link ever names (or hints at) a private repository
        assert all(len(page) == n for page in pages[:-1])  # pages are full
    # A hand-made `last` inside a private range reveals nothing either.
    r = await env.api.get("/v2/_catalog", params={"n": 1, "last": "alpha/a1"}, auth=carol)
    assert r.json()["repositories"] == ["beta/b1"]
    r = await env.api.get("/v2/_catalog", params={"n": 1, "last": "gamma/g1"}, auth=carol)
    assert r.json()["repositories"] == [] and "link" not in r.headers
    # A robot sees what it may pull (its own project and public ones); an admin sees everything.
    r = await env.api.post("/api/v1/robots", json={"name": "ci", "project": "zeta", "actions": ["pull"]})
    assert r.status_code == 201, r.text
    robot = (r.json()["name"], r.json()["secret"])
    pages, _ = await _walk_catalog(env, robot, 2)
    assert [name for page in pages for name in page] == ["beta/b1", "beta/b2", "zeta/z1", "zeta/z2"]
    r = await env.api.post("/api/v1/robots", json={"name": "pusher", "project": "zeta", "actions": ["push"]})
    pages, _ = await _walk_catalog(env, (r.json()["name"], r.json()["secret"]), 2)
    # push implies pull for robots (issue 15): a push-only robot sees its project like a pull robot
    assert [name for page in pages for name in page] == ["beta/b1", "beta/b2", "zeta/z1", "zeta/z2"]
    pages, _ = await _walk_catalog(env, ADMIN, 4)
    assert [name for page in pages for name in page] == repos


# -- finding 9: "missing" and "not visible" get the same answer ---------------------------------


def _answer(r: httpx.Response, *names: str) -> tuple:
    """(status, code, message) with the probed names blanked, so a missing and a hidden object compare equal."""
    try:
        body = r.json()
        error_ = body["errors"][0]
        code, message = error_["code"], json.dumps([error_["message"], error_.get("detail")])
    except (ValueError, KeyError, IndexError, TypeError):
        code, message = None, r.text
    for name in names:
        message = message.replace(name, "<name>")
    return r.status_code, code, message


async def test_finding9_missing_and_invisible_get_the_same_answer(env):
    await env.project("secret")
    await env.project("pub", public=True)
    await env.project("eve")
    digest, _ = await env.reg.push_image("secret/app", "latest", seed=3)
    layer = (await _layers(env, "secret/app", "latest"))[1]
    hidden_upload = (await env.api.post("/v2/secret/app/blobs/uploads/")).headers["location"].rsplit("/", 1)[1]
    for project in ("secret", "pub"):
        r = await env.api.post("/api/v1/robots", json={"name": "ci", "project": project, "actions": ["pull"]})
        assert r.status_code == 201, r.text
    r = await env.api.post("/api/v1/robots", json={"name": "mirror", "permissions": [{"project": "secret", "actions": ["pull"]}]})
    assert r.status_code == 201, r.text
    await env.rule("secret", "immutable", "v*")
    eve = await env.user("eve", eve="admin")
    token = {}
    for project in ("secret", "ghost"):
        r = await env.api.get("/token", params={"service": env.services.settings.token_service,
                                                "scope": f"repository:{project}/app:pull,push,delete"}, auth=eve)
        token[project] = {"Authorization": f"Bearer {r.json()['token']}"}

    def v2(project: str) -> list[tuple[str, str, dict]]:
        base = f"/v2/{project}/app"
        return [
            ("GET", f"{base}/manifests/latest", {}), ("HEAD", f"{base}/manifests/latest", {}),
            ("GET", f"{base}/manifests/{digest}", {}), ("DELETE", f"{base}/manifests/{digest}", {}),
            ("PUT", f"{base}/manifests/new", {"content": b"{}"}),
            ("GET", f"{base}/blobs/{layer}", {}), ("HEAD", f"{base}/blobs/{layer}", {}),
            ("DELETE", f"{base}/blobs/{layer}", {}), ("GET", f"{base}/tags/list", {}),
            ("GET", f"{base}/referrers/{digest}", {}), ("POST", f"{base}/blobs/uploads/", {}),
            ("POST", f"{base}/blobs/uploads/", {"params": {"mount": layer, "from": "secret/app"}}),
            ("GET", f"{base}/blobs/uploads/{hidden_upload}", {}),
            ("PATCH", f"{base}/blobs/uploads/{hidden_upload}", {"content": b"x"}),
        ]

    def api(project: str) -> list[tuple[str, str, dict]]:
        p = f"/api/v1/projects/{project}"
        return [
            ("GET", p, {}), ("PATCH", p, {"json": {"public": True}}), ("GET", f"{p}/members", {}),
            ("POST", f"{p}/members", {"json": {"username": "eve", "role": "admin"}}),
            ("GET", f"{p}/quota", {}), ("GET", f"{p}/security", {}), ("GET", f"{p}/security/allowlist", {}),
            ("GET", f"{p}/security/trusted-keys", {}), ("GET", f"{p}/tag-rules", {}),
            ("DELETE", f"{p}/tag-rules/1", {"headers": CLIENT}), ("GET", f"{p}/retention-policies", {}),
            ("GET", f"/api/v1/repositories/{project}/app/tags", {}),
            ("PUT", f"/api/v1/repositories/{project}/app/tags/x", {"json": {"digest": digest}}),
            ("GET", f"/api/v1/repositories/{project}/app/artifacts/latest/scan", {}),
            ("GET", f"/api/v1/repositories/{project}/app/artifacts/latest/signatures", {}),
            ("GET", f"/api/v1/robots/robot${project}+ci", {}), ("GET", "/api/v1/robots", {"params": {"project": project}}),
            ("POST", f"/api/v1/robots/robot${project}+ci/rotate", {"headers": CLIENT}),
            ("GET", "/api/v1/audit", {"params": {"project": project}}),
            ("POST", "/api/v1/promotions", {"json": {"source": f"{project}/app:latest", "destination": "eve/app"}}),
            ("POST", "/api/v1/promotions", {"json": {"source": "eve/app:latest", "destination": f"{project}/app"}}),
        ]

    mismatches = []
    for auth, headers, paths in (
        (eve, {}, v2), (None, {}, v2), ("token", None, v2), (eve, {}, api),
    ):
        hidden_paths, missing_paths = paths("secret"), paths("ghost")
        for (method, hidden, kw), (_, missing, kw2) in zip(hidden_paths, missing_paths):
            kw_h, kw_m = dict(kw), dict(kw2)
            if auth == "token":
                kw_h["headers"], kw_m["headers"] = token["secret"], token["ghost"]
                a = None
            else:
                a = auth
            rh = await env.api.request(method, hidden, auth=a, **kw_h)
            rm = await env.api.request(method, missing, auth=a, **kw_m)
            if _answer(rh, "secret", "ghost") != _answer(rm, "secret", "ghost") or rh.status_code < 400:
                mismatches.append((method, hidden, auth if auth != "token" else "token", _answer(rh), _answer(rm)))
    assert not mismatches, "\n".join(map(str, mismatches))
    # Robots: one of a public project eve is not in, and a system robot, look like ones that do not exist.
    for name in ("robot$pub+ci", "robot$mirror"):
        rh = await env.api.get(f"/api/v1/robots/{name}", auth=eve)
        rm = await env.api.get("/api/v1/robots/robot$nobody", auth=eve)
        assert _answer(rh, name, "robot$nobody") == _answer(rm, name, "robot$nobody") and rh.status_code == 404
    # Nothing changed.
    assert (await env.api.get("/v2/secret/app/manifests/latest")).status_code == 200
    assert (await env.api.get(f"/v2/secret/app/blobs/uploads/{hidden_upload}")).status_code == 204


async def test_finding6_retention_covers_repository_named_after_project(env):
    """Between features: the repository named exactly after its project is the project's for retention
    too (as for quotas and tag rules), so it cannot hoard images a retention policy would expire."""
    await env.project("malproj")
    await env.reg.push_image("malproj", None, seed=1)
    await env.reg.push_image("malproj/app", None, seed=2)
    doc = {"rules": [{"action": "delete", "untagged": True}]}
    r = await env.api.post("/api/v1/projects/malproj/retention-policies",
                           json={"name": "untagged", "format": "native", "document": doc})
    assert r.status_code == 201, r.text
    r = await env.api.post(f"/api/v1/projects/malproj/retention-policies/{r.json()['id']}/dry-run", headers=CLIENT)
    assert r.status_code == 200, r.text
    assert [x["repository"] for x in r.json()["repositories"]] == ["malproj", "malproj/app"]
