"""Payload formats: how one event is rendered for a receiver.

- `cloudevents`: CloudEvents 1.0, structured JSON mode (`application/cloudevents+json`), type
  `io.dockyard.<event type>`, id = the event's idempotency key.
- `harbor`: Harbor's default webhook payload, so existing Harbor consumers work unchanged.
- `slack`: a Slack incoming-webhook message (`text` plus one mrkdwn section block).

docs/webhooks.md shows an example of each (tests/unit/test_docs.py checks they are there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

FORMATS = ("cloudevents", "harbor", "slack")
CLOUDEVENTS_TYPE_PREFIX = "io.dockyard."
PING_TYPE = "webhook.ping"  # sent by POST …/webhooks/{id}/ping; not a feed event

# Dockyard event type -> Harbor's event type. Others become their upper-cased name (PROJECT_CREATED).
HARBOR_TYPES = {
    "artifact.pushed": "PUSH_ARTIFACT",
    "artifact.promoted": "PUSH_ARTIFACT",
    "artifact.pulled": "PULL_ARTIFACT",
    "artifact.deleted": "DELETE_ARTIFACT",
    "tag.deleted": "DELETE_ARTIFACT",
    "scan.completed": "SCANNING_COMPLETED",
    "scan.failed": "SCANNING_FAILED",
    "quota.warning": "QUOTA_WARNING",
    "quota.exceeded": "QUOTA_EXCEED",
    "retention.completed": "TAG_RETENTION",
}


@dataclass(frozen=True)
class Rendered:
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Context:
    """What a payload needs beyond the event: where the registry is, and the repository's visibility."""

    registry_url: str  # e.g. https://registry.example.com (no trailing slash)
    public: bool | None = None


def _dumps(doc: dict) -> bytes:
    import json

    return json.dumps(doc, separators=(",", ":"), sort_keys=False, default=str).encode()


def _host(registry_url: str) -> str:
    return registry_url.split("://", 1)[-1].rstrip("/")


def event_tags(event: dict) -> list[str]:
    """The tags an event is about: its `tag`, else artifact.pushed's data.tags (a push naming several)."""
    if event.get("tag"):
        return [event["tag"]]
    tags = (event.get("data") or {}).get("tags")
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def subject(event: dict) -> str | None:
    repository = event.get("repository")
    if not repository:
        return event.get("project")
    tags = event_tags(event)
    if len(tags) == 1:
        return f"{repository}:{tags[0]}"
    if event.get("digest"):
        return f"{repository}@{event['digest']}"
    return repository


def cloudevents(event: dict, ctx: Context) -> Rendered:
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": event["key"],
        "source": f"{ctx.registry_url}/{event['project']}" if event.get("project") else ctx.registry_url,
        "type": CLOUDEVENTS_TYPE_PREFIX + event["type"],
        "time": event["occurred_at"],
        "datacontenttype": "application/json",
    }
    if (sub := subject(event)) is not None:
        doc["subject"] = sub
    doc["data"] = {k: event.get(k) for k in ("project", "repository", "digest", "tag", "actor", "request_id")}
    doc["data"].update(event.get("data") or {})
    return Rendered("application/cloudevents+json", _dumps(doc))


def harbor_type(event_type: str) -> str:
    return HARBOR_TYPES.get(event_type) or event_type.replace(".", "_").upper()


def harbor(event: dict, ctx: Context) -> Rendered:
    repository = event.get("repository") or ""
    project = event.get("project") or ""
    name = repository.split("/", 1)[1] if "/" in repository else repository
    resources = []
    host = _host(ctx.registry_url)
    tags = event_tags(event) if repository else []
    for tag in tags:  # one resource per tag, as Harbor sends for a push naming several
        resources.append({"digest": event.get("digest") or "", "tag": tag,
                          "resource_url": f"{host}/{repository}:{tag}"})
    if not tags and event.get("digest"):
        resources.append({"digest": event["digest"], "tag": "",
                          "resource_url": f"{host}/{repository}@{event['digest']}"})
    doc = {
        "type": harbor_type(event["type"]),
        "occur_at": int(datetime.fromisoformat(event["occurred_at"]).timestamp()),
        "operator": event.get("actor") or "",
        "event_data": {
            "resources": resources,
            "repository": {
                "date_created": int(datetime.fromisoformat(event["occurred_at"]).timestamp()),
                "name": name,
                "namespace": project,
                "repo_full_name": repository,
                "repo_type": "public" if ctx.public else "private",
            },
            "custom_attributes": {"dockyard_type": event["type"], **_attributes(event.get("data") or {})},
        },
    }
    return Rendered("application/json", _dumps(doc))


def _attributes(data: dict) -> dict[str, str]:
    """Harbor's custom_attributes is a map of strings (Go consumers decode map[string]string)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[key] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            out[key] = _dumps(value).decode()
        elif value is not None:
            out[key] = str(value)
    return out


def _mrkdwn(text: str) -> str:
    """Slack's three control characters, escaped as Slack asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(event: dict, ctx: Context) -> Rendered:
    what = subject(event) or "the registry"
    actor = f" by {event['actor']}" if event.get("actor") else ""
    text = f"[Dockyard] {event['type']}: {what}{actor}"
    details = []
    tags = event_tags(event)
    if len(tags) > 1:
        details.append("tags " + ", ".join(f"`{t}`" for t in tags))
    if event.get("digest"):
        details.append(f"digest `{event['digest']}`")
    for key, value in sorted((event.get("data") or {}).items()):
        if key == "tags":
            continue  # named above (or in the subject)
        if isinstance(value, bool):  # JSON's spelling, never Python's True/False
            details.append(f"{key}: {'yes' if value else 'no'}")
        elif isinstance(value, (str, int, float)):
            details.append(f"{key}: {value}")
    body = f"*{_mrkdwn(event['type'])}* `{_mrkdwn(what)}`{_mrkdwn(actor)}"
    if details:
        body += "\n" + _mrkdwn(", ".join(details))[:2500]
    doc = {"text": _mrkdwn(text), "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": body}}]}
    return Rendered("application/json", _dumps(doc))


_RENDERERS = {"cloudevents": cloudevents, "harbor": harbor, "slack": slack}


def render(format: str, event: dict, ctx: Context) -> Rendered:
    """`event` is `Event.to_dict()` (as stored on the delivery)."""
    return _RENDERERS[format](event, ctx)
