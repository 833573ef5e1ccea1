"""Tag rules through every writer: /v2 PUT and DELETE, API retag/delete, manifest delete, promotion,
the deletes retention uses; plus break-glass overrides and deny/require naming rules."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dockyard.auth.principals import Principal
from dockyard.errors import Denied
from dockyard.policy.tag_rules import Override

from .governance_helpers import env, error, index_body  # noqa: F401  (env is a fixture)
from .helpers import OCI_INDEX, OCI_MANIFEST, sha256

REPO = "team/app"


async def _setup(env, *roles: tuple[str, str]) -> dict[str, tuple[str, str]]:
    await env.project("team")
    return {name: await env.user(name, team=role) for name, role in roles}


# -- managing rules ----------------------------------------------------------------------------


async def test_rule_crud_validation_permissions_and_audit(env):
    users = await _setup(env, ("maint", "maintainer"), ("guest", "guest"))
    api = env.api
    rule_id = await env.rule("team", "immutable", "v*", "app/*")
    listed = (await api.get("/api/v1/projects/team/tag-rules", auth=users["guest"])).json()  # members may read
    assert [(r["id"], r["project"], r["kind"], r["repository_pattern"], r["tag_pattern"], r["created_by"]) for r in listed] == [
        (rule_id, "team", "immutable", "app/*", "v*", "admin")
    ]
    bad = [
        {"kind": "immutable", "tag_pattern": "v["},  # unbalanced class
        {"kind": "immutable", "tag_pattern": "v{1,2"},  # unbalanced brace
        {"kind": "immutable", "tag_pattern": "v1/x"},  # tags have no '/'
        {"kind": "immutable", "tag_pattern": "v*", "repository_pattern": "/app"},
        {"kind": "immutable", "tag_pattern": "v*", "repository_pattern": "App/*"},  # never matches a name
        {"kind": "immutable", "tag_pattern": "{1..99999}"},  # brace bomb
        {"kind": "deny", "tag_pattern": "re:(latest"},  # bad regex
        {"kind": "require", "tag_pattern": ""},
    ]
    for body in bad:
        detail = error(await api.post("/api/v1/projects/team/tag-rules", json=body), 400, "INVALID_REQUEST")
        assert "pattern" in detail["message"], detail
    error(await api.post("/api/v1/projects/team/tag-rules", json={"kind": "frozen", "tag_pattern": "x"}), 400, "INVALID_REQUEST")
    # manage-policies is needed to change rules; a maintainer has retag/delete but not that
    error(await api.post("/api/v1/projects/team/tag-rules", json={"kind": "deny", "tag_pattern": "x"}, auth=users["maint"]), 403, "DENIED")
    error(await api.delete(f"/api/v1/projects/team/tag-rules/{rule_id}", auth=users["maint"]), 403, "DENIED")
    # system rules: administrators only; a project's rule is not deletable through the system path or another project
    error(await api.get("/api/v1/system/tag-rules", auth=users["maint"]), 403, "DENIED")
    error(await api.post("/api/v1/system/tag-rules", json={"kind": "immutable", "tag_pattern": "*"}, auth=users["maint"]), 403, "DENIED")
    error(await api.delete(f"/api/v1/system/tag-rules/{rule_id}"), 404, "NOT_FOUND")
    await env.project("other")
    error(await api.delete(f"/api/v1/projects/other/tag-rules/{rule_id}"), 404, "NOT_FOUND")
    system_id = await env.rule(None, "immutable", "release-*", "prod/**")
    assert [r["id"] for r in (await api.get("/api/v1/system/tag-rules")).json()] == [system_id]
    assert (await api.delete(f"/api/v1/projects/team/tag-rules/{rule_id}")).status_code == 204
    assert (await api.delete(f"/api/v1/system/tag-rules/{system_id}")).status_code == 204
    assert (await api.get("/api/v1/projects/team/tag-rules")).json() == []
    created = await env.audit("tag-rule.create")
    deleted = await env.audit("tag-rule.delete")
    assert [e["detail"]["id"] for e in created] == [system_id, rule_id]
    assert [e["detail"]["id"] for e in deleted] == [system_id, rule_id]
    assert created[1]["project"] == "team" and created[1]["detail"]["tag_pattern"] == "v*"


# -- immutability through every writer -----------------------------------------------------------


async def test_v2_overwrite_is_denied_naming_the_rule_and_same_digest_is_allowed(env):
    await _setup(env)
    rule_id = await env.rule("team", "immutable", "v*")
    d1, body1 = await env.reg.push_image(REPO, "v1.0.0", seed=1)
    assert (await env.reg.put_manifest(REPO, "v1.0.0", body1, OCI_MANIFEST)).status_code == 201  # same digest again
    d2, body2 = await env.reg.push_image(REPO, "dev", seed=2)
    r = await env.reg.put_manifest(REPO, "v1.0.0", body2, OCI_MANIFEST)
    detail = error(r, 403, "DENIED")
    assert f"tag v1.0.0 of {REPO} is immutable (rule {rule_id}: v* in **)" in detail["message"]
    assert "re-pushing the same digest is allowed" in detail["message"]
    # ?tag= on a by-digest PUT is a tag writer too
    r = await env.api.put(f"/v2/{REPO}/manifests/{d2}", params={"tag": ["v1.0.0"]}, content=body2, headers={"Content-Type": OCI_MANIFEST})
    error(r, 403, "DENIED")
    assert await env.digest_of(REPO, "v1.0.0") == d1
    # tags the rule does not match stay mutable
    assert (await env.reg.put_manifest(REPO, "dev", body1, OCI_MANIFEST)).status_code == 201
    assert await env.digest_of(REPO, "dev") == d1
    # a repository the rule's pattern does not cover is unaffected
    await env.rule("team", "immutable", "r*", "web")
    await env.reg.push_image(REPO, "r1", seed=3)
    assert (await env.reg.put_manifest(REPO, "r1", body1, OCI_MANIFEST)).status_code == 201


async def test_tag_and_manifest_deletes_are_denied_and_break_glass_is_audited(env):
    users = await _setup(env, ("maint", "maintainer"), ("boss", "admin"))
    rule_id = await env.rule("team", "immutable", "v*")
    d1, _ = await env.reg.push_image(REPO, "v1", seed=1)
    error(await env.api.delete(f"/v2/{REPO}/manifests/v1"), 403, "DENIED")  # tag delete (/v2)
    error(await env.api.delete(f"/v2/{REPO}/manifests/{d1}"), 403, "DENIED")  # manifest delete of a tagged manifest
    detail = error(await env.api.delete(f"/api/v1/repositories/{REPO}/tags/v1", auth=users["maint"]), 403, "DENIED")
    assert f"rule {rule_id}: v* in **" in detail["message"] and "cannot be deleted" in detail["message"]
    # break glass: refused for non-admins even with a reason, refused without a real reason
    r = await env.api.delete(f"/api/v1/repositories/{REPO}/tags/v1", params={"override_reason": "hotfix"}, auth=users["maint"])
    assert "only an admin of project team" in error(r, 403, "DENIED")["message"]
    error(await env.api.delete(f"/api/v1/repositories/{REPO}/tags/v1", params={"override_reason": "  "}, auth=users["boss"]), 400, "INVALID_REQUEST")
    assert await env.digest_of(REPO, "v1") == d1
    assert await env.audit("tag.override") == []
    r = await env.api.delete(f"/api/v1/repositories/{REPO}/tags/v1", params={"override_reason": "leaked secret in layer"}, auth=users["boss"])
    assert r.status_code == 204, r.text
    assert await env.digest_of(REPO, "v1") is None
    [event] = await env.audit("tag.override")
    assert event["actor"] == "boss" and event["object"] == f"{REPO}:v1" and event["project"] == "team"
    assert event["detail"]["reason"] == "leaked secret in layer" and event["detail"]["rule"] == rule_id
    assert event["detail"]["previous"] == d1 and event["detail"]["operation"] == "delete"
    # an untagged manifest is deletable; the rule protects tags, not digests
    assert (await env.api.delete(f"/v2/{REPO}/manifests/{d1}")).status_code == 202


async def test_deleting_a_child_of_an_immutable_index_is_denied(env):
    await _setup(env)
    await env.rule("team", "immutable", "v*")
    amd, amd_body = await env.reg.push_image(REPO, seed=1)
    arm, arm_body = await env.reg.push_image(REPO, seed=2)
    idx = await env.reg.push_manifest(REPO, "v2", index_body(("amd64", amd_body), ("arm64", arm_body)), OCI_INDEX)
    error(await env.api.delete(f"/v2/{REPO}/manifests/{arm}"), 403, "DENIED")
    assert (await env.api.get(f"/v2/{REPO}/manifests/{arm}")).status_code == 200
    assert await env.digest_of(REPO, "v2") == idx


async def test_newcomer_immutable_refusal_names_override_reason(env):
    """"a project admin may override with a reason" did not say how; the message names `override_reason`."""
    await _setup(env)
    await env.rule("team", "immutable", "v*")
    await env.reg.push_image(REPO, "v1", seed=1)
    r = await env.api.delete(f"/api/v1/repositories/{REPO}/tags/v1", headers={"X-Dockyard-Client": "test"})
    assert "override_reason" in error(r, 403, "DENIED")["message"]
    assert (await env.api.get(f"/v2/{REPO}/manifests/v1")).status_code == 200


async def test_retag_and_promotion_onto_an_immutable_tag(env):
    users = await _setup(env, ("maint", "maintainer"), ("boss", "admin"))
    rule_id = await env.rule("team", "immutable", "v*")
    d1, _ = await env.reg.push_image(REPO, "v1", seed=1)
    d2, _ = await env.reg.push_image(REPO, "candidate", seed=2)
    r = await env.api.put(f"/api/v1/repositories/{REPO}/tags/v1", json={"digest": d2}, auth=users["maint"])
    assert f"rule {rule_id}" in error(r, 403, "DENIED")["message"]
    r = await env.api.put(f"/api/v1/repositories/{REPO}/tags/v1", json={"digest": d1}, auth=users["maint"])
    assert r.status_code == 200 and r.json()["previous"] == d1  # same digest: allowed
    promo = {"source": f"{REPO}:candidate", "destination": REPO, "tags": ["v1"]}
    error(await env.api.post("/api/v1/promotions", json=promo, auth=users["maint"]), 403, "DENIED")
    assert await env.digest_of(REPO, "v1") == d1
    r = await env.api.post("/api/v1/promotions", json={**promo, "override_reason": "rebuild"}, auth=users["maint"])
    error(r, 403, "DENIED")
    r = await env.api.put(
        f"/api/v1/repositories/{REPO}/tags/v1", json={"digest": d2, "override_reason": "CVE fix rebuild"}, auth=users["boss"]
    )
    assert r.status_code == 200 and r.json()["previous"] == d1
    assert await env.digest_of(REPO, "v1") == d2
    r = await env.api.post("/api/v1/promotions", json={**promo, "source": f"{REPO}@{d1}", "override_reason": "roll back"}, auth=users["boss"])
    assert r.status_code == 201, r.text
    assert await env.digest_of(REPO, "v1") == d1
    overrides = await env.audit("tag.override")
    assert [(e["detail"]["reason"], e["detail"]["operation"]) for e in overrides] == [("roll back", "move"), ("CVE fix rebuild", "move")]
    [retag] = [e for e in await env.audit("tag.retag") if e["detail"].get("override_reason")]
    assert retag["detail"]["previous"] == d1


async def test_system_rules_match_the_full_repository_name(env):
    await env.project("prod")
    await env.project("dev")
    rule_id = await env.rule(None, "immutable", "*", "prod/**")
    _, body_a = await env.reg.push_image("prod/web/api", "1.0", seed=1)
    _, body_b = await env.reg.push_image("dev/web/api", "1.0", seed=2)
    r = await env.reg.put_manifest("prod/web/api", "1.0", body_b, OCI_MANIFEST)
    assert f"system rule {rule_id}: * in prod/**" in error(r, 403, "DENIED")["message"]
    await env.reg.push_image("dev/web/api", seed=1)
    assert (await env.reg.put_manifest("dev/web/api", "1.0", body_a, OCI_MANIFEST)).status_code == 201


async def test_fallback_referrer_tags_stay_mutable_unless_named(env):
    await _setup(env)
    await env.rule("team", "immutable", "*")
    d1, body1 = await env.reg.push_image(REPO, seed=1)
    d2, body2 = await env.reg.push_image(REPO, seed=2)
    fallback = d1.replace(":", "-")  # the fallback tag of d1's referrers
    for body in (body1, body2):  # clients rewrite the fallback tag each time a referrer is added
        assert (await env.reg.put_manifest(REPO, fallback, body, OCI_MANIFEST)).status_code == 201
    assert (await env.reg.put_manifest(REPO, fallback + ".sig", body1, OCI_MANIFEST)).status_code == 201
    assert (await env.reg.put_manifest(REPO, fallback + ".sig", body2, OCI_MANIFEST)).status_code == 201
    named = await env.rule("team", "immutable", "sha256-*")
    r = await env.reg.put_manifest(REPO, fallback, body1, OCI_MANIFEST)
    assert f"rule {named}" in error(r, 403, "DENIED")["message"]
    assert await env.digest_of(REPO, fallback) == d2 and d1 != d2


async def test_a_referrer_tag_naming_no_manifest_of_the_repository_gets_no_exemption(env):
    """Attack review of issue 15: `sha256-<any hex>` carried any image past require and immutable `*` rules."""
    await _setup(env)
    await env.rule("team", "require", "v*")
    await env.rule("team", "immutable", "*")
    d1, body1 = await env.reg.push_image(REPO, "v1", seed=1)
    d2, body2 = await env.reg.push_image(REPO, "v2", seed=2)
    fake = "sha256-" + "c" * 64
    for tag in (fake, fake + ".sig"):
        assert "must match one of the required patterns" in error(
            await env.reg.put_manifest(REPO, tag, body1, OCI_MANIFEST), 403, "DENIED")["message"]
    live = d1.replace(":", "-") + ".att"
    assert (await env.reg.put_manifest(REPO, live, body1, OCI_MANIFEST)).status_code == 201
    assert (await env.reg.put_manifest(REPO, live, body2, OCI_MANIFEST)).status_code == 201


async def test_retention_style_deletes_through_the_manifest_service_respect_immutability(env):
    """Retention deletes via services.manifests.delete; an immutable tag must survive it."""
    users = await _setup(env, ("boss", "admin"))
    await env.rule("team", "immutable", "v*")
    d1, _ = await env.reg.push_image(REPO, "v1", seed=1)
    d2, _ = await env.reg.push_image(REPO, "tmp", seed=2)
    manifests = env.services.manifests
    with pytest.raises(Denied):
        await env.services.db.run(manifests.delete, REPO, None, d1)
    await env.services.db.run(manifests.delete, REPO, None, d2)  # unprotected: deleted
    assert await env.digest_of(REPO, "tmp") is None and await env.digest_of(REPO, "v1") == d1
    with env.services.db.read() as conn:  # never matched under the write lock (issue 9, finding 3)
        assert env.services.tag_policy.is_immutable(conn, REPO, "v1") is not None
        assert env.services.tag_policy.is_immutable(conn, REPO, "tmp") is None
    uid = env.reg.scalar("SELECT id FROM users WHERE username = 'boss'")
    manifests.delete(REPO, "v1", None, override=Override(Principal("user", users["boss"][0], uid), "retire 1.x"))
    assert await env.digest_of(REPO, "v1") is None


# -- naming rules ---------------------------------------------------------------------------------


async def test_deny_and_require_rules_apply_to_every_tag_writer(env):
    users = await _setup(env, ("maint", "maintainer"))
    deny = await env.rule("team", "deny", "latest")
    d1, body1 = await env.reg.push_image(REPO, "git-abc1234", seed=1)
    r = await env.reg.put_manifest(REPO, "latest", body1, OCI_MANIFEST)
    detail = error(r, 403, "DENIED")
    assert detail["message"] == f"tag latest is not allowed in {REPO} (rule {deny}: deny latest in **)"
    assert (await env.reg.put_manifest(REPO, "latest-ish", body1, OCI_MANIFEST)).status_code == 201  # full match only
    git = await env.rule("team", "require", "re:git-[0-9a-f]{7,40}")
    semver = await env.rule("team", "require", r"re:v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?")
    for ok in ("git-0123abc", "1.2.3", "v1.2.3-rc.1"):
        assert (await env.reg.put_manifest(REPO, ok, body1, OCI_MANIFEST)).status_code == 201, ok
    detail = error(await env.reg.put_manifest(REPO, "feature", body1, OCI_MANIFEST), 403, "DENIED")
    assert f"rule {git}: require re:git-[0-9a-f]{{7,40}}" in detail["message"] and f"rule {semver}" in detail["message"]
    error(await env.reg.put_manifest(REPO, "git-XYZ", body1, OCI_MANIFEST), 403, "DENIED")
    r = await env.api.put(f"/v2/{REPO}/manifests/{d1}", params={"tag": ["1.0.0", "nightly"]}, content=body1, headers={"Content-Type": OCI_MANIFEST})
    error(r, 403, "DENIED")
    assert await env.digest_of(REPO, "1.0.0") is None  # all tags of one PUT or none
    error(await env.api.put(f"/api/v1/repositories/{REPO}/tags/latest", json={"digest": d1}, auth=users["maint"]), 403, "DENIED")
    error(await env.api.put(f"/api/v1/repositories/{REPO}/tags/nightly", json={"digest": d1}, auth=users["maint"]), 403, "DENIED")
    promo = {"source": f"{REPO}@{d1}", "destination": REPO, "tags": ["2.0.0", "latest"]}
    error(await env.api.post("/api/v1/promotions", json=promo, auth=users["maint"]), 403, "DENIED")
    assert await env.digest_of(REPO, "2.0.0") is None
    # fallback referrer tags of a manifest in the repository are exempt from require rules
    assert (await env.reg.put_manifest(REPO, d1.replace(":", "-") + ".sig", body1, OCI_MANIFEST)).status_code == 201
    # deletes are never blocked by naming rules
    assert (await env.api.delete(f"/v2/{REPO}/manifests/latest-ish")).status_code == 202
    # rules of another project do not apply here
    await env.project("other")
    await env.reg.push_image("other/app", "latest", seed=5)


async def test_retention_skips_immutable_tags(env):
    await _setup(env)
    rule_id = await env.rule("team", "immutable", "v*")
    old, _ = await env.reg.push_image(REPO, "v1", seed=1)
    stale, _ = await env.reg.push_image(REPO, "tmp", seed=2)
    newest, _ = await env.reg.push_image(REPO, "v2", seed=3)
    document = {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
                "action": {"type": "expire"},
            }
        ]
    }
    retention = env.services.retention
    policy = retention.create("team", name="keep-one", format="ecr", document=document)
    report = await env.services.db.run(lambda: retention.run(policy.id))
    decisions = {d["digest"]: d for d in report["repositories"][0]["decisions"]}
    assert decisions[stale]["outcome"] == "deleted"
    assert decisions[old]["action"] == "keep" and decisions[old]["protection"]["kind"] == "immutable-tag"
    assert f"(tag rule {rule_id})" in decisions[old]["reason"] and "outcome" not in decisions[old]
    assert await env.digest_of(REPO, "v1") == old and await env.digest_of(REPO, "v2") == newest
    assert await env.digest_of(REPO, "tmp") is None


async def test_concurrent_first_pushes_of_an_immutable_tag_have_one_winner(env):
    """Two writers that both saw "no tag yet" must not both set it (PostgreSQL READ COMMITTED race)."""
    await _setup(env)
    await env.rule("team", "immutable", "v*")
    bodies = [(await env.reg.push_image(REPO, seed=10 + i))[1] for i in range(6)]
    barrier = threading.Barrier(len(bodies))
    manifests = env.services.manifests

    def push(body: bytes):
        barrier.wait()
        try:
            manifests.put(REPO, "v1", None, body, OCI_MANIFEST)
            return "ok"
        except Denied:
            return "denied"

    with ThreadPoolExecutor(len(bodies)) as pool:
        outcomes = list(pool.map(push, bodies))
    assert sorted(outcomes) == ["denied"] * (len(bodies) - 1) + ["ok"]
    winner = bodies[outcomes.index("ok")]
    assert await env.digest_of(REPO, "v1") == sha256(winner)
