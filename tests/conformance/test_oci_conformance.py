"""OCI distribution-spec conformance suite against a freshly started Dockyard.

Binary: ``oci-conformance.test`` built by scripts/install-tools.sh (the Ginkgo
suite of the v1.1 line; see the pinned version there). All four workflows run.

Both suites run on SQLite and PostgreSQL and must report 0 failures:
- ``oci-conformance.test``: the Ginkgo suite of the v1.1 line, all four workflows;
- ``oci-conformance-next``: the redesigned suite from the spec's main branch, with every
  optional API (upload cancel, ``?tag=``, anonymous mount) and data set (sha512, tag params) on.

Opt-in extra: DOCKYARD_CONFORMANCE_REFERENCE=1 adds a ``distribution-reference`` case that
runs the suites against Debian's Distribution 2.8 (docker-registry), informational only.

Reports (junit.xml, report.html, output.txt) stay in the test's tmp dir.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.server import run_distribution, run_dockyard, tool

NAMESPACE = "conformance/repo"
CROSSMOUNT_NAMESPACE = "conformance/other"
SUITE_TIMEOUT = 900
REFERENCE = "distribution-reference"

BACKENDS = ["sqlite", "postgresql"]
if os.environ.get("DOCKYARD_CONFORMANCE_REFERENCE") == "1":
    BACKENDS.append(REFERENCE)


@dataclass
class JUnitSummary:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self, label: str) -> str:
        text = f"{label}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped"
        return text + (f", {self.errors} errors" if self.errors else "")


def parse_junit(path: Path) -> JUnitSummary:
    """Count <testcase> outcomes in a JUnit XML report (any nesting).

    Handles both suites: Ginkgo's (<failure>/<skipped> children) and the
    redesigned suite's (``status="failure"`` attributes). Ginkgo's passing
    reporter pseudo-cases ("[ReportAfterSuite] ...") are not counted.
    """
    summary = JUnitSummary()
    for case in ET.parse(path).getroot().iter("testcase"):
        name = " ".join(filter(None, [case.get("classname"), case.get("name")]))
        status = (case.get("status") or "").lower()
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None or status in ("failed", "failure", "error", "errored"):
            if case.find("error") is not None or status in ("error", "errored"):
                summary.errors += 1
            else:
                summary.failed += 1
            message = " ".join(((bad.get("message") or bad.text or "") if bad is not None else "").split())
            summary.problems.append(f"{name}: {message[:300]}" if message else name)
        elif case.find("skipped") is not None or status in ("skipped", "disabled", "pending"):
            summary.skipped += 1
        elif not (case.get("name") or "").startswith("[Report"):
            summary.passed += 1
    return summary


def clean_env(**settings: str) -> dict[str, str]:
    """The environment minus inherited OCI_* settings (OCI_DEBUG/OCI_LOG pass through)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OCI_") or k in ("OCI_DEBUG", "OCI_LOG")}
    env.update(settings)
    return env


def ginkgo_env(server, reports: Path, **extra: str) -> dict[str, str]:
    """Environment of the v1.1-line suite: all four workflows, automatic cross-mount expected."""
    return clean_env(
        OCI_ROOT_URL=server.url,
        OCI_NAMESPACE=NAMESPACE,
        OCI_CROSSMOUNT_NAMESPACE=CROSSMOUNT_NAMESPACE,
        OCI_TEST_PULL="1",
        OCI_TEST_PUSH="1",
        OCI_TEST_CONTENT_DISCOVERY="1",
        OCI_TEST_CONTENT_MANAGEMENT="1",
        OCI_HIDE_SKIPPED_WORKFLOWS="0",
        OCI_AUTOMATIC_CROSSMOUNT="1",
        OCI_REPORT_DIR=str(reports),
        **extra,
    )


def next_env(server, results: Path, **extra: str) -> dict[str, str]:
    """Environment of the redesigned suite with every optional API and data set on."""
    return clean_env(
        OCI_REGISTRY=server.host,
        OCI_TLS="disabled",
        OCI_REPO1=NAMESPACE,
        OCI_REPO2=CROSSMOUNT_NAMESPACE,
        OCI_RESULTS_DIR=str(results),
        OCI_API_BLOBS_UPLOAD_CANCEL="true",
        OCI_API_MANIFESTS_TAG_PARAM="true",
        OCI_DATA_TAG_PARAM="true",
        OCI_DATA_TAG_PARAM_SHA512="true",
        **extra,
    )


def run_suite(cmd: list[str], env: dict[str, str], workdir: Path, junit: Path) -> JUnitSummary:
    output = workdir / "output.txt"
    with open(output, "wb") as out:
        try:
            proc = subprocess.run(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=SUITE_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"conformance suite timed out after {SUITE_TIMEOUT}s; output: {output}")
    if not junit.exists():
        tail = output.read_text(errors="replace")[-4000:]
        pytest.fail(f"conformance suite (exit {proc.returncode}) wrote no {junit}:\n{tail}")
    return parse_junit(junit)


@contextlib.contextmanager
def registry(backend: str, tmp_path: Path, database_url_for):
    data_dir = tmp_path / "data"
    if backend == REFERENCE:
        with run_distribution(data_dir) as server:
            yield server
    else:
        with run_dockyard(data_dir, database_url=database_url_for(backend)) as server:
            yield server


def report(capsys, line: str, summary: JUnitSummary, limit: int = 40) -> None:
    with capsys.disabled():
        print(f"\n{line}")
        for problem in summary.problems[:limit]:
            print(f"  FAILED {problem}")
        if len(summary.problems) > limit:
            print(f"  ... and {len(summary.problems) - limit} more (see junit.xml)")


@pytest.mark.conformance
@pytest.mark.parametrize("backend", BACKENDS)
def test_oci_conformance(backend, tmp_path, database_url_for, capsys):
    binary = tool("oci-conformance.test")
    reports = tmp_path / "report"
    reports.mkdir()
    with registry(backend, tmp_path, database_url_for) as server:
        env = ginkgo_env(server, reports)
        summary = run_suite([binary, "-ginkgo.no-color", "-ginkgo.v"], env, reports,
                            reports / "junit.xml")
        alive = server.alive()
    report(capsys, summary.line(f"conformance[{backend}]"), summary)
    assert summary.passed > 0, f"no conformance test passed; see {reports}"
    if backend == REFERENCE:
        return  # Distribution 2.8 predates parts of OCI 1.1: informational only
    assert alive, f"server died during the suite; log: {server.log_path}"
    assert summary.failed == 0 and summary.errors == 0, (
        f"{summary.line('conformance')}; reports in {reports}:\n" + "\n".join(summary.problems))


@pytest.mark.conformance
@pytest.mark.parametrize("backend", BACKENDS)
def test_oci_conformance_next(backend, tmp_path, database_url_for, capsys):
    """Redesigned suite (spec main branch) with every optional API and data set enabled."""
    binary = tool("oci-conformance-next")
    results = tmp_path / "results"
    with registry(backend, tmp_path, database_url_for) as server:
        env = next_env(server, results)
        summary = run_suite([binary], env, tmp_path, results / "junit.xml")
        alive = server.alive()
    report(capsys, summary.line(f"conformance-next[{backend}]"), summary)
    assert summary.passed > 0
    if backend == REFERENCE:
        return
    assert alive, f"server died during the suite; log: {server.log_path}"
    assert summary.failed == 0 and summary.errors == 0, (
        f"{summary.line('conformance-next')}; reports in {results}:\n" + "\n".join(summary.problems))

