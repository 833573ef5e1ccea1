"""Webhook building blocks without a server: SSRF classification, payload formats, signatures,
filters and backoff."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from dockyard.webhooks import targets
from dockyard.webhooks.delivery import backoff_seconds
from dockyard.webhooks.formats import Context, render
from dockyard.webhooks.service import Webhook as Hook, matches, validate_event_types
from dockyard.webhooks.signing import new_secret, signature_headers
from dockyard.errors import InvalidRequest, WebhookTargetForbidden

INTERNAL = [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "::ffff:127.0.0.1",
    "::ffff:169.254.169.254", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "2001:db8::1",
]
PUBLIC = ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", INTERNAL)
def test_internal_addresses(address):
    assert targets.is_internal(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address):
    assert not targets.is_internal(address)


def test_resolution_is_checked_for_every_address_and_literals_skip_dns():
    target = targets.resolve("https://mixed.example/x", lambda host, port: ["8.8.8.8", "10.0.0.1"])
    assert target.internal and target.port == 443
    with pytest.raises(WebhookTargetForbidden):
        targets.check(target, internal_allowed=False)
    targets.check(target, internal_allowed=True)
    literal = targets.resolve("http://[::ffff:127.0.0.1]:8080/", lambda host, port: pytest.fail("no DNS for a literal"))
    assert literal.internal and literal.addresses == ("::ffff:7f00:1",)


@pytest.mark.parametrize("url", ["ftp://x.example/", "http://user:pw@x.example/", "x.example/hook", "http:///nohost",
                                 "http://x.example:99999/", "http://x.example/a b"])
def test_bad_urls_are_invalid_requests(url):
    with pytest.raises(InvalidRequest):
        targets.resolve(url, lambda host, port: ["8.8.8.8"])


def test_pinned_request_connects_to_the_checked_address_and_keeps_the_name():
    target = targets.resolve("https://hooks.example:8443/in?x=1", lambda host, port: ["93.184.216.34"])
    url, headers, extensions = targets.pinned_request(target)
    assert url == "https://93.184.216.34:8443/in?x=1"
    assert headers == {"Host": "hooks.example:8443"} and extensions == {"sni_hostname": "hooks.example"}
    url, headers, extensions = targets.pinned_request(targets.resolve("http://h.example/", lambda h, p: ["2606:4700::1"]))
    assert url == "http://[2606:4700::1]:80/" and headers == {"Host": "h.example"} and extensions == {}


EVENT = {
    "id": 7, "key": "5f0c0d1e-0000-4000-8000-000000000001", "type": "artifact.pushed",
    "occurred_at": "2026-12-07T17:00:00+00:00", "project": "acme", "repository": "acme/app/web",
    "digest": "sha256:" + "b" * 64, "tag": "v1", "actor": "alice", "request_id": "r1", "data": {"via": "push"},
}
CTX = Context("https://registry.example.com", public=True)


def test_cloudevents_structured_json():
    out = render("cloudevents", EVENT, CTX)
    doc = json.loads(out.body)
    assert out.content_type == "application/cloudevents+json"
    assert doc["specversion"] == "1.0" and doc["id"] == EVENT["key"] and doc["type"] == "io.dockyard.artifact.pushed"
    assert doc["source"] == "https://registry.example.com/acme" and doc["subject"] == "acme/app/web:v1"
    assert doc["time"] == EVENT["occurred_at"] and doc["datacontenttype"] == "application/json"
    assert doc["data"]["digest"] == EVENT["digest"] and doc["data"]["via"] == "push"


def test_harbor_payload():
    doc = json.loads(render("harbor", EVENT, CTX).body)
    assert doc["type"] == "PUSH_ARTIFACT" and doc["operator"] == "alice"
    assert doc["occur_at"] == int(datetime(2026, 12, 7, 17, tzinfo=timezone.utc).timestamp())
    assert doc["event_data"]["resources"] == [{"digest": EVENT["digest"], "tag": "v1",
                                               "resource_url": "registry.example.com/acme/app/web:v1"}]
    repo = doc["event_data"]["repository"]
    assert (repo["name"], repo["namespace"], repo["repo_full_name"], repo["repo_type"]) == ("app/web", "acme", "acme/app/web", "public")
    assert json.loads(render("harbor", {**EVENT, "type": "retention.completed"}, CTX).body)["type"] == "TAG_RETENTION"
    assert json.loads(render("harbor", {**EVENT, "type": "project.created"}, CTX).body)["type"] == "PROJECT_CREATED"


def test_slack_message_escapes_its_control_characters():
    doc = json.loads(render("slack", {**EVENT, "actor": "<!channel> & co"}, CTX).body)
    assert doc["text"].startswith("[Dockyard] artifact.pushed: acme/app/web:v1")
    assert "<!channel>" not in doc["text"] and "&lt;!channel&gt; &amp; co" in doc["text"]
    assert doc["blocks"][0]["type"] == "section" and doc["blocks"][0]["text"]["type"] == "mrkdwn"


def test_signatures_verify_with_standardwebhooks():
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret) > 40
    body = render("cloudevents", EVENT, CTX).body
    headers = signature_headers(secret, EVENT["key"], datetime.now(timezone.utc), body)
    assert headers["webhook-id"] == EVENT["key"] and headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers)["id"] == EVENT["key"]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def _hook(**kw) -> Hook:
    now = datetime.now(timezone.utc)
    values = dict(id=1, project="acme", name="h", url="https://h.example/", format="cloudevents", event_types=[],
                  repository_pattern=None, tag_pattern=None, enabled=True, private_target=False,
                  consecutive_failures=0, disabled_reason=None, created_by=None, created_at=now, updated_at=now)
    values.update(kw)
    return Hook(**values)


def test_filters():
    assert matches(_hook(), "artifact.pushed", "acme", "acme/app", "v1")
    assert not matches(_hook(), "artifact.pushed", "other", "other/app", "v1")  # another project
    assert matches(_hook(project=None), "artifact.pushed", "other", "other/app", "v1")  # system-wide
    assert matches(_hook(event_types=["artifact"]), "artifact.deleted", "acme", "acme/app", None)
    assert not matches(_hook(event_types=["artifact.pushed"]), "tag.updated", "acme", "acme/app", "v1")
    glob = _hook(repository_pattern="app/**", tag_pattern="v[0-9]*")
    assert matches(glob, "artifact.pushed", "acme", "acme/app/web/x", "v12")
    assert not matches(glob, "artifact.pushed", "acme", "acme/lib", "v1")
    assert not matches(glob, "artifact.pushed", "acme", "acme/app/web", "latest")
    assert not matches(glob, "artifact.pushed", "acme", "acme/app/web", None)  # no tag, tag filter set
    assert not matches(glob, "project.updated", "acme", None, None)
    assert matches(_hook(project=None, repository_pattern="acme/*"), "artifact.pushed", "acme", "acme/app", None)
    assert validate_event_types(["artifact", "webhook.disabled", "artifact"]) == ["artifact", "webhook.disabled"]
    for bad in (["artifact.nope"], ["art"], ["*"]):
        with pytest.raises(InvalidRequest):
            validate_event_types(bad)


def test_backoff_doubles_with_jitter_and_a_cap():
    assert backoff_seconds(1, 10, 3600, lambda: 0.5) == 10
    assert backoff_seconds(3, 10, 3600, lambda: 0.5) == 40
    assert backoff_seconds(3, 10, 3600, lambda: 0.0) == 20 and backoff_seconds(3, 10, 3600, lambda: 0.999) < 60
    assert backoff_seconds(30, 10, 3600, lambda: 0.5) == 3600
