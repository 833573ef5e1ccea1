"""Metrics: the exposition parses, labels stay bounded, route names and denial reasons are right."""

from __future__ import annotations

import logging
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dockyard import request_context
from dockyard.api.http_metrics import HANDLERS, handler_name
from dockyard.api.request_id import IdMaker
from dockyard.observability.metrics import DENIAL_REASONS, Metrics, denial_reason, scan_verdict
from dockyard.safe_text import JsonFormatter

# Every label any Dockyard metric may carry; each has a bounded set of values (project: one per project).
ALLOWED_LABELS = {"handler", "code", "method", "project", "driver", "action", "kind", "outcome", "state",
                  "dry_run", "verdict", "reason", "consumer"}


def families(metrics: Metrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}


def test_exposition_parses_with_every_family_and_sample():
    m = Metrics()
    m.http_requests.labels("manifest", "200", "GET").inc()
    m.http_duration.labels("manifest", "GET").observe(0.01)
    m.storage_action("filesystem", "stat", 0.001)
    m.on_job("gc", m.gc_finished)
    m.job_finished("gc", "succeeded", 1.5, {"dry_run": False, "deleted": 3, "bytes_freed": 300})
    m.blob_committed("team", 1234)
    fams = families(m)
    assert fams["registry_http_requests"].type == "counter"
    sample = next(s for s in fams["registry_http_requests"].samples if s.name == "registry_http_requests_total")
    assert sample.labels == {"handler": "manifest", "code": "200", "method": "GET"} and sample.value == 1
    assert fams["registry_http_request_duration_seconds"].type == "histogram"
    assert {s.value for s in fams["dockyard_gc_blobs_reclaimed"].samples if s.name.endswith("_total")} == {3}
    assert {s.value for s in fams["dockyard_gc_bytes_reclaimed"].samples if s.name.endswith("_total")} == {300}
    assert [s.value for s in fams["dockyard_pushed_bytes"].samples if s.name.endswith("_total")] == [1234]
    jobs = [s for s in fams["dockyard_jobs"].samples if s.name == "dockyard_jobs_total"]
    assert [(s.labels, s.value) for s in jobs] == [({"kind": "gc", "outcome": "succeeded"}, 1)]


def test_each_app_has_its_own_registry():
    a, b = Metrics(), Metrics()
    a.http_requests.labels("base", "200", "GET").inc()
    assert not [s for s in families(b)["registry_http_requests"].samples if s.name.endswith("_total")]


def test_labels_are_bounded_no_digest_tag_or_repository():
    m = Metrics()
    for metric in vars(m).values():
        labels = getattr(metric, "_labelnames", None)
        if labels is None:
            continue
        assert set(labels) <= ALLOWED_LABELS, (metric, labels)
        assert not {"digest", "tag", "repository", "path", "reference"} & set(labels)


@pytest.mark.parametrize(
    ("path", "handler"),
    [
        ("/v2/", "base"),
        ("/v2", "base"),
        ("/v2/_catalog", "catalog"),
        ("/v2/team/app/tags/list", "tags"),
        ("/v2/team/app/manifests/latest", "manifest"),
        ("/v2/a/b/c/manifests/sha256:" + "0" * 64, "manifest"),
        ("/v2/team/app/blobs/uploads/", "blob_upload"),
        ("/v2/team/app/blobs/uploads", "blob_upload"),
        ("/v2/team/app/blobs/uploads/4f1c-uuid", "blob_upload_chunk"),
        ("/v2/team/app/blobs/sha256:" + "a" * 64, "blob"),
        ("/v2/team/app/referrers/sha256:" + "a" * 64, "referrers"),
        ("/v2/team/app/nonsense", "other"),
        ("/v2/tags/list", "other"),
        ("/v2/blobs/uploads/", "other"),
        ("/v2/team/manifests/", "other"),
        ("/v2/team/tags/other", "other"),
        ("/v2/t/blobs/uploads/", "blob_upload"),
        ("/api/v1/projects/x", "api"),
        ("/token", "token"),
        ("/metrics", "metrics"),
        ("/healthz", "health"),
        ("/readyz", "health"),
        ("/favicon.ico", "other"),
        ("/" + "x/" * 500, "other"),
    ],
)
def test_handler_names_are_route_names_never_paths(path, handler):
    assert handler_name(path) == handler
    assert handler in HANDLERS


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("image sha256:x is not signed by a key trusted by project p: none; policy require-signature of project p",
         "unsigned"),
        ("image sha256:x has 2 critical vulnerabilities (CVE-1); policy block-critical of project p", "vulnerable"),
        ("image sha256:x cannot be pulled: its scan is incomplete (3 package(s) or advisories could not be "
         "evaluated); scan_incomplete_policy is block (policy block-high of project p)", "scan_incomplete"),
        ("image sha256:x cannot be pulled: it has not been scanned yet (a scan is queued); policy block-unscanned "
         "of project p", "unscanned"),
        ("image sha256:x cannot be pulled: it was not scanned within 5 s; policy wait-for-scan of project p",
         "scan_pending"),
        ("something else entirely", "other"),
    ],
)
def test_denial_reasons_are_bounded(message, reason):
    assert denial_reason(message) == reason
    assert reason in DENIAL_REASONS


