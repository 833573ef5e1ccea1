"""run_update: local and downloaded imports, one rescan job per change, the vulndb-update job handler."""

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest

from dockyard.jobs.queue import JobQueue
from dockyard.jobs.worker import Worker
from dockyard.scanning.updates import (
    RESCAN_KIND,
    RESCAN_PAYLOAD,
    UPDATE_KIND,
    UpdateError,
    VulnDBUpdater,
    request_rescan,
    run_update,
)
from dockyard.scanning.vulndb import VulnDB, VulnDBError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "osv"
ALL_IDS = sorted(p.stem for p in FIXTURES.glob("*.json"))
PYPI = ["GHSA-j8r2-6x86-q33q", "GHSA-v845-jxx5-vc9f", "PYSEC-2022-42969"]
NPM = ["GHSA-35jh-r3h4-6jhm"]

pytestmark = pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # SQLite only, as before the shared fixture


@pytest.fixture
def jobs(db):
    return JobQueue(db)


def rescans(jobs: JobQueue) -> list[dict]:
    return jobs.list(RESCAN_KIND).items


def export_zip(ids) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in ids:
            z.writestr(f"{i}.json", (FIXTURES / f"{i}.json").read_bytes())
    return buf.getvalue()


def bucket(exports: dict[str, bytes], failing: dict[str, Exception | int] | None = None) -> httpx.Client:
    """A MockTransport serving <ECOSYSTEM>/all.zip; `failing` maps an ecosystem to an exception or status."""
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        ecosystem = request.url.path.strip("/").split("/")[0]
        problem = (failing or {}).get(ecosystem)
        if isinstance(problem, Exception):
            raise problem
        if isinstance(problem, int):
            return httpx.Response(problem)
        if ecosystem not in exports:
            return httpx.Response(404)
        return httpx.Response(200, content=exports[ecosystem])

    client = httpx.Client(transport=httpx.MockTransport(handler))
    client.requests = requests  # type: ignore[attr-defined]
    return client


def newer_copy(tmp_path: Path, advisory_id: str, modified: str = "2099-01-01T00:00:00Z") -> Path:
    folder = tmp_path / "changed" / "osv"
    folder.mkdir(parents=True, exist_ok=True)
    record = json.loads((FIXTURES / f"{advisory_id}.json").read_text())
    record["modified"] = modified
    (folder / f"{advisory_id}.json").write_text(json.dumps(record))
    return folder


# -- local imports -------------------------------------------------------------------------


def test_import_from_fixtures_queues_one_rescan_and_a_repeat_queues_none(db, jobs):
    first = run_update(db, jobs, from_path=FIXTURES)
    [report] = first.reports
    assert (report.source, report.records, report.written, report.invalid) == ("osv", len(ALL_IDS), len(ALL_IDS), 0)
    assert first.written == len(ALL_IDS) and first.rescan_job is not None and not first.rescan_joined
    [job] = rescans(jobs)
    assert (job["id"], job["kind"], job["payload"], job["state"]) == (first.rescan_job, "rescan", RESCAN_PAYLOAD, "queued")

    again = run_update(db, jobs, from_path=FIXTURES)
    assert again.reports[0].written == 0 and again.reports[0].unchanged == len(ALL_IDS)
    assert again.rescan_job is None
    assert len(rescans(jobs)) == 1
    assert VulnDB(db).status().advisories == len(ALL_IDS)


def test_a_change_while_a_rescan_is_queued_joins_it(db, jobs, tmp_path):
    first = run_update(db, jobs, from_path=FIXTURES)
    changed = run_update(db, jobs, from_path=newer_copy(tmp_path, "GHSA-j8r2-6x86-q33q"))
    assert changed.written == 1
    assert (changed.rescan_job, changed.rescan_joined) == (first.rescan_job, True)
    assert len(rescans(jobs)) == 1


def test_a_running_rescan_does_not_count(db, jobs, tmp_path):
    first = run_update(db, jobs, from_path=FIXTURES)
    claimed = jobs.claim("worker-1", [RESCAN_KIND])
    assert claimed is not None and claimed.id == first.rescan_job
    changed = run_update(db, jobs, from_path=newer_copy(tmp_path, "GO-2022-0617"))
    assert changed.rescan_job not in (None, first.rescan_job) and not changed.rescan_joined
    assert sorted(j["state"] for j in rescans(jobs)) == ["queued", "running"]


def test_a_queued_rescan_with_another_payload_is_not_identical(db, jobs):
    other = jobs.enqueue(RESCAN_KIND, {"reason": "policy-change"})
    result = run_update(db, jobs, from_path=FIXTURES)
    assert result.rescan_job != other and not result.rescan_joined
    assert request_rescan(jobs) == (result.rescan_job, True)


def test_without_a_queue_nothing_is_enqueued(db, jobs):
    assert run_update(db, None, from_path=FIXTURES).rescan_job is None
    assert rescans(jobs) == []


def test_a_bad_path_fails_before_writing(db, jobs, tmp_path):
    with pytest.raises(VulnDBError, match="no such file or directory"):
        run_update(db, jobs, from_path=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VulnDBError, match="no .zip exports or .json records"):
        run_update(db, jobs, from_path=tmp_path / "empty")
    assert rescans(jobs) == [] and VulnDB(db).status().sources == ()


