"""Job kinds come from one table (metadata/job_kinds.py), and /v2 audit actions from the route table:
every registered handler is in the table, and docs/api.md lists every kind and every /v2 action."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dockyard.api.oci.routes import ROUTES
from dockyard.app import build_services
from dockyard.errors import InvalidRequest
from dockyard.jobs.scheduler import every, next_run
from dockyard.metadata import job_kinds
from dockyard.settings import Settings

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_every_registered_handler_is_a_listed_kind_and_every_kind_has_a_handler(tmp_path):
    services = build_services(Settings(data_dir=tmp_path, auto_migrate=True))
    try:
        assert set(services.worker.handlers) == set(job_kinds.KINDS)
    finally:
        services.db.dispose()


def test_docs_list_every_job_kind():
    text = API_DOC.read_text()
    table = text[text.index("Job kinds (`kind`"):]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", table, flags=re.M))
    assert documented >= set(job_kinds.KINDS), f"undocumented job kinds: {set(job_kinds.KINDS) - documented}"
    assert all(description for description in job_kinds.KINDS.values())


def test_docs_list_every_v2_audit_action():
    declared: set[str] = set()
    for *_, audit in ROUTES:
        for action in (audit or {}).values():
            if callable(action):
                declared |= {action({"reference": "v1"}), action({"reference": "sha256:" + "0" * 64})}
            else:
                declared.add(action)
    assert declared == {"manifest.push", "manifest.pull", "manifest.delete", "tag.delete", "blob.delete"}
    text = API_DOC.read_text()
    assert all(f"`{a}`" in text for a in declared), declared


def test_interval_schedules_run_every_n_seconds():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert every(600) == "@every 600s"
    assert next_run(every(600), start) == start + timedelta(seconds=600)
    assert next_run("0 3 * * *", start) == start.replace(hour=3)  # cron expressions are unchanged
    with pytest.raises(InvalidRequest):
        every(0)
