"""`dockyard vulndb update` and `dockyard vulndb status`: the vulnerability database, offline.

Both work straight on the configured metadata database (safe while a server runs; it must exist:
they never create one, and say which they use); `dockyard vulndb import FILE…` uploads exports to a
running registry instead, for hosts that cannot reach its database; `update` downloads OSV exports or, with `--from PATH`, imports
local ones on hosts without network. See docs/scanning.md.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from dockyard.safe_text import safe_console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

import httpx

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
    existing_database,
    group,
    load_settings,
)

out = safe_console(soft_wrap=True)
err = safe_console(stderr=True, soft_wrap=True, highlight=False)

vulndb = group("vulndb", "The vulnerability database (OSV advisories): update, status, and import to a running registry.")


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _open_database(config, data_dir, database_url):
    from dockyard.metadata.db import Database

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    existing_database(settings)  # never a new empty ./dockyard-data
    db = Database(settings.resolved_database_url)
    db.migrate()
    return settings, db


def _report_table(reports) -> Table:
    table = Table(title="vulnerability database update")
    table.add_column("source")
    for name in ("records", "written", "unchanged", "withdrawn", "invalid"):
        table.add_column(name, justify="right")
    table.add_column("note")
    for r in reports:
        if r.skipped:
            table.add_row(r.source, "", "", "", "", "", "skipped: export unchanged since the last import")
        else:
            table.add_row(r.source, str(r.records), str(r.written), str(r.unchanged), str(r.withdrawn), str(r.invalid), "")
    return table


@vulndb.command("update")
def update(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    from_path: Annotated[
        Optional[Path],
        typer.Option("--from", help="Import local OSV exports instead of downloading: a directory in the bucket "
                     "layout (<dir>/<ECOSYSTEM>/all.zip), one export zip, or a directory of .json records."),
    ] = None,
    ecosystem: Annotated[
        Optional[list[str]], typer.Option("--ecosystem", help="Download this OSV ecosystem (repeatable; default: vulndb_ecosystems).")
    ] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="Base URL of the exports (default: vulndb_url).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Download (or, with --from, import) OSV advisories; queue one rescan when anything changed."""
    from dockyard.jobs.queue import JobQueue
    from dockyard.scanning.updates import UpdateError, planned_sources, run_update
    from dockyard.scanning.vulndb import VulnDBError

    if from_path is not None and (ecosystem or base_url):
        _fail("--from imports local files; --ecosystem and --base-url apply to downloads only", 2)
    settings, db = _open_database(config, data_dir, database_url)
    ecosystems = list(ecosystem or settings.vulndb_ecosystems)
    try:
        try:
            sources = planned_sources(from_path, ecosystems)
        except VulnDBError as exc:
            _fail(str(exc))
        verb = "importing" if from_path is not None else "downloading"
        progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err, transient=False)
        with progress:
            task = progress.add_task(verb, total=len(sources))

            def on_source(source: str, report) -> None:
                if report is None:
                    progress.update(task, description=f"{verb} {escape(source)}")
                else:
                    progress.advance(task)

            try:
                result = run_update(db, JobQueue(db), from_path=from_path, ecosystems=ecosystems,
                                    base_url=base_url or settings.vulndb_url, on_source=on_source)
            except UpdateError as exc:
                failed = exc
                result = exc.result
            except (VulnDBError, OSError, zipfile.BadZipFile) as exc:  # unreadable files, a corrupt zip member
                failed, result = exc, None
            else:
                failed = None
                progress.update(task, description="done")
        if result is not None and result.reports:
            if json_output:  # also after a failure: what was imported before it
                typer.echo(json.dumps(result.as_dict(), indent=2))
            else:
                out.print(_report_table(result.reports))
            for report in result.reports:
                for problem in report.errors[:3]:
                    err.print(f"[yellow]{escape(report.source)}: skipped invalid record {escape(problem)}[/yellow]")
            if result.rescan_job is not None:
                how = "already queued" if result.rescan_joined else "queued"
                err.print(f"{result.written} advisories written; rescan job {result.rescan_job} {how}")
            elif failed is None:
                err.print("nothing changed; no rescan needed")
        if failed is not None:
            _fail(str(failed))
    finally:
        db.dispose()


