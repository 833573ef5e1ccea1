"""`dockyard jobs list|show|logs`: the background jobs of a running registry (GC, retention, scans, …) through
/api/v1/system/jobs (administrators).

Jobs keep no log stream: what a job records is its state and timestamps, its attempts, its `progress` (while it
runs), its `result` and its `error`. `jobs logs` prints exactly that, as lines, and `--follow` polls until the job
ends (the exit status then says whether it succeeded).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer
from rich.markup import escape

from dockyard.cli.options import JsonOpt, PageOpt, PageSizeOpt
from dockyard.cli.remote import fail, out, remote, remote_group, show
from dockyard.safe_text import one_line

JOB_COLUMNS = ["id", "kind", "state", "attempts", "created_at", "started_at", "finished_at", "error"]
ACTIVE = ("queued", "running", "waiting")
POLL_SECONDS = 0.5

jobs = remote_group("jobs", "Background jobs: GC, retention, scans, … (administrators; via /api/v1/system/jobs).")


@jobs.command("list")
def jobs_list(
    ctx: typer.Context,
    kind: Annotated[Optional[str], typer.Option("--kind", help="Only jobs of this kind (gc, retention, scan, …).")] = None,
    page: PageOpt = None,
    page_size: PageSizeOpt = 50,
    json_output: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    params = {"kind": kind} if kind else {}
    show(ctx, remote(ctx).listing("/system/jobs", page, page_size, params), JOB_COLUMNS, json_output)


@jobs.command("show")
def jobs_show(ctx: typer.Context, job_id: int, json_output: JsonOpt = False) -> None:
    """Show one job, with its payload, progress and result."""
    data = remote(ctx).call("GET", f"/system/jobs/{job_id}").json()
    show(ctx, data, JOB_COLUMNS + ["payload", "progress", "result", "parent_id"], json_output)


def log_lines(job: dict) -> list[str]:
    """What a job recorded, as log lines: its timeline, then its progress, result and error."""
    lines = [f"{job['created_at']} created {job['kind']} job {job['id']} {json.dumps(job.get('payload') or {}, sort_keys=True)}"]
    if job.get("started_at"):
        lines.append(f"{job['started_at']} started (attempt {job['attempts']} of {job['max_attempts']})")
    for name in ("progress", "result"):
        if job.get(name):
            lines.append(f"{name}: " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(job[name].items())))
    if job.get("error"):
        lines.append(f"error: {job['error']}")
    ended = job.get("finished_at")
    lines.append(f"{ended} {job['state']}" if ended else f"state: {job['state']}")
    return [one_line(line) for line in lines]


@jobs.command("logs")
def jobs_logs(
    ctx: typer.Context,
    job_id: int,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Poll until the job ends; exit 1 if it failed.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="With --follow: give up after this many seconds.")] = 3600,
    json_output: JsonOpt = False,
) -> None:
    """Print what a job recorded: timeline, progress, result and error (jobs keep no other log)."""
    r = remote(ctx)
    job = r.call("GET", f"/system/jobs/{job_id}").json()
    deadline = time.monotonic() + timeout
    printed: list[str] = []
    while True:
        if not (json_output or r.json):
            lines = log_lines(job)
            # Lines already printed stay; a running job's progress line is printed again when it changes.
            for line in lines:
                if line not in printed:
                    out.print(escape(line), highlight=False)
                    printed.append(line)
        if not follow or job["state"] not in ACTIVE:
            break
        if time.monotonic() > deadline:
            fail(f"gave up waiting for job {job_id} (still {job['state']})")
        time.sleep(POLL_SECONDS)
        job = r.call("GET", f"/system/jobs/{job_id}").json()
    if json_output or r.json:
        out.print_json(json.dumps({"id": job["id"], "state": job["state"], "lines": log_lines(job), "progress": job.get("progress"),
                                   "result": job.get("result"), "error": job.get("error")}, default=str))
    if follow and job["state"] == "failed":
        raise typer.Exit(1)


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.add_typer(jobs, name="jobs")
