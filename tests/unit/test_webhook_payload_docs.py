"""docs/webhooks.md's payload examples are what Dockyard really sends: each format renders this
sample artifact.pushed event (a push by tag) and must equal the documented example exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dockyard.webhooks.formats import FORMATS, Context, render

DOCS = Path(__file__).resolve().parents[2] / "docs"

SAMPLE = {
    "id": 101, "cursor": "0-101", "key": "5f0c0d1e-7d41-4a7e-9a51-2b0a3f6f1c11", "type": "artifact.pushed",
    "occurred_at": "2026-12-07T17:00:00.123456Z", "project": "acme", "repository": "acme/app/web",
    "digest": "sha256:3b1f…", "tag": "v1.2.0", "actor": "alice", "request_id": "c2a4…",
    "data": {"media_type": "application/vnd.oci.image.manifest.v1+json", "size": 1089, "via": "push",
             "tags": ["v1.2.0"], "new": True},
}


def _documented(fmt: str) -> dict:
    text = (DOCS / "webhooks.md").read_text()
    section = re.search(rf"^### `{fmt}`.*?\n(.*?)(?=^##)", text, flags=re.M | re.S).group(1)
    return json.loads(re.search(r"```json\n(.*?)```", section, flags=re.S).group(1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_documented_payload_is_what_is_sent(fmt):
    sent = json.loads(render(fmt, SAMPLE, Context("https://registry.example.com", public=False)).body)
    assert sent == _documented(fmt)


def test_push_of_several_tags_names_each():
    event = {**SAMPLE, "tag": None, "data": {**SAMPLE["data"], "tags": ["v1", "latest"]}}
    ctx = Context("https://registry.example.com")
    harbor = json.loads(render("harbor", event, ctx).body)
    assert [(r["tag"], r["resource_url"]) for r in harbor["event_data"]["resources"]] == [
        ("v1", "registry.example.com/acme/app/web:v1"), ("latest", "registry.example.com/acme/app/web:latest")]
    cloud = json.loads(render("cloudevents", event, ctx).body)
    assert cloud["subject"] == "acme/app/web@sha256:3b1f…"
    slack = json.loads(render("slack", event, ctx).body)["blocks"][0]["text"]["text"]
    assert "tags `v1`, `latest`" in slack and "True" not in slack and "new: yes" in slack


def test_push_by_digest_has_a_digest_resource():
    event = {**SAMPLE, "tag": None, "data": {**SAMPLE["data"], "tags": []}}
    harbor = json.loads(render("harbor", event, Context("https://r.example")).body)
    assert harbor["event_data"]["resources"] == [
        {"digest": "sha256:3b1f…", "tag": "", "resource_url": "r.example/acme/app/web@sha256:3b1f…"}]
