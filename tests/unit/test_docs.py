"""The docs must name every setting, error code and CLI command (datasette-style doc tests)."""

from pathlib import Path

import typer.main

from dockyard.cli import app
from dockyard.errors import catalogue
from dockyard.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _commands(group, prefix=""):
    click_group = typer.main.get_command(group)
    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, f"{path} {name}".strip())
        else:
            out.append(path)

    walk(click_group, prefix)
    return out


def test_every_setting_is_documented():
    text = (DOCS / "settings.md").read_text()
    for name in Settings.model_fields:
        assert f"`{name}`" in text, f"setting {name} missing from docs/settings.md"
        assert f"`DOCKYARD_{name.upper()}`" in text, f"env var for {name} missing from docs/settings.md"


def test_every_error_code_is_documented():
    text = (DOCS / "errors.md").read_text()
    for cls in catalogue():
        assert f"`{cls.code}`" in text, f"error code {cls.code} missing from docs/errors.md"


def test_every_cli_command_is_documented():
    text = (DOCS / "cli.md").read_text()
    commands = _commands(app)
    assert "serve" in commands
    for command in commands:
        assert f"`dockyard {command}" in text, f"command `dockyard {command}` missing from docs/cli.md"


def test_webhooks_doc_covers_every_format_header_and_setting():
    from dockyard.webhooks.formats import FORMATS, HARBOR_TYPES

    text = (DOCS / "webhooks.md").read_text()
    for fmt in FORMATS:
        assert f"### `{fmt}`" in text, f"payload format {fmt} has no section (with an example) in docs/webhooks.md"
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature", "application/cloudevents+json"):
        assert f"`{header}`" in text
    for harbor_type in set(HARBOR_TYPES.values()):
        assert f"`{harbor_type}`" in text, f"Harbor type {harbor_type} missing from docs/webhooks.md"
    for name in Settings.model_fields:
        if name.startswith("webhook_"):
            assert f"`{name}`" in text, f"setting {name} missing from docs/webhooks.md"
    assert "from standardwebhooks import Webhook" in text


def test_every_metric_is_documented():
    """Every metric family Dockyard exposes (docs/metrics.md), by its exposed name (counters end in _total)."""
    import inspect

    from dockyard.observability import collectors
    from dockyard.observability.metrics import Metrics

    names = Metrics().defined_names()
    for _, cls in inspect.getmembers(collectors, inspect.isclass):
        if issubclass(cls, collectors._Collector):
            names += list(cls.NAMES)
    assert len(names) >= 28
    text = (DOCS / "metrics.md").read_text()
    for name in names:
        assert f"`{name}`" in text, f"metric {name} missing from docs/metrics.md"


def test_every_event_type_is_documented_with_a_json_example():
    """docs/events.md has a section per EVENT_TYPES entry, each with a JSON example of that type."""
    import json
    import re

    from dockyard.domain.events import EVENT_TYPES

    text = (DOCS / "events.md").read_text()
    sections = dict(re.findall(r"^### `([a-z_.]+)`\n(.*?)(?=^### |\Z)", text, flags=re.M | re.S))
    for name in EVENT_TYPES:
        assert name in sections, f"event type {name} missing from docs/events.md"
        blocks = re.findall(r"```json\n(.*?)```", sections[name], flags=re.S)
        assert blocks, f"event type {name} has no JSON example in docs/events.md"
        for block in blocks:
            example = json.loads(block)
            assert example["type"] == name and set(example) >= {"id", "cursor", "key", "occurred_at", "data"}
    assert set(sections) <= set(EVENT_TYPES), f"docs/events.md documents unknown types {set(sections) - set(EVENT_TYPES)}"
    for block in re.findall(r"```json\n(.*?)```", text, flags=re.S):
        json.loads(block)  # every example parses


def test_tls_doc_covers_every_tls_setting():
    """docs/tls.md (issue 16) explains every tls_* setting, the reload signal and how each client trusts a CA."""
    text = (DOCS / "tls.md").read_text()
    for name in Settings.model_fields:
        if name.startswith(("tls_", "acme_")):
            assert f"`{name}`" in text, f"setting {name} missing from docs/tls.md"
    for word in ("## Automatic certificates (ACME)", "SIGHUP", "DOCKYARD_CA_FILE", "--dest-cert-dir", "SSL_CERT_FILE", "--ca-file", "--cacert", "certs.d"):
        assert word in text, f"{word} missing from docs/tls.md"


def test_operations_doc_covers_backup_restore_verify_and_postgresql():
    """docs/operations.md (issue 16): each command's procedure, and PostgreSQL's, with the consistent order."""
    text = (DOCS / "operations.md").read_text()
    for command in ("admin backup", "admin restore", "admin verify"):
        assert f"dockyard {command}" in text, f"`dockyard {command}` missing from docs/operations.md"
    for option in ("--read-blobs", "--rate", "--repair", "--from", "--lease-seconds"):
        assert option in text, f"option {option} missing from docs/operations.md"
    for term in ("pg_dump", "pg_restore", "versioning", "Replication", "backup lease"):
        assert term in text, f"{term} missing from docs/operations.md"