def test_scan_verdict_is_the_worst_severity():
    assert scan_verdict({"critical": 0, "high": 2, "low": 5}) == "high"
    assert scan_verdict({}) == "clean"
    assert scan_verdict(None) == "clean"


def test_scan_metrics_count_images_not_parents():
    m = Metrics()
    m.job_finished("scan", "succeeded", 2.0, {"images": [{"digest": "d", "summary": {"medium": 1}, "status": "ok"}]})
    m.job_finished("scan", "succeeded", 0.1, {"images": []})  # an index's parent job
    m.job_finished("scan", "failed", 1.0, None)
    m.on_job("scan", m.scan_finished)  # wired after: only later runs reach it
    m.job_finished("scan", "succeeded", 2.0, {"images": [{"digest": "d", "summary": {"medium": 1}, "status": "ok"}]})
    m.job_finished("scan", "succeeded", 0.1, {"images": []})
    m.job_finished("scan", "retried", 1.0, None)
    m.job_finished("scan", "failed", 1.0, None)
    fams = families(m)
    verdicts = {s.labels["verdict"]: s.value for s in fams["dockyard_scan_verdicts"].samples if s.name.endswith("_total")}
    assert verdicts == {"medium": 1, "failed": 1}
    counts = {s.labels["outcome"]: s.value for s in fams["dockyard_scan_duration_seconds"].samples
              if s.name.endswith("_count")}
    assert counts == {"succeeded": 1, "retried": 1, "failed": 1}


def test_feed_consumer_counts_pushes_and_pulls_per_project():
    from types import SimpleNamespace as E

    m = Metrics()
    m.count_events(None, [
        E(type="artifact.pushed", project="a", data={}),
        E(type="artifact.pushed", project="a", data={}),
        E(type="artifact.pulled", project="b", data={"count": 7}),
        E(type="tag.updated", project="a", data={}),
    ])
    fams = families(m)
    assert {s.labels["project"]: s.value for s in fams["dockyard_pushes"].samples if s.name.endswith("_total")} == {"a": 2}
    assert {s.labels["project"]: s.value for s in fams["dockyard_pulls"].samples if s.name.endswith("_total")} == {"b": 7}


@pytest.mark.parametrize("value", [b"abc-123", b"req_1.2:3", b"A" * 128])
def test_valid_request_ids_are_kept(value):
    assert IdMaker().accepted(value) == value.decode()


@pytest.mark.parametrize("value", [None, b"", b"a b", b"a\nb", b"x" * 129, b"\xc3\xa9", b"a;b", b"<script>"])
def test_invalid_request_ids_are_replaced(value):
    maker = IdMaker()
    rid = maker.accepted(value)
    assert rid != (value or b"").decode("latin-1") and len(rid) == 32 and rid.isalnum()
    assert maker.accepted(value) != rid and IdMaker().accepted(value)[:16] != rid[:16]


def test_json_log_lines_carry_request_id_and_escape_control_characters():
    record = logging.LogRecord("dockyard.test", logging.WARNING, __file__, 1, "pushed %s", ("evil\n\x1b[2Jname",), None)
    token = request_context.request_id.set("rid-42")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_context.request_id.reset(token)
    assert "\n" not in line and "\x1b" not in line
    entry = json.loads(line)
    assert entry["request_id"] == "rid-42" and entry["level"] == "warning" and entry["logger"] == "dockyard.test"
    assert entry["message"] == "pushed evil\n\x1b[2Jname" and entry["time"].endswith("Z")
    assert "request_id" not in json.loads(JsonFormatter().format(record))


def test_webhook_collector_reads_attempt_outcomes_and_delivery_states(tmp_path):
    from sqlalchemy import text

    from dockyard.metadata.db import Database
    from dockyard.observability.collectors import WebhookCollector

    db = Database(f"sqlite:///{tmp_path / 'hooks.db'}")
    collector = WebhookCollector(db)
    assert [(f.name, f.samples) for f in collector.collect()] == [
        ("dockyard_webhook_deliveries", []), ("dockyard_webhook_delivery_state", [])]  # no tables yet: empty
    with db.write() as conn:
        conn.execute(text("CREATE TABLE webhook_attempts (id INTEGER PRIMARY KEY, outcome VARCHAR(16))"))
        conn.execute(text("CREATE TABLE webhook_deliveries (id INTEGER PRIMARY KEY, state VARCHAR(16))"))
        conn.execute(text("INSERT INTO webhook_attempts (outcome) VALUES ('failed'), ('failed'), ('succeeded')"))
        conn.execute(text("INSERT INTO webhook_deliveries (state) VALUES ('succeeded'), ('dead')"))
    collector = WebhookCollector(db)
    found = {(s.name, tuple(s.labels.items())): s.value for f in collector.collect() for s in f.samples}
    assert found == {
        ("dockyard_webhook_deliveries_total", (("outcome", "failed"),)): 2,
        ("dockyard_webhook_deliveries_total", (("outcome", "succeeded"),)): 1,
        ("dockyard_webhook_delivery_state", (("state", "dead"),)): 1,
        ("dockyard_webhook_delivery_state", (("state", "succeeded"),)): 1,
    }
    db.dispose()
