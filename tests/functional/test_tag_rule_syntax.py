"""One pattern syntax for every kind of tag rule (globs; regexes only behind `re:`), look-alikes refused with
a hint, and the dry run `POST /api/v1/projects/{p}/tag-rules/test` (issue 15, §4)."""

from __future__ import annotations

import pytest

from dockyard.errors import InvalidRequest
from dockyard.policy.tag_patterns import tag_matches, validate_tag_pattern

from .governance_helpers import env, error  # noqa: F401  (env is a fixture)
from .helpers import OCI_MANIFEST

REPO = "team/app"


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [
        ("release-.*", "looks like a regular expression"),
        (".*latest.*", "looks like a regular expression"),
        ("^v", "looks like a regular expression"),
        (r"v\d", "looks like a regular expression"),
        ("v1+", "looks like a regular expression"),
        ("(a|b)", "looks like a regular expression"),
        ("v1$", "looks like a regular expression"),
        ("git-[0-9a-f]{7,40}", "looks like a regular expression"),
        ("re:v*", "looks like a glob"),
        ("re:release-*", "looks like a glob"),
        ("re:*", "looks like a glob"),
        ("re:{a,b}", "looks like a glob"),
        ("re:[!a]x", "looks like a glob"),
    ],
)
def test_a_pattern_in_the_other_syntax_is_refused_with_a_hint(pattern, hint):
    with pytest.raises(InvalidRequest) as info:
        validate_tag_pattern(pattern)
    assert hint in info.value.message
    if hint.endswith("regular expression"):
        assert f"write re:{pattern}" in info.value.message
    else:
        assert "drop the re: prefix" in info.value.message


@pytest.mark.parametrize(
    ("tag", "pattern", "expected"),
    [
        ("tmp-foo", "tmp*", True),  # a glob for every kind: `tmp*` is "tmp and anything"
        ("tmppp", "tmp*", True),
        ("v1.2", "v1.*", True),  # a dot after a digit is a version glob, not a regex
        ("v10", "v1.*", False),
        ("release-2", "release-{1,2}", True),
        ("latest", "re:latest", True),
        ("latest-1", "re:latest", False),  # full match
        ("a-latest-b", "re:.*latest.*", True),
        ("git-0123abc", "re:git-[0-9a-f]{7,40}", True),
        ("git-01", "re:git-[0-9a-f]{7,40}", False),
        ("v12", r"re:v\d+", True),
    ],
)
def test_globs_and_re_patterns_match_whole_tags(tag, pattern, expected):
    assert validate_tag_pattern(pattern) == pattern
    assert tag_matches(tag, pattern) is expected


async def test_every_kind_takes_globs_and_the_refusal_hints_over_the_api(env):
    await env.project("team")
    r = await env.api.post("/api/v1/projects/team/tag-rules", json={"kind": "immutable", "tag_pattern": "release-.*"})
    detail = error(r, 400, "INVALID_REQUEST")
    assert "write re:release-.*" in detail["message"] and detail["detail"]["hint"] == "regex"
    deny = await env.rule("team", "deny", "tmp*")
    _, body = await env.reg.push_image(REPO, "v1", seed=1)
    detail = error(await env.reg.put_manifest(REPO, "tmp-foo", body, OCI_MANIFEST), 403, "DENIED")
    assert detail["message"] == f"tag tmp-foo is not allowed in {REPO} (rule {deny}: deny tmp* in **)"
    await env.rule("team", "require", "re:v[0-9]+")
    error(await env.reg.put_manifest(REPO, "feature", body, OCI_MANIFEST), 403, "DENIED")
    assert (await env.reg.put_manifest(REPO, "v2", body, OCI_MANIFEST)).status_code == 201


async def test_dry_run_names_matching_rules_and_each_outcome(env):
    await env.project("team")
    guest = await env.user("guest", team="guest")
    immutable = await env.rule("team", "immutable", "v*")
    deny = await env.rule("team", "deny", "v0*")
    other_repo = await env.rule("team", "deny", "*", "other/*")
    system = await env.rule(None, "require", "re:v[0-9.]+", "team/**")
    r = await env.api.post("/api/v1/projects/team/tag-rules/test", json={"repository": "app", "tag": "v1.0"}, auth=guest)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["repository"] == REPO and out["tag"] == "v1.0"
    assert [(m["rule"]["id"], m["matches"]) for m in out["rules"]] == [(immutable, True), (deny, False), (system, True)]
    assert other_repo not in [m["rule"]["id"] for m in out["rules"]]
    assert out["push"] == {"allowed": True, "reason": None}
    assert out["overwrite"]["allowed"] is False and f"rule {immutable}: v* in **" in out["overwrite"]["reason"]
    assert out["delete"]["allowed"] is False and "cannot be deleted" in out["delete"]["reason"]
    out = (await env.api.post("/api/v1/projects/team/tag-rules/test", json={"repository": "app", "tag": "v0.9"})).json()
    assert out["push"]["allowed"] is False and f"rule {deny}: deny v0* in **" in out["push"]["reason"]
    out = (await env.api.post("/api/v1/projects/team/tag-rules/test", json={"repository": "app", "tag": "nightly"})).json()
    assert out["push"]["allowed"] is False and f"system rule {system}" in out["push"]["reason"]
    assert out["overwrite"]["allowed"] is False and out["delete"] == {"allowed": True, "reason": None}
    # nothing changed, and the dry run is read-only for members but closed to strangers
    assert await env.digest_of(REPO, "v1.0") is None
    stranger = await env.user("stranger")
    r = await env.api.post("/api/v1/projects/team/tag-rules/test", json={"repository": "app", "tag": "v1"}, auth=stranger)
    error(r, 404, "NOT_FOUND")  # like any other request about a private project it is not in
    error(await env.api.post("/api/v1/projects/team/tag-rules/test", json={"repository": "app", "tag": "bad tag"}), 400, "TAG_INVALID")


