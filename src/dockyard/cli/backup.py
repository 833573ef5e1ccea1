"""`dockyard admin backup`, `admin restore` and `admin verify`: offline commands on the data directory
(backup and verify are safe while a server runs). The procedures, and PostgreSQL's, are in
docs/operations.md; the logic is in domain/backup.py and domain/scrub.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from dockyard.cli.options import (
    ConfigOpt, DataDirOpt, DbOpt, JsonOpt, console, existing_blob_store, existing_database, load_settings, sqlite_file,
)
from dockyard.safe_text import safe_console

out = safe_console(soft_wrap=True)


def _open(settings):
    from dockyard.metadata.db import Database
    from dockyard.storage import open_driver

    return Database(settings.resolved_database_url), open_driver(settings)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(1)


def backup(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) directory for the backup.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    lease_seconds: Annotated[int, typer.Option(min=60, max=86400, help="GC holds off this long without a renewal (60 to 86400).")] = 600,
    json_output: JsonOpt = False,
) -> None:
    """Back up a running SQLite registry: database snapshot, then every blob it references (PostgreSQL: see docs/operations.md)."""
    from dockyard.domain.backup import BackupError
    from dockyard.domain.backup import backup as run_backup

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    existing_database(settings)
    existing_blob_store(settings)
    path = sqlite_file(settings)
    if path is None:
        _fail("`admin backup` backs up SQLite registries; for PostgreSQL use pg_dump and bucket versioning (docs/operations.md)")
    db, storage = _open(settings)
    try:
        result = run_backup(db, storage, path, dest.resolve(), kek_file=settings.resolved_secret_key_file,
                            lease_seconds=lease_seconds)
    except BackupError as exc:
        _fail(str(exc))
    finally:
        db.dispose()
    if json_output:
        out.print_json(json.dumps(result.__dict__))
        return
    out.print(f"backup written to {escape(result.path)}: {result.blobs} blobs ({result.bytes} bytes), "
              f"{result.counts['manifests']} manifests, {result.counts['tags']} tags in {result.seconds}s")
    if result.dropped:
        out.print(f"{len(result.dropped)} unreferenced blobs were collected during the copy and left out")


def restore(
    src: Annotated[Path, typer.Argument(help="A backup directory written by `dockyard admin backup`.")],
    data_dir: Annotated[Path, typer.Argument(help="A new (or empty) data directory to restore into.")],
    json_output: JsonOpt = False,
) -> None:
    """Restore a backup into a fresh data directory, checking every blob's digest as it copies."""
    from dockyard.domain.backup import BackupError
    from dockyard.domain.backup import restore as run_restore
    from dockyard.storage.permissions import restrict_umask

    restrict_umask()  # the restored database and key hold every secret: owner-only, like a server's data dir
    try:
        result = run_restore(src.resolve(), data_dir.resolve())
    except BackupError as exc:
        _fail(str(exc))
    if json_output:
        out.print_json(json.dumps(result))
        return
    out.print(f"restored {result['blobs']} blobs ({result['bytes']} bytes) into {escape(result['data_dir'])}; "
              f"start it with `dockyard serve --data-dir {escape(result['data_dir'])}`")


def verify(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    read_blobs: Annotated[bool, typer.Option("--read-blobs", help="Hash every blob against its digest (slow; see --rate).")] = False,
    rate: Annotated[Optional[float], typer.Option("--rate", min=0.1, help="With --read-blobs: read at most this many MB/s.")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Copy bad blobs back from --from, else quarantine damaged ones.")] = False,
    source: Annotated[Optional[Path], typer.Option("--from", help="With --repair: a backup directory to copy good blobs from.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Check that every referenced blob is stored (and, with --read-blobs, intact); exit 1 on any problem."""
    from dockyard.domain.scrub import verify as run_verify

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    existing_database(settings)
    existing_blob_store(settings)
    db, storage = _open(settings)
    try:
        result = run_verify(db, storage, read_blobs=read_blobs, rate_mb=rate, repair=repair,
                            source=source.resolve() if source else None)
    finally:
        db.dispose()
    if json_output:
        out.print_json(json.dumps(result))
    else:
        for p in result["problems"]:
            repaired = escape(f" [{p['repaired']}]") if p["repaired"] else ""  # unescaped, Rich took it for markup
            out.print(f"{escape(p['digest'])}: {p['problem']}{repaired} ({escape(p['detail'])}); used by: "
                      f"{escape(', '.join(p['images']) or 'no image')}")
        checked, found = result["checked"], len(result["problems"])
        out.print(f"{checked} blob{'' if checked == 1 else 's'} checked, {found} problem{'' if found == 1 else 's'}")
    if result["problems"]:
        raise typer.Exit(1)


def register(app: typer.Typer, admin: typer.Typer) -> None:
    admin.command("backup")(backup)
    admin.command("restore")(restore)
    admin.command("verify")(verify)
