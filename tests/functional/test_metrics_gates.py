"""Pull-gate denials by reason and scan verdicts reach the metrics (real syft, the OSV fixtures)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .governance_helpers import env, error  # noqa: F401
from .test_security_gates import DEPLOY, import_fixtures, policy, push_built, wait_scanned
from tests.support.scan_images import VULNERABLE, java_app


def counts(env, family: str, label: str) -> dict[str, float]:
    text = env.services.metrics.exposition().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            for s in fam.samples:
                if s.name in (family + "_total", family + "_count"):
                    out[s.labels[label]] = s.value
    return out


async def test_denials_by_reason_and_scan_verdicts(env, tmp_path):
    await env.project("prod")
    await env.user("deploy", prod="guest")
    import_fixtures(env)
    await push_built(env, "prod/app", "bad", java_app(tmp_path / "bad", VULNERABLE))
    await policy(env, "prod", block_severity="critical", unscanned="block")
    error(await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY), 403, "DENIED")  # not scanned yet
    await wait_scanned(env, "prod/app", "bad")
    error(await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY), 403, "DENIED")  # critical finding
    error(await env.api.get("/v2/prod/app/manifests/bad", auth=DEPLOY), 403, "DENIED")  # the cached verdict
    assert counts(env, "dockyard_pull_gate_denials", "reason") == {"unscanned": 1, "vulnerable": 2}
    assert counts(env, "dockyard_scan_verdicts", "verdict") == {"critical": 1}
    assert counts(env, "dockyard_scan_duration_seconds", "outcome") == {"succeeded": 1}
    assert counts(env, "dockyard_jobs", "kind") == {"scan": 1}
