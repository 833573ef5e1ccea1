"""PullGate decisions with the database out of the picture: caching, the unscanned policies and
the wait deadline (the end-to-end paths are in tests/functional/test_security_gates.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from dockyard.policy.security_policy import SecurityPolicy
from dockyard.errors import Denied
from dockyard.policy.pull_gate import PullGate
from dockyard.scanning.reports import OK, ScanReport
from dockyard.scanning.targets import TargetReader

IMAGE = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64, "size": 2},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "d" * 64, "size": 3}],
}).encode()
SIG = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64, "size": 2},
    "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": "sha256:" + "e" * 64, "size": 3}],
}).encode()
DIGEST = "sha256:" + "a" * 64
MT = "application/vnd.oci.image.manifest.v1+json"


class FakeSecurity:
    def __init__(self, policy):
        self.policy = policy
        self.generation = 0
        self.allow = frozenset()

    def cached_policy(self, project):
        return self.policy

    def policy_for(self, project):
        return self.policy

    def active_allowlist(self, project):
        return self.allow


class FakeReports:
    def __init__(self):
        self.generation = 0
        self.by_digest = {}
        self.gets = 0

    def get(self, digest, scanner):
        self.gets += 1
        return self.by_digest.get(digest)


class FakeDb:
    async def run(self, fn, *args):
        return fn(*args)

    run_fast = run


def report(findings):
    return ScanReport(DIGEST, "builtin", OK, None, None, 1, {}, findings, None, None)


def gate(policy, reports, scans, clock):
    return PullGate(
        FakeDb(), TargetReader(FakeDb()), FakeSecurity(policy), reports, signatures=None,
        request_scan=lambda repo, digest, scanner: scans.append(digest), cache_seconds=5, clock=clock,
    )


def policy(**kw):
    return SecurityPolicy(1, "prod", block_severity="critical", **kw)


async def test_verdicts_are_cached_until_a_report_changes():
    reports, scans, now = FakeReports(), [], [0.0]
    reports.by_digest[DIGEST] = report([{"id": "GHSA-x", "aliases": ["CVE-2024-1"], "severity": "Critical"}])
    g = gate(policy(), reports, scans, lambda: now[0])
    for _ in range(3):
        with pytest.raises(Denied, match=r"has 1 critical vulnerability \(CVE-2024-1\); policy block-critical of project prod"):
            await g.check("prod/app", DIGEST, MT, IMAGE, "alice")
    assert reports.gets == 1  # evaluated once, then served from the cache
    reports.by_digest[DIGEST] = report([])
    reports.generation += 1  # what ReportStore.save does
    await g.check("prod/app", DIGEST, MT, IMAGE, "alice")
    now[0] = 10.0  # past cache_seconds: evaluated again
    await g.check("prod/app", DIGEST, MT, IMAGE, "alice")
    assert reports.gets == 3


async def test_exempt_and_non_image_artifacts_pass():
    reports, scans = FakeReports(), []
    g = gate(policy(unscanned="block"), reports, scans, lambda: 0.0)
    g.exempt_subjects = frozenset({"scanner$dockyard"})
    await g.check("prod/app", DIGEST, MT, IMAGE, "scanner$dockyard")
    await g.check("prod/app", DIGEST, MT, SIG, "alice")  # a cosign .sig manifest is not an image
    assert scans == [] and reports.gets == 0


@pytest.mark.parametrize("mode", ["allow", "block"])
async def test_unscanned_allow_and_block_queue_a_scan_and_are_not_cached(mode):
    reports, scans = FakeReports(), []
    g = gate(policy(unscanned=mode), reports, scans, lambda: 0.0)
    for _ in range(2):
        if mode == "block":
            with pytest.raises(Denied, match="has not been scanned yet"):
                await g.check("prod/app", DIGEST, MT, IMAGE, "alice")
        else:
            await g.check("prod/app", DIGEST, MT, IMAGE, "alice")
    assert scans == [DIGEST, DIGEST] and reports.gets == 2


async def test_wait_refuses_at_the_deadline(monkeypatch):
    reports, scans = FakeReports(), []
    loop = asyncio.get_running_loop()
    g = gate(policy(unscanned="wait", unscanned_wait_seconds=1), reports, scans, loop.time)
    monkeypatch.setattr("dockyard.policy.pull_gate.WAIT_POLL_SECONDS", 0.05)
    start = loop.time()
    with pytest.raises(Denied, match=r"was not scanned within 1 s .*policy wait-for-scan of project prod"):
        await g.check("prod/app", DIGEST, MT, IMAGE, "alice")
    assert 1.0 <= loop.time() - start < 3.0 and len(scans) >= 2


async def test_wait_returns_the_verdict_as_soon_as_it_lands(monkeypatch):
    reports, scans = FakeReports(), []
    loop = asyncio.get_running_loop()
    g = gate(policy(unscanned="wait", unscanned_wait_seconds=30), reports, scans, loop.time)
    monkeypatch.setattr("dockyard.policy.pull_gate.WAIT_POLL_SECONDS", 0.05)
    loop.call_later(0.3, lambda: reports.by_digest.__setitem__(DIGEST, report([{"id": "CVE-2024-9", "severity": "Critical"}])))
    start = loop.time()
    with pytest.raises(Denied, match=r"has 1 critical vulnerability \(CVE-2024-9\)"):
        await g.check("prod/app", DIGEST, MT, IMAGE, "alice")
    assert loop.time() - start < 5


async def test_pushers_pass_and_are_asked_only_when_the_answer_would_be_no():
    reports, scans, calls = FakeReports(), [], []
    reports.by_digest[DIGEST] = report([{"id": "CVE-2024-1", "severity": "Critical"}])
    g = gate(policy(), reports, scans, lambda: 0.0)

    def pusher(answer):
        return lambda: calls.append(answer) or answer

    await g.check("prod/app", DIGEST, MT, IMAGE, "dev", pusher=pusher(True))  # refused for others, not for a pusher
    with pytest.raises(Denied):
        await g.check("prod/app", DIGEST, MT, IMAGE, "guest", pusher=pusher(False))
    await g.check("prod/app", DIGEST, MT, IMAGE, "dev", pusher=pusher(True))  # cached refusal: still lets a pusher by
    assert calls == [True, False, True]
    reports.by_digest[DIGEST] = report([])
    reports.generation += 1
    await g.check("prod/app", DIGEST, MT, IMAGE, "guest", pusher=pusher(False))  # evaluated: allowed, pusher asked
    await g.check("prod/app", DIGEST, MT, IMAGE, "guest", pusher=pusher(False))  # cached allow: pusher not asked
    assert calls == [True, False, True, False]