def test_on_source_is_called_before_and_after_each_source(db, jobs, tmp_path):
    mirror = tmp_path / "mirror"
    for eco, ids in {"PyPI": PYPI, "npm": NPM}.items():
        (mirror / eco).mkdir(parents=True)
        (mirror / eco / "all.zip").write_bytes(export_zip(ids))
    calls = []
    result = run_update(db, jobs, from_path=mirror, on_source=lambda s, r: calls.append((s, None if r is None else r.written)))
    assert calls == [("PyPI", None), ("PyPI", 3), ("npm", None), ("npm", 1)]
    assert [r.origin for r in result.reports] == [str(mirror / "PyPI" / "all.zip"), str(mirror / "npm" / "all.zip")]


# -- downloads -----------------------------------------------------------------------------


def test_download_imports_each_ecosystem_and_skips_unchanged_exports(db, jobs):
    client = bucket({"PyPI": export_zip(PYPI), "npm": export_zip(NPM)})
    first = run_update(db, jobs, ecosystems=["PyPI", "npm"], base_url="http://bucket", client=client)
    assert [(r.source, r.origin, r.written) for r in first.reports] == [
        ("PyPI", "http://bucket/PyPI/all.zip", 3),
        ("npm", "http://bucket/npm/all.zip", 1),
    ]
    assert client.requests == ["/PyPI/all.zip", "/npm/all.zip"]
    assert first.rescan_job is not None and len(rescans(jobs)) == 1

    second = run_update(db, jobs, ecosystems=["PyPI", "npm"], base_url="http://bucket", client=client)
    assert [r.skipped for r in second.reports] == [True, True]
    assert second.written == 0 and second.rescan_job is None
    assert not client.is_closed  # a caller's client is the caller's to close


@pytest.mark.parametrize(
    ("problem", "reason"),
    [(httpx.ConnectError("[Errno -3] Temporary failure in name resolution"), "Temporary failure in name resolution"),
     (404, "HTTP 404")],
)
def test_a_failed_download_stops_with_a_clear_message_and_keeps_earlier_sources(db, jobs, problem, reason):
    client = bucket({"PyPI": export_zip(PYPI)}, failing={"npm": problem})
    with pytest.raises(UpdateError) as caught:
        run_update(db, jobs, ecosystems=["PyPI", "npm", "Go"], base_url="http://bucket", client=client)
    message = str(caught.value)
    assert message.startswith("could not download http://bucket/npm/all.zip: ")
    assert reason in message and message.endswith("; use --from PATH to import local OSV exports")
    assert "GET http://bucket" not in message
    result = caught.value.result
    assert [r.source for r in result.reports] == ["PyPI"]
    assert result.rescan_job is not None and len(rescans(jobs)) == 1  # PyPI's advisories still trigger a rescan
    assert client.requests == ["/PyPI/all.zip", "/npm/all.zip"]  # Go was not tried
    assert [s.source for s in VulnDB(db).status().sources] == ["PyPI"]


def test_a_non_zip_answer_is_a_download_failure(db, jobs):
    client = bucket({"PyPI": b"<html>captive portal</html>"})
    with pytest.raises(UpdateError, match="could not download http://bucket/PyPI/all.zip: the answer is not a zip archive"):
        run_update(db, jobs, ecosystems=["PyPI"], base_url="http://bucket", client=client)
    assert rescans(jobs) == []


# -- the vulndb-update job -----------------------------------------------------------------


def test_the_job_handler_downloads_reports_progress_and_queues_a_rescan(db, jobs):
    clients = []

    def factory():
        clients.append(bucket({"PyPI": export_zip(PYPI), "npm": export_zip(NPM)}))
        return clients[-1]

    updater = VulnDBUpdater(db, jobs, base_url="http://bucket", ecosystems=["PyPI", "npm"], client_factory=factory)
    progress: list[dict] = []
    result = updater.handle({}, progress.append)
    assert result["written"] == 4 and result["rescan_job"] is not None and result["rescan_joined"] is False
    assert [(s["source"], s["written"]) for s in result["sources"]] == [("PyPI", 3), ("npm", 1)]
    assert progress[-1] == {"phase": "downloading", "total": 2, "done": 2, "source": "npm"}
    assert clients[0].is_closed
    json.dumps(result)  # a job result must be JSON

    only = updater.handle({"ecosystems": ["npm"]}, progress.append)
    assert [s["source"] for s in only["sources"]] == ["npm"] and only["sources"][0]["skipped"]


def test_a_worker_runs_vulndb_update_jobs(db, jobs):
    worker = Worker(jobs)
    updater = VulnDBUpdater(db, jobs, base_url="http://bucket", ecosystems=["npm"],
                            client_factory=lambda: bucket({"npm": export_zip(NPM)}))
    worker.register(UPDATE_KIND, updater.handle)
    job_id = jobs.enqueue(UPDATE_KIND, {})
    assert worker.run_pending() == 1
    job = jobs.get(job_id)
    assert job["state"] == "succeeded" and job["result"]["written"] == 1
    assert job["progress"]["done"] == 1
    [rescan] = rescans(jobs)
    assert rescan["id"] == job["result"]["rescan_job"]


def test_a_failed_download_fails_the_job_with_the_message(db, jobs):
    worker = Worker(jobs)
    updater = VulnDBUpdater(db, jobs, base_url="http://bucket", ecosystems=["npm"],
                            client_factory=lambda: bucket({}, failing={"npm": httpx.ConnectError("no route to host")}))
    worker.register(UPDATE_KIND, updater.handle)
    job_id = jobs.enqueue(UPDATE_KIND, {}, max_attempts=1)
    worker.run_pending()
    job = jobs.get(job_id)
    assert job["state"] == "failed"
    assert "could not download http://bucket/npm/all.zip: no route to host" in job["error"]
