"""Attack review of issue 15 §4: tag globs outside tag rules (native retention `tags`, webhook `tag_pattern`) took
a regex look-alike silently. A retention keep rule `release-.*` then keeps nothing and the delete rule removes the
releases; a webhook filter `release-.*` never fires. Refused when written, with the same hint as a tag rule."""

from __future__ import annotations

from .governance_helpers import Env, env, error  # noqa: F401  (env is a fixture)

POLICIES = "/api/v1/projects/acme/retention-policies"


def _native(keep: str) -> dict:
    return {"rules": [{"action": "keep", "tags": [keep]}, {"action": "delete", "tags": ["*"], "pushed_older_than_days": 1}]}


async def test_a_retention_keep_rule_that_looks_like_a_regex_is_refused(env: Env):
    await env.project("acme")
    for keep in ("release-.*", "v[0-9]{3}", "^v1", ".*"):  # each accepted before, and selecting nothing
        body = error(await env.api.post(POLICIES, json={"name": "n", "format": "native", "document": _native(keep)}),
                     400, "INVALID_REQUEST")
        assert "looks like a regular expression" in body["message"], body
    r = await env.api.post(POLICIES, json={"name": "n", "format": "native", "document": _native("release-*")})
    assert r.status_code == 201, r.text


async def test_a_webhook_tag_filter_that_looks_like_a_regex_is_refused(env: Env):
    await env.project("acme")
    env.services.webhooks.resolver = lambda host, port: ["93.184.216.34"]  # DNS as a table: no network
    r = await env.api.post("/api/v1/projects/acme/webhooks",
                           json={"url": "https://hooks.example/in", "event_types": ["artifact"], "tag_pattern": "release-.*"})
    assert "looks like a regular expression" in error(r, 400, "INVALID_REQUEST")["message"]
    r = await env.api.post("/api/v1/projects/acme/webhooks",
                           json={"url": "https://hooks.example/in", "event_types": ["artifact"], "tag_pattern": "v*"})
    assert r.status_code == 201, r.text
