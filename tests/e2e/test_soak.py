"""The 2-minute soak (benchmarks/soak.py) in CI: 32 clients push, pull, retag and delete against a
real `dockyard serve` (SQLite, two worker processes) while GC, retention and scans run.

Asserts zero errors, that the invariants hold on the stopped server's data, and that neither
RSS nor open file descriptors of the server processes grow after warm-up. The 30-minute run
(`python benchmarks/soak.py`) and its results are in docs/reliability.md.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.soak import parse_args, run

DURATION = 120


@pytest.mark.slow
def test_soak_two_minutes_no_errors_invariants_hold_no_resource_growth(tmp_path):
    args = parse_args(["--duration", str(DURATION), "--clients", "32", "--data-dir", str(tmp_path / "data"),
                       "--gc-interval", "15", "--retention-interval", "10", "--scan-interval", "15"])
    report = run(args)
    summary = {k: report[k] for k in ("errors", "error_samples", "operations", "retries", "background",
                                      "latency_overall", "invariant_violations")}
    summary["resources"] = {k: v for k, v in report["resources"].items() if k != "samples"}
    print("\n" + json.dumps(summary, indent=1))
    assert report["server_alive_at_end"]
    assert report["errors"] == 0, report["error_samples"]
    assert report["invariant_violations"] == []
    assert all(report["operations"].get(op, 0) > 50 for op in ("push", "pull", "retag", "delete")), report["operations"]
    assert report["background"].get("gc_runs", 0) >= 5 and report["background"].get("retention_runs", 0) >= 5
    assert report["background"].get("scans", 0) >= 3
    assert not report["resources"]["rss_growing"], report["resources"]
    assert not report["resources"]["fds_growing"], report["resources"]
