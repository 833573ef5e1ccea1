"""Retention policies end to end, in-process, on SQLite and PostgreSQL: the API, dry runs that explain every
decision, real runs that delete exactly what expired (and audit it), pull-time recording, protections,
schedules and jobs. Time is controlled: push times are set in the database relative to a fixed NOW and
the services' clocks are replaced, so nothing depends on when the test runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import anyio.to_thread
import pytest
from sqlalchemy import text

from .governance_helpers import Env, env, error, index_body, push_referrer  # noqa: F401  (env is a fixture)
from .helpers import OCI_MANIFEST

NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
BASE_PATH = "/api/v1/projects/acme/retention-policies"

SEED_ECR = {"rules": [
    {"rulePriority": 1, "description": "Keep last 10 images tagged v*",
     "selection": {"tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan", "countNumber": 10},
     "action": {"type": "expire"}},
    {"rulePriority": 2, "description": "Expire untagged images older than 7 days",
     "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7},
     "action": {"type": "expire"}},
]}
SEED_NATIVE = {"rules": [
    {"action": "keep", "tags": ["v*"], "count": 10},
    {"action": "delete", "tags": ["v*"]},
    {"action": "delete", "untagged": True, "pushed_older_than_days": 7},
]}


def set_times(env: Env, repo: str, digest: str, *, pushed_days: float, pulled_days: float | None = None) -> None:
    pulled = NOW - timedelta(days=pulled_days) if pulled_days is not None else None
    with env.services.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE manifests SET created_at = :p, last_pulled_at = :l WHERE digest = :d"
                 " AND repository_id = (SELECT id FROM repositories WHERE name = :r)"),
            {"p": NOW - timedelta(days=pushed_days), "l": pulled, "d": digest, "r": repo},
        )


def manifests_in(env: Env, repo: str) -> set[str]:
    return {r[0] for r in env.reg.sql(
        "SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id WHERE r.name = :n", n=repo)}


def by_digest(report: dict, repo: str) -> dict[str, dict]:
    [entry] = [r for r in report["repositories"] if r["repository"] == repo]
    return {d["digest"]: d for d in entry["decisions"]}


async def seed(env: Env) -> dict[str, str]:
    """acme/app: v1.0.0 … v1.11.0 (30 … 19 days old), latest (40 days), two untagged images (9 and 3 days);
    acme/other (not matched by the policy's pattern) with an old untagged image."""
    await env.project("acme")
    reg, names = env.reg, {}
    for i in range(12):
        names[f"v1.{i}.0"], _ = await reg.push_image("acme/app", f"v1.{i}.0", seed=i)
        set_times(env, "acme/app", names[f"v1.{i}.0"], pushed_days=30 - i)
    names["latest"], _ = await reg.push_image("acme/app", "latest", seed=50)
    set_times(env, "acme/app", names["latest"], pushed_days=40)
    for label, seed_no, days in (("old", 60, 9.5), ("young", 61, 3)):
        names[label], _ = await reg.push_image("acme/app", None, seed=seed_no)
        set_times(env, "acme/app", names[label], pushed_days=days)
    names["other"], _ = await reg.push_image("acme/other", None, seed=70)
    set_times(env, "acme/other", names["other"], pushed_days=90)
    env.services.retention.clock = lambda: NOW
    return names


async def create(env: Env, fmt: str, document: dict, **extra) -> dict:
    body = {"name": f"seed-{fmt}", "format": fmt, "document": document, "repository_pattern": "app", **extra}
    r = await env.api.post(BASE_PATH, json=body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("fmt", ["ecr", "native"])
async def test_seed_policies_dry_run_explains_and_run_deletes_exactly_the_expired(env: Env, fmt: str):
    names = await seed(env)
    policy = await create(env, fmt, SEED_ECR if fmt == "ecr" else SEED_NATIVE)
    before = manifests_in(env, "acme/app")

    r = await env.api.post(f"{BASE_PATH}/{policy['id']}/dry-run")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["dry_run"] is True and [x["repository"] for x in report["repositories"]] == ["acme/app"]
    decisions = by_digest(report, "acme/app")
    untagged_rule = 2 if fmt == "ecr" else 3
    if fmt == "ecr":
        assert decisions[names["v1.11.0"]]["reason"] == "kept by rule 1: among the 10 most recent v*"
        assert decisions[names["v1.1.0"]]["reason"] == (
            "expired by rule 1: v*, number 11 by push time (only the 10 most recent v* are kept)")
        assert decisions[names["young"]]["reason"] == "kept by rule 2: untagged, pushed 3 days ago (expires after 7 days)"
    else:
        assert decisions[names["v1.11.0"]]["reason"] == "kept by rule 1: among the 10 most recently pushed v*"
        assert decisions[names["v1.1.0"]]["reason"] == "expired by rule 2: v1.1.0, not kept by any keep rule"
        assert decisions[names["young"]]["reason"] == (
            "kept: not expired by rule 3: untagged, pushed 3 days ago (needs more than 7)")
    assert decisions[names["old"]]["reason"] == f"expired by rule {untagged_rule}: untagged, pushed 9 days ago"
    assert decisions[names["old"]]["rule"] == untagged_rule and decisions[names["old"]]["action"] == "expire"
    assert decisions[names["latest"]]["reason"] == "kept: no rule selected it"
    expected = {names["v1.0.0"], names["v1.1.0"], names["old"]}
    assert {d for d, x in decisions.items() if x["action"] == "expire"} == expected
    assert report["summary"]["expired"] == 3 and report["summary"]["kept"] == 12 and report["summary"]["deleted"] == 0
    assert manifests_in(env, "acme/app") == before  # a dry run deletes nothing

    r = await env.api.post(f"{BASE_PATH}/{policy['id']}/run", params={"sync": "true"})
    assert r.status_code == 200, r.text
    run = r.json()["report"]
    assert run["summary"]["deleted"] == 3 and run["summary"]["failed"] == 0
    assert manifests_in(env, "acme/app") == before - expected
    assert manifests_in(env, "acme/other") == {names["other"]}  # outside the repository pattern
    tags = (await env.api.get("/v2/acme/app/tags/list")).json()["tags"]
    assert "v1.0.0" not in tags and "v1.1.0" not in tags and "v1.2.0" in tags and "latest" in tags

    events = await env.audit("retention.delete")
    assert {e["object"] for e in events} == {f"acme/app@{d}" for d in expected}
    for e in events:
        assert e["actor"] == "admin" and e["project"] == "acme" and e["outcome"] == "success"
        assert e["detail"]["policy"] == f"seed-{fmt}"
    tagged_rule = 1 if fmt == "ecr" else 2  # as the dry run explained
    assert {e["object"]: e["detail"]["rule"] for e in events} == {
        f"acme/app@{names[k]}": untagged_rule if k == "old" else tagged_rule for k in ("v1.0.0", "v1.1.0", "old")}
    shown = (await env.api.get(f"{BASE_PATH}/{policy['id']}")).json()
    assert shown["last_run_at"] is not None

    again = (await env.api.post(f"{BASE_PATH}/{policy['id']}/run", params={"sync": "true"})).json()["report"]
    assert again["summary"]["deleted"] == 0  # idempotent


async def test_policy_api_validation_permissions_and_audit(env: Env):
    await env.project("acme")
    bad = {"rules": [SEED_ECR["rules"][1], {**SEED_ECR["rules"][1], "rulePriority": 3}]}
    detail = error(await env.api.post(BASE_PATH, json={"name": "x", "format": "ecr", "document": bad}), 400, "INVALID_REQUEST")
    assert detail["detail"] == {"rule": 3, "field": "tagStatus"}
    r = await env.api.post(BASE_PATH, json={"name": "x", "format": "ecr", "document": bad})
    assert r.json()["errors"][0]["message"] == "rule 3: only one rule may select untagged images (rule 2 already does)"
    error(await env.api.post(BASE_PATH, json={"name": "x", "format": "ecr", "document": SEED_ECR, "schedule": "every day"}),
          400, "INVALID_REQUEST")
    error(await env.api.post(BASE_PATH, json={"name": "x", "format": "yaml", "document": SEED_ECR}), 400, "INVALID_REQUEST")
    error(await env.api.post(BASE_PATH, json={"name": "x", "format": "ecr", "document": SEED_ECR,
                                              "repository_pattern": "/abs"}), 400, "INVALID_REQUEST")
    created = (await env.api.post(BASE_PATH, json={"name": "nightly", "format": "ecr", "document": SEED_ECR})).json()
    assert created["repository_pattern"] == "**" and created["enabled"] is True and created["project"] == "acme"
    error(await env.api.post(BASE_PATH, json={"name": "nightly", "format": "native", "document": SEED_NATIVE}), 409, "CONFLICT")
    error(await env.api.get(f"{BASE_PATH}/9999"), 404, "NOT_FOUND")

    await env.project("beta")
    error(await env.api.get(f"/api/v1/projects/beta/retention-policies/{created['id']}"), 404, "NOT_FOUND")  # other project
    maintainer = await env.user("mo", acme="maintainer")
    stranger = await env.user("sy")
    error(await env.api.get(BASE_PATH, auth=maintainer), 403, "DENIED")
    error(await env.api.post(f"{BASE_PATH}/{created['id']}/run", auth=maintainer), 403, "DENIED")
    error(await env.api.get(BASE_PATH, auth=stranger), 404, "NOT_FOUND")

    put = await env.api.put(f"{BASE_PATH}/{created['id']}",
                            json={"name": "nightly", "format": "native", "document": SEED_NATIVE, "enabled": False})
    assert put.status_code == 200 and put.json()["format"] == "native" and put.json()["enabled"] is False
    listed = (await env.api.get(BASE_PATH)).json()
    assert [p["name"] for p in listed] == ["nightly"]
    assert (await env.api.delete(f"{BASE_PATH}/{created['id']}")).status_code == 204
    actions = [e["action"] for e in await env.audit("retention-policy")]
    assert sorted(actions) == ["retention-policy.create", "retention-policy.delete", "retention-policy.update"]


async def test_pull_times_are_buffered_then_flushed_and_drive_pull_rules(env: Env):
    await env.project("acme")
    reg = env.reg
    digests = {}
    for i, tag in enumerate(["pr-1", "pr-2", "app-1", "app-2"]):
        digests[tag], _ = await reg.push_image("acme/app", tag, seed=i)
        set_times(env, "acme/app", digests[tag], pushed_days=60 if tag != "app-2" else 10)
    pulls = env.services.pulls
    pulls.clock = lambda: NOW - timedelta(days=2)
    r = await env.api.get("/v2/acme/app/manifests/pr-2", headers={"Accept": OCI_MANIFEST})  # by tag
    assert r.status_code == 200
    assert (await env.api.head("/v2/acme/app/manifests/app-1")).status_code == 200  # HEAD is not a pull
    # Nothing written per pull: the time waits in memory, keyed by the resolved digest.
    assert reg.scalar("SELECT count(*) FROM manifests WHERE last_pulled_at IS NOT NULL") == 0
    assert pulls.pending == 1
    assert await pulls.flush_async() == 1 and pulls.pending == 0
    pulled = reg.sql("SELECT digest, last_pulled_at FROM manifests WHERE last_pulled_at IS NOT NULL")
    assert [row[0] for row in pulled] == [digests["pr-2"]]
    # An older buffered time never moves last_pulled_at backwards (another process may have flushed later).
    pulls.clock = lambda: NOW - timedelta(days=5)
    pulls.record("acme/app", digests["pr-2"])
    await pulls.flush_async()
    assert reg.sql("SELECT last_pulled_at FROM manifests WHERE last_pulled_at IS NOT NULL") == [(pulled[0][1],)]

    set_times(env, "acme/app", digests["pr-1"], pushed_days=60, pulled_days=20)
    env.services.retention.clock = lambda: NOW
    doc = {"rules": [
        {"action": "delete", "tags": ["*"], "never_pulled": True, "pushed_older_than_days": 30},
        {"action": "delete", "tags": ["pr-*"], "pulled_older_than_days": 14},
    ]}
    policy = (await env.api.post(BASE_PATH, json={"name": "pulls", "format": "native", "document": doc})).json()
    decisions = by_digest((await env.api.post(f"{BASE_PATH}/{policy['id']}/dry-run")).json(), "acme/app")
    assert decisions[digests["app-1"]]["reason"] == "expired by rule 1: app-1, pushed 60 days ago, never pulled"
    assert decisions[digests["app-2"]]["reason"] == (
        "kept: not expired by rule 1: app-2, pushed 10 days ago (needs more than 30), never pulled")
    assert decisions[digests["pr-1"]]["reason"] == "expired by rule 2: pr-1, last pulled 20 days ago"
    assert decisions[digests["pr-2"]]["reason"] == (
        "kept: not expired by rule 1: pr-2, pushed 60 days ago, last pulled 2 days ago")  # the first rule that selected it


async def test_protections_index_child_referrer_and_immutable_tag(env: Env):
    await env.project("acme")
    reg = env.reg
    amd, amd_body = await reg.push_image("acme/app", None, seed=1)
    arm, arm_body = await reg.push_image("acme/app", None, seed=2)
    index_bytes = index_body(("amd64", amd_body), ("arm64", arm_body))
    index = await reg.push_manifest("acme/app", "v2", index_bytes, "application/vnd.oci.image.index.v1+json")
    signature, _ = await push_referrer(reg, "acme/app", "application/vnd.oci.image.index.v1+json", index_bytes,
                                       "application/vnd.dev.cosign.artifact.sig.v1+json", b"signature")
    frozen, _ = await reg.push_image("acme/app", "v1", seed=3)
    stray, _ = await reg.push_image("acme/app", None, seed=4)
    for digest, days in ((amd, 30), (arm, 30), (index, 20), (signature, 20), (frozen, 25), (stray, 30)):
        set_times(env, "acme/app", digest, pushed_days=days)
    rule_id = await env.rule("acme", "immutable", "v1")
    env.services.retention.clock = lambda: NOW
    doc = {"rules": [
        {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                                          "countNumber": 7}, "action": {"type": "expire"}},
        {"rulePriority": 2, "selection": {"tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan",
                                          "countNumber": 1}, "action": {"type": "expire"}},
    ]}
    policy = (await env.api.post(BASE_PATH, json={"name": "protect", "format": "ecr", "document": doc})).json()
    decisions = by_digest((await env.api.post(f"{BASE_PATH}/{policy['id']}/dry-run")).json(), "acme/app")
    assert decisions[amd]["reason"] == f"protected: child of index {index}"
    assert decisions[amd]["protection"] == {"kind": "index-child", "by": index, "would_expire_by_rule": 1}
    assert decisions[arm]["reason"] == f"protected: child of index {index}"
    assert decisions[signature]["reason"] == f"protected: referrer of kept {index}"
    assert decisions[frozen]["reason"] == f"protected: immutable tag v1 (tag rule {rule_id})"
    assert decisions[frozen]["protection"]["would_expire_by_rule"] == 2
    assert decisions[stray]["reason"] == "expired by rule 1: untagged, pushed 30 days ago"
    run = (await env.api.post(f"{BASE_PATH}/{policy['id']}/run", params={"sync": "true"})).json()["report"]
    assert run["summary"]["deleted"] == 1 and run["summary"]["protected"] == 4
    assert manifests_in(env, "acme/app") == {amd, arm, index, signature, frozen}
    assert (await env.api.get(f"/v2/acme/app/manifests/{amd}", headers={"Accept": OCI_MANIFEST})).status_code == 200


async def wait_for_job(env: Env, job_id: int) -> dict:
    for _ in range(200):
        await anyio.to_thread.run_sync(env.services.worker.run_pending)
        job = env.services.jobs.get(job_id)
        if job["state"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {env.services.jobs.get(job_id)}")


async def test_schedules_follow_the_policy_and_jobs_run_it(env: Env):
    names = await seed(env)
    scheduler = env.services.scheduler
    policy = await create(env, "ecr", SEED_ECR, schedule="0 3 * * *")
    name = f"retention:{policy['id']}"
    assert scheduler.get(name)["cron"] == "0 3 * * *"
    assert scheduler.get(name)["kind"] == "retention" and scheduler.get(name)["payload"] == {"policy_id": policy["id"]}
    body = {"name": "seed-ecr", "format": "ecr", "document": SEED_ECR, "repository_pattern": "app", "schedule": "0 4 * * *"}
    await env.api.put(f"{BASE_PATH}/{policy['id']}", json=body)
    assert scheduler.get(name)["cron"] == "0 4 * * *"
    await env.api.put(f"{BASE_PATH}/{policy['id']}", json={**body, "enabled": False})
    assert scheduler.get(name) is None  # a disabled policy has no schedule
    await env.api.put(f"{BASE_PATH}/{policy['id']}", json=body)

    # The schedule fires (scheduler clock moved past 04:00): the job runs as the system account.
    scheduler.clock = lambda: datetime.now(UTC) + timedelta(days=2)
    ticked = await anyio.to_thread.run_sync(scheduler.tick)  # housekeeping's and events-prune's schedules are due too
    [job_id] = [i for i in ticked if env.services.jobs.get(i)["kind"] == "retention"]
    job = await wait_for_job(env, job_id)
    assert job["state"] == "succeeded", job
    assert job["result"]["summary"]["deleted"] == 3
    assert {d["digest"] for d in job["result"]["deleted"]} == {names["v1.0.0"], names["v1.1.0"], names["old"]}
    assert {e["actor"] for e in await env.audit("retention.delete")} == {"system:retention"}

    # On demand: POST …/run queues a job and answers with its id.
    r = await env.api.post(f"{BASE_PATH}/{policy['id']}/run")
    assert r.status_code == 202 and r.json()["report"] is None
    job = await wait_for_job(env, r.json()["job_id"])
    assert job["state"] == "succeeded" and job["result"]["summary"]["deleted"] == 0
    assert job["payload"]["trigger"] == "manual" and job["payload"]["actor"] == "admin"

    assert (await env.api.delete(f"{BASE_PATH}/{policy['id']}")).status_code == 204
    assert scheduler.get(name) is None
