"""The Prometheus metrics of one app: every metric Dockyard defines, in one registry built by
create_app (no import-time singletons; docs/metrics.md lists them, tests/unit/test_docs.py checks).

Multiprocess: `dockyard serve` runs several worker processes and sets PROMETHEUS_MULTIPROC_DIR
(observability/multiproc.py) before any of them imports prometheus_client, so every counter,
histogram and gauge here writes to a per-process file in that directory and a scrape on any
worker sums them all. Without that variable (tests, `create_app` in-process) the values live in
this object's own registry. Values that come from the database (queue depth, open uploads, quota
use, feed lag) are not stored at all: scrape-time collectors (collectors.py) read them, once, on
the process that answers the scrape.

Labels are bounded: handler, method, code, driver, action, job kind, outcome and reason each have
a small fixed set of values; `project` has one value per project (documented cardinality). No
label ever carries a digest, a tag or a repository path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from dockyard.observability.http_stats import HttpStats
from dockyard.observability.multiproc import MULTIPROC_ENV

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
SIZE_BUCKETS = tuple(float(4**n * 256) for n in range(12))  # 256 B … 1 GiB, x4 each
JOB_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)

# Pull-gate denial reasons: every denial message ends "policy <name> of project <p>" (policy/pull_gate.py).
DENIAL_REASONS = ("unsigned", "vulnerable", "scan_incomplete", "unscanned", "scan_pending", "other")
_POLICY_RE = re.compile(r"policy ([a-z-]+) of project")
METRICS_CONSUMER = "metrics"  # the durable feed consumer that counts pushes and pulls
COUNTED_EVENTS = ("artifact.pushed", "artifact.pulled")  # what count_events reads (feed consumer "metrics")
SEVERITIES = ("critical", "high", "medium", "low", "negligible", "unknown")


def denial_reason(message: str) -> str:
    """The bounded reason label of a pull-gate denial message."""
    found = _POLICY_RE.findall(message)
    policy = found[-1] if found else ""
    if policy == "require-signature":
        return "unsigned"
    if policy == "block-unscanned":
        return "unscanned"
    if policy == "wait-for-scan":
        return "scan_pending"
    if policy.startswith("block-"):
        return "scan_incomplete" if "scan is incomplete" in message else "vulnerable"
    return "other"


def scan_verdict(summary: dict | None) -> str:
    """The worst severity a scan found, or "clean" (a bounded label)."""
    for severity in SEVERITIES:
        if (summary or {}).get(severity) or (summary or {}).get(severity.capitalize()):
            return severity
    return "clean"


class Metrics:
    def __init__(self) -> None:
        # Multiprocess only if prometheus_client was imported with the directory set (it picks its value
        # class then): a variable set later in this process (a `serve` run in-process) must not count.
        in_files = values.ValueClass is not values.MutexValue
        self.multiprocess_dir = (os.environ.get(MULTIPROC_ENV) or None) if in_files else None
        self.registry = CollectorRegistry(auto_describe=True)
        self._scrape_collectors: list[Any] = []
        # Set when anyone may scrape (metrics_access = open): names of private projects to mask.
        self.private_projects: Callable[[], Collection[str]] | None = None
        self._job_observers: dict[str, Callable[[str, float, Any], None]] = {}
        r = self.registry
        # -- HTTP, with Distribution's names so its dashboards work --------------------------------
        self.http_requests = Counter(
            "registry_http_requests", "HTTP requests answered, by route handler, status code and method.",
            ["handler", "code", "method"], registry=r)
        self.http_duration = Histogram(
            "registry_http_request_duration_seconds", "Time from request start to the last response byte.",
            ["handler", "method"], buckets=DURATION_BUCKETS, registry=r)
        self.http_in_flight = Gauge(
            "registry_http_in_flight_requests", "Requests being served now.", ["handler"],
            multiprocess_mode="livesum", registry=r)
        self.http_request_size = Histogram(
            "registry_http_request_size_bytes", "Request body bytes received.", ["handler", "method"],
            buckets=SIZE_BUCKETS, registry=r)
        self.http_response_size = Histogram(
            "registry_http_response_size_bytes", "Response body bytes sent.", ["handler", "method"],
            buckets=SIZE_BUCKETS, registry=r)
        # -- registry activity per project -------------------------------------------------------
        self.pushes = Counter(
            "dockyard_pushes", "Manifests stored (artifact.pushed events: pushes, promotions, retags, mounts).",
            ["project"], registry=r)
        self.pulls = Counter("dockyard_pulls", "Manifest pulls (artifact.pulled events, data.count).", ["project"], registry=r)
        self.pushed_bytes = Counter(
            "dockyard_pushed_bytes", "Blob bytes committed by completed uploads.", ["project"], registry=r)
        self.pulled_bytes = Counter(
            "dockyard_pulled_bytes", "Blob bytes sent by successful blob GETs.", ["project"], registry=r)
        # -- storage --------------------------------------------------------------------------------
        self.storage_seconds = Histogram(
            "dockyard_storage_action_seconds", "Time a blob store call took, by driver and action.",
            ["driver", "action"], buckets=DURATION_BUCKETS, registry=r)
        # -- jobs, GC, scans, pull gate -------------------------------------------------------------
        self.jobs = Counter("dockyard_jobs", "Job runs finished, by kind and outcome.", ["kind", "outcome"], registry=r)
        self.job_duration = Histogram(
            "dockyard_job_duration_seconds", "Time a job's handler ran, by kind and outcome.", ["kind", "outcome"],
            buckets=JOB_BUCKETS, registry=r)
        self.gc_runs = Counter("dockyard_gc_runs", "Garbage collection runs finished (dry runs included).",
                               ["dry_run"], registry=r)
        self.gc_blobs = Counter("dockyard_gc_blobs_reclaimed", "Blobs deleted by garbage collection.", registry=r)
        self.gc_bytes = Counter("dockyard_gc_bytes_reclaimed", "Bytes freed by garbage collection.", registry=r)
        self.scan_duration = Histogram(
            "dockyard_scan_duration_seconds", "Time one image scan job took, by outcome.", ["outcome"],
            buckets=JOB_BUCKETS, registry=r)
        self.scan_verdicts = Counter(
            "dockyard_scan_verdicts", "Images scanned, by the worst severity found (clean: none; failed: the scan failed).",
            ["verdict"], registry=r)
        self.pull_gate_denials = Counter(
            "dockyard_pull_gate_denials", "Pulls and copies refused by a project's security policy, by reason.",
            ["reason"], registry=r)
        # -- database pool (per process, summed over live processes) ---------------------------------
        self.db_pool_checked_out = Gauge(
            "dockyard_db_pool_checked_out", "Database connections in use.", multiprocess_mode="livesum", registry=r)
        self.db_pool_size = Gauge(
            "dockyard_db_pool_size", "Database connections the pools may keep open (pool_size).",
            multiprocess_mode="livesum", registry=r)
        self.http = HttpStats(self)  # per-request numbers, written in batches (http_stats.py)
        self._pool: Any = None

    # -- recording (cheap: no I/O but the multiprocess file's mmap) -------------------------------

    def count_events(self, _conn: Any, events: Iterable[Any]) -> None:
        """Durable feed consumer "metrics": it runs in one process at a time, so each event counts once
        (at least once: a batch whose cursor update fails is counted again)."""
        for event in events:
            project = event.project or ""
            if event.type == "artifact.pushed":
                self.pushes.labels(project).inc()
            elif event.type == "artifact.pulled":
                self.pulls.labels(project).inc(int((event.data or {}).get("count", 1)))

    def storage_action(self, driver: str, action: str, seconds: float) -> None:
        self.storage_seconds.labels(driver, action).observe(seconds)

    def blob_committed(self, project: str, size: int) -> None:
        self.pushed_bytes.labels(project).inc(size)

    def pull_denied(self, message: str) -> None:
        self.pull_gate_denials.labels(denial_reason(message)).inc()

    def on_job(self, kind: str, observer: Callable[[str, float, Any], None]) -> None:
        """Also pass (outcome, seconds, result) of each run of a `kind` job to `observer` (GC, scans)."""
        self._job_observers[kind] = observer

    def job_finished(self, kind: str, outcome: str, seconds: float, result: Any = None) -> None:
        """Worker hook (jobs/worker.py): outcome is succeeded, failed, retried, released, waiting or lost."""
        self.jobs.labels(kind, outcome).inc()
        self.job_duration.labels(kind, outcome).observe(seconds)
        observer = self._job_observers.get(kind)
        if observer is not None:
            observer(outcome, seconds, result)

    def gc_finished(self, outcome: str, _seconds: float, result: Any = None) -> None:
        if outcome != "succeeded" or not isinstance(result, dict):
            return
        dry = bool(result.get("dry_run"))
        self.gc_runs.labels(str(dry).lower()).inc()
        if not dry:
            self.gc_blobs.inc(int(result.get("deleted", 0)))
            self.gc_bytes.inc(int(result.get("bytes_freed", 0)))

    def scan_finished(self, outcome: str, seconds: float, result: Any = None) -> None:
        """One scan job: its duration, and each image's verdict (an index's parent job scans nothing)."""
        images = result.get("images") if isinstance(result, dict) else None
        if outcome in ("released", "waiting", "lost") or (outcome == "succeeded" and not images):
            return  # not a finished scan: handed back, a parent of child scans, or skipped
        self.scan_duration.labels(outcome).observe(seconds)
        if outcome != "succeeded":
            if outcome == "failed":  # out of attempts (a retried attempt is not a verdict yet)
                self.scan_verdicts.labels("failed").inc()
            return
        for image in images:
            failed = image.get("status") not in (None, "ok")
            self.scan_verdicts.labels("failed" if failed else scan_verdict(image.get("summary"))).inc()

    def watch_pool(self, engine: Any) -> None:
        """Sample this process's connection pool at each flush (no per-checkout work)."""
        self._pool = engine.pool

    def flush(self) -> None:
        """Write batched numbers into the registry: every FLUSH_SECONDS, before a scrape, at shutdown."""
        self.http.flush()
        pool = self._pool
        if pool is not None and hasattr(pool, "checkedout"):
            self.db_pool_checked_out.set(pool.checkedout())
            self.db_pool_size.set(pool.size())

    async def flush_async(self) -> None:
        """flush() as a local task (jobs/local_tasks.py runs it every FLUSH_SECONDS on the event loop)."""
        self.flush()

    # -- exposition -------------------------------------------------------------------------------

    def add_scrape_collector(self, collector: Any) -> None:
        """A collector run only when this process answers a scrape (values read from the database)."""
        self._scrape_collectors.append(collector)

    def exposition(self) -> bytes:
        scrape = CollectorRegistry(auto_describe=False)
        if self.multiprocess_dir:
            MultiProcessCollector(scrape, path=self.multiprocess_dir)
        else:
            scrape.register(_Forward(self.registry))
        for collector in self._scrape_collectors:
            scrape.register(collector)
        if self.private_projects is not None:
            return generate_latest(_MaskProjects(scrape, frozenset(self.private_projects())))
        return generate_latest(scrape)

    def defined_names(self) -> list[str]:
        """Every metric family name this object defines (for the docs test)."""
        names = [f"{m.name}_total" if m.type == "counter" else m.name for m in self.registry.collect()]
        for collector in self._scrape_collectors:
            names += list(getattr(collector, "NAMES", ()))
        return names

    def process_exited(self) -> None:
        """Write what is pending, then drop this process's live gauges (in-flight, pool) from later scrapes."""
        self.flush()
        if self.multiprocess_dir:
            mark_process_dead(os.getpid(), self.multiprocess_dir)


PRIVATE_PROJECTS_LABEL = "(private)"


class _MaskProjects:
    """Series of private projects summed under project="(private)": with metrics_access = open anyone
    may scrape, and an anonymous client must not learn a private project's name (docs/security.md)."""

    def __init__(self, inner: Any, private: frozenset[str]):
        self.inner, self.private = inner, private

    def collect(self):
        for family in self.inner.collect():
            if not any(s.labels.get("project") in self.private for s in family.samples):
                yield family
                continue
            merged: dict[tuple, Any] = {}
            for sample in family.samples:
                if sample.labels.get("project") in self.private:
                    sample = sample._replace(labels={**sample.labels, "project": PRIVATE_PROJECTS_LABEL})
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = merged.get(key)
                merged[key] = sample if seen is None else seen._replace(value=seen.value + sample.value)
            family.samples = list(merged.values())
            yield family


class _Forward:
    """Exposes another registry's metrics inside a scrape registry (single-process mode)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self):
        return self.registry.collect()
