"""`dockyard worker`, `dockyard gc` (remote, through /api/v1) and `dockyard admin gc` (offline).

`dockyard gc` starts a GC job on a running registry and follows its progress by polling the
job; `dockyard admin gc` runs the same collector straight against a data directory (no server
needed, safe while one runs: GC is online by design). Both show a Rich progress bar.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer
from dockyard.safe_text import safe_console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from dockyard.cli.options import (
    ConfigOpt,
    DataDirOpt,
    DbOpt,
    JsonOpt,
    PassOpt,
    PassStdinOpt,
    PlainHttpOpt,
    UrlOpt,
    UserOpt,
    existing_blob_store,
    existing_database,
    load_settings,
)
from dockyard.cli.remote import connect
from dockyard.domain.quotas import human_bytes

out = safe_console(soft_wrap=True)
err = safe_console(stderr=True)
POLL_SECONDS = 0.5


def _progress_bar() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[freed]}"), TimeElapsedColumn(), console=err, transient=False,
    )


def print_gc_result(result: dict, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table(title="garbage collection" + (" (dry run)" if result.get("dry_run") else ""))
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [("unreferenced blobs past grace", result["candidates"]), ("their bytes", human_bytes(result["candidate_bytes"]))]
    if not result.get("dry_run"):
        rows += [("blobs deleted", result["deleted"] + result["resumed"]), ("bytes freed", human_bytes(result["bytes_freed"])),
                 ("kept (referenced meanwhile)", result["skipped"])]
    if "in_grace" in result:
        rows += [("unreferenced, inside the grace period", result["in_grace"]),
                 ("their bytes (kept this run)", human_bytes(result["in_grace_bytes"]))]
        if result.get("next_eligible_at"):
            rows.append(("first of them reclaimable at", result["next_eligible_at"]))
        rows.append(("grace period", f"{result['grace_seconds']} s"))
        if not result.get("dry_run"):
            rows.append(("empty repositories removed", result.get("repositories_removed", 0)))
    rows.append(("seconds", result["seconds"]))
    for name, value in rows:
        table.add_row(name, str(value))
    out.print(table)


def worker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Run the jobs due now, then exit.")] = False,
) -> None:
    """Run a background job worker (GC, retention, …) as its own process; run as many as you like."""
    import asyncio
    import signal

    from dockyard.app import build_services

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    existing_database(settings)
    existing_blob_store(settings)
    from dockyard.safe_text import configure_logging

    configure_logging(settings.log_level, settings.log_format)  # untrusted text in log lines is escaped
    services = build_services(settings)
    try:
        services.feed.start()  # the worker runs the change feed's durable consumers (scan on push, …)
        if once:
            services.feed.drain()
            services.scheduler.tick()
            ran = services.worker.run_pending()
            err.print(f"ran {ran} job(s)")
            return
        err.print(f"worker {services.worker.worker_id} running jobs: {', '.join(sorted(services.worker.handlers))}")

        def stop(signum, frame):  # a running scan releases its job rather than hold the exit
            services.worker.stop()
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        async def run() -> None:
            feed = asyncio.create_task(services.feed.run_forever(durable=True))
            try:
                await services.worker.run_forever()
            finally:
                feed.cancel()

        try:
            asyncio.run(run())
        except KeyboardInterrupt:
            pass
    finally:
        services.feed.stop()
        services.db.dispose()


def gc_remote(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job until it finishes.")] = True,
    timeout: Annotated[float, typer.Option(help="Give up waiting after this many seconds.")] = 3600,
    grace_seconds: Annotated[Optional[int], typer.Option(
        "--grace-seconds", help="This run's grace period instead of the server's gc_grace_seconds (admin; minimum 600).")] = None,
    url: UrlOpt = None,
    username: UserOpt = None,
    password: PassOpt = None,
    password_stdin: PassStdinOpt = False,
    plain_http: PlainHttpOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Run garbage collection on a running registry (admin) and follow its progress."""
    remote = connect(url, username, password, password_stdin, plain_http, json_output)
    body: dict = {"dry_run": dry_run}
    if grace_seconds is not None:
        body["grace_seconds"] = grace_seconds
    job = remote.call("POST", "/system/gc", json=body).json()
    if not wait:
        out.print(job["id"])
        return
    deadline = time.monotonic() + timeout
    with _progress_bar() as bar:
        task = bar.add_task(f"gc job {job['id']}: queued", total=None, freed="")
        while job["state"] in ("queued", "running"):
            if time.monotonic() > deadline:
                err.print(f"[red]gave up waiting for job {job['id']} (still {job['state']})[/red]")
                raise typer.Exit(1)
            time.sleep(POLL_SECONDS)
            job = remote.call("GET", f"/system/jobs/{job['id']}").json()
            progress = job.get("progress") or {}
            if "total" in progress:
                bar.update(task, total=max(progress["total"], 1), completed=progress.get("done", 0),
                           freed=human_bytes(progress.get("bytes_freed", 0)))
            bar.update(task, description=f"gc job {job['id']}: {job['state']}")
        if job["state"] == "succeeded":
            done = job["result"].get("deleted", 0) + job["result"].get("resumed", 0)
            bar.update(task, total=max(done, 1), completed=max(done, 1))
    if job["state"] != "succeeded":
        err.print(f"[red]gc job {job['id']} {escape(str(job['state']))}: {escape(str(job.get('error')))}[/red]")  # server text: never markup
        raise typer.Exit(1)
    print_gc_result(job["result"], json_output)

def gc_offline(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
    grace_seconds: Annotated[Optional[int], typer.Option(min=1, help="Override gc_grace_seconds (at least 1).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Garbage-collect blobs straight against the data directory (safe while a server runs)."""
    from dockyard.app import build_services

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    existing_database(settings)
    existing_blob_store(settings)
    if grace_seconds is not None:
        settings = settings.model_copy(update={"gc_grace_seconds": grace_seconds})
    services = build_services(settings)
    try:
        with _progress_bar() as bar:
            task = bar.add_task("gc", total=None, freed="")

            def progress(data: dict) -> None:
                bar.update(task, total=max(data["total"], 1), completed=data["done"], freed=human_bytes(data["bytes_freed"]))

            result = services.gc.run(dry_run=dry_run, progress=progress)
            bar.update(task, total=1, completed=1)
    finally:
        services.db.dispose()
    print_gc_result(result, json_output)

def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("gc")(gc_remote)
    admin.command("gc")(gc_offline)