async def test_cli_tag_rules_list_create_test_delete(env, monkeypatch):
    """`dockyard tag-rules …` is a client of the tag-rule API (driven in-process here)."""
    import json

    import anyio.to_thread
    from typer.testing import CliRunner

    from dockyard.cli import app as cli_app

    from .governance_helpers import ADMIN, route_cli_to_app

    await env.project("team")
    route_cli_to_app(monkeypatch, env.reg.app)
    runner = CliRunner()

    async def run(*args: str):
        return await anyio.to_thread.run_sync(
            lambda: runner.invoke(cli_app, ["tag-rules", "-u", "admin", "-p", ADMIN[1], *args]))

    result = await run("create", "immutable", "v*", "--project", "team", "--json")
    assert result.exit_code == 0, result.output
    immutable = json.loads(result.stdout)["id"]
    result = await run("create", "deny", "release-.*", "--project", "team")
    shown = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 1 and "looks like a regular expression" in shown and "write re:release-.*" in shown
    result = await run("create", "require", "re:v[0-9.]+", "--repository", "team/**", "--json")  # system-wide
    assert result.exit_code == 0, result.output
    system = json.loads(result.stdout)["id"]
    result = await run("list", "--project", "team", "--json")
    assert [r["id"] for r in json.loads(result.stdout)] == [immutable]
    result = await run("list", "--json")
    assert [r["id"] for r in json.loads(result.stdout)] == [system]
    result = await run("test", "team", "app", "v1.0")
    assert result.exit_code == 0, result.output
    shown = " ".join(result.stdout.split())
    assert "push: allowed" in shown and "delete: refused" in shown
    assert f"overwrite: refused: tag v1.0 of team/app is immutable (rule {immutable}: v* in **)" in shown
    result = await run("test", "team", "app", "nightly", "--json")
    data = json.loads(result.stdout)
    assert data["push"]["allowed"] is False and f"system rule {system}" in data["push"]["reason"]
    assert [(m["rule"]["id"], m["matches"]) for m in data["rules"]] == [(immutable, False), (system, False)]
    result = await run("delete", str(immutable), "--project", "team", "--yes")
    assert result.exit_code == 0 and f"deleted tag rule {immutable}" in " ".join(result.output.split())
    assert (await env.api.get("/api/v1/projects/team/tag-rules")).json() == []


def test_a_re_pattern_names_fallback_referrer_tags_like_a_glob():
    from dockyard.policy.tag_patterns import names_referrer_tags

    assert names_referrer_tags("sha256-*") and names_referrer_tags("re:sha256-.*")
    assert not names_referrer_tags("re:.*") and not names_referrer_tags("v*")


async def test_dry_run_shows_a_member_what_a_system_rule_matches_but_not_who_wrote_it(env):
    """Attack (issue 15 review): system rules are listed to administrators only, yet the dry run (read-settings:
    every guest) returned them whole, with their author and description."""
    await env.project("team")
    guest = await env.user("guest", team="guest")
    r = await env.api.post("/api/v1/system/tag-rules", json={"kind": "deny", "tag_pattern": "latest",
                                                             "description": "SEC-1234: incident follow-up"})
    assert r.status_code == 201, r.text
    error(await env.api.get("/api/v1/system/tag-rules", auth=guest), 403, "DENIED")
    r = await env.api.post("/api/v1/projects/team/tag-rules/test", json={"repository": "app", "tag": "latest"}, auth=guest)
    assert r.status_code == 200, r.text
    [match] = r.json()["rules"]
    assert match["matches"] is True and match["rule"]["tag_pattern"] == "latest"
    assert (match["rule"]["description"], match["rule"]["created_by"]) == (None, None)
    r = await env.api.post("/api/v1/projects/team/tag-rules/test", json={"repository": "app", "tag": "latest"})
    assert r.json()["rules"][0]["rule"]["created_by"] == "admin"  # an administrator sees it whole
