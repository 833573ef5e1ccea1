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


def subject(event: dict) -> str | None:
    repository = event.get("repository")
    if not repository:
        return event.get("project")
    if event.get("tag"):
        return f"{repository}:{event['tag']}"
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
    if event.get("digest") or event.get("tag"):
        ref = f":{event['tag']}" if event.get("tag") else f"@{event['digest']}"
        resources.append({
            "digest": event.get("digest") or "",
            "tag": event.get("tag") or "",
            "resource_url": f"{_host(ctx.registry_url)}/{repository}{ref}",
        })
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
            "custom_attributes": {"dockyard_type": event["type"], **(event.get("data") or {})},
        },
    }
    return Rendered("application/json", _dumps(doc))


def _mrkdwn(text: str) -> str:
    """Slack's three control characters, escaped as Slack asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(event: dict, ctx: Context) -> Rendered:
    what = subject(event) or "the registry"
    actor = f" by {event['actor']}" if event.get("actor") else ""
    text = f"[Dockyard] {event['type']}: {what}{actor}"
    details = []
    if event.get("digest"):
        details.append(f"digest `{event['digest']}`")
    for key, value in sorted((event.get("data") or {}).items()):
        if isinstance(value, (str, int, float, bool)):
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
