"""Background work as jobs (jobs/housekeeping.py, jobs/local_tasks.py): the housekeeping schedule
row, what one housekeeping job removes, and the per-process pull flush at shutdown."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import update

from dockyard.metadata import job_kinds
from dockyard.metadata.db import utcnow
from dockyard.metadata.models import schedules, uploads

from .helpers import OCI_MANIFEST

REPO = "acme/app"


async def test_housekeeping_is_a_schedule_row_at_the_configured_interval(registry_factory):
    async with registry_factory(upload_purge_interval_seconds=900) as reg:
        schedule = reg.services.scheduler.get(job_kinds.HOUSEKEEPING)
        assert schedule is not None
        assert schedule["kind"] == job_kinds.HOUSEKEEPING and schedule["cron"] == "@every 900s"
        left = schedule["next_run_at"] - utcnow()
        assert timedelta(seconds=890) < left <= timedelta(seconds=900)
    async with registry_factory(upload_purge_interval_seconds=0) as reg:  # 0 removes it
        assert reg.services.scheduler.get(job_kinds.HOUSEKEEPING) is None


async def test_due_housekeeping_job_purges_a_stale_upload_and_keeps_a_fresh_one(registry_factory):
    async with registry_factory(upload_max_age_seconds=3600) as reg:
        stale = await reg.start_upload(REPO)
        fresh = await reg.start_upload(REPO)
        stale_id = stale.rstrip("/").rsplit("/", 1)[-1]
        with reg.services.db.write() as conn:
            conn.execute(update(uploads).where(uploads.c.id == stale_id).values(updated_at=utcnow() - timedelta(hours=2)))
            # Make the schedule due, as the clock would: one tick enqueues one job, and a worker runs it.
            conn.execute(update(schedules).where(schedules.c.name == job_kinds.HOUSEKEEPING)
                         .values(next_run_at=utcnow() - timedelta(seconds=1)))
        assert reg.upload_rows() == 2
        assert len(reg.services.scheduler.tick()) == 1
        assert reg.services.scheduler.tick() == []  # not due again until the next interval
        assert reg.services.worker.run_pending() == 1
        job = reg.services.jobs.list(kind=job_kinds.HOUSEKEEPING).items[0]
        assert job["state"] == "succeeded"
        assert job["result"]["uploads_purged"] == 1
        assert reg.upload_rows() == 1
        assert (await reg.client.get(stale)).status_code == 404
        assert (await reg.client.get(fresh)).status_code == 204


async def test_clean_shutdown_flushes_buffered_pull_times(registry_factory):
    async with registry_factory(pull_flush_seconds=3600) as reg:  # no periodic flush during the test
        digest, _ = await reg.push_image(REPO, "v1")
        r = await reg.client.get(f"/v2/{REPO}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert reg.services.pulls.pending == 1
        assert reg.scalar("SELECT count(*) FROM manifests WHERE last_pulled_at IS NOT NULL") == 0
    async with registry_factory() as reg:
        assert reg.sql("SELECT digest FROM manifests WHERE last_pulled_at IS NOT NULL") == [(digest,)]
        [(data,)] = reg.sql("SELECT data FROM events WHERE type = 'artifact.pulled'")
        assert json.loads(data)["last_pulled_at"].endswith("Z")  # RFC 3339 with Z, as occurred_at