@vulndb.command("status")
def status(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show the vulnerability database's sources, advisory counts and last update."""
    from dockyard.scanning.vulndb import VulnDB

    _, db = _open_database(config, data_dir, database_url)
    try:
        current = VulnDB(db).status()
    finally:
        db.dispose()
    if json_output:
        typer.echo(json.dumps(current.as_dict(), indent=2))
        return
    if not current.sources:
        out.print("the vulnerability database is empty: run `dockyard vulndb update` (or `--from PATH`)")
        return
    table = Table(title="vulnerability database sources")
    table.add_column("source")
    table.add_column("imported at (UTC)")
    for name in ("advisories", "withdrawn", "invalid"):
        table.add_column(name, justify="right")
    table.add_column("origin", overflow="fold")
    for s in current.sources:
        table.add_row(s.source, s.imported_at.strftime("%Y-%m-%d %H:%M:%S"), str(s.advisories), str(s.withdrawn),
                      str(s.invalid), s.origin)
    out.print(table)
    updated = current.updated_at.strftime("%Y-%m-%d %H:%M:%S UTC") if current.updated_at else "never"
    out.print(f"total: {current.advisories} advisories ({current.withdrawn} withdrawn); last update: {updated}")


def _upload_chunks(path: Path, size: int = 1024 * 1024):
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


@vulndb.command("import")
def import_exports(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="OSV export zips, e.g. PyPI/all.zip.")],
    source: Annotated[
        Optional[str], typer.Option("--source", help="The source (OSV ecosystem) a single FILE replaces; default: "
                                    "the zip's folder for <ECOSYSTEM>/all.zip, else its name without .zip.")
    ] = None,
    url: UrlOpt = None,
    username: UserOpt = None,
    password: PassOpt = None,
    password_stdin: PassStdinOpt = False,
    plain_http: PlainHttpOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Upload OSV export zips to a running registry (admin): air-gapped imports that reach the server's database."""
    from dockyard.cli.remote import connect, fail
    from dockyard.scanning.updates import UpdateResult
    from dockyard.scanning.vulndb import ImportReport

    if source is not None and len(files) != 1:
        fail("--source names the source of one FILE; give one file, or name each zip <ECOSYSTEM>/all.zip", 2)
    for file in files:
        if not file.is_file() or file.suffix != ".zip":
            fail(f"{file}: expected an OSV export .zip (for a directory of .json records, use "
                 "`dockyard vulndb update --from PATH` on the registry host)", 2)
    remote = connect(url, username, password, password_stdin, plain_http, json_output)
    combined = UpdateResult()
    for file in files:
        name = source or (file.parent.name if file.stem == "all" and file.parent.name else file.stem)
        err.print(f"uploading {escape(str(file))} as source {escape(name)} to {escape(remote.url)}")
        body = remote.call("POST", "/system/vulndb/import", params={"source": name}, content=_upload_chunks(file),
                           headers={"Content-Type": "application/zip", "Content-Length": str(file.stat().st_size)},
                           timeout=httpx.Timeout(3600.0, connect=15.0)).json()
        combined.reports += [ImportReport(**report) for report in body["sources"]]
        if body["rescan_job"] is not None:
            combined.rescan_job, combined.rescan_joined = body["rescan_job"], body["rescan_joined"]
    if json_output:
        typer.echo(json.dumps(combined.as_dict(), indent=2))
    else:
        out.print(_report_table(combined.reports))
    if combined.rescan_job is not None:
        err.print(f"{combined.written} advisories written; rescan job {combined.rescan_job} "
                  f"{'already queued' if combined.rescan_joined else 'queued'}")
    else:
        err.print("nothing changed; no rescan needed")


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.add_typer(vulndb, name="vulndb")
