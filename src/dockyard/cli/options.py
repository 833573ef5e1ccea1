"""The options every `dockyard` command shares, and the conventions a new command follows.

Conventions (docs/cli.md lists every command; tests/unit/test_docs.py checks it):

- **Registration.** A command module defines its commands at module level: plain functions for
  top-level commands, or a sub-app made with `group()` (remote: `remote.remote_group()`) whose
  commands use its decorator. It exposes `register(app, admin)`, which adds them to the root app
  or to `dockyard admin`; `dockyard/cli/__init__.py` calls every module's `register`. No closures,
  no passing helpers around.
- **Remote commands** (clients of a running registry) take `UrlOpt` (`--url`, alias `--registry`
  and `-r`; host[:port] or URL; `DOCKYARD_URL`), `UserOpt`, `PassOpt`, `PassStdinOpt`,
  `PlainHttpOpt` and `JsonOpt`, and get their client from `remote.connect()`, the one place that
  resolves the URL and the credentials: flags, then environment, then what `dockyard login` saved (its
  last registry is the default URL, `remote.resolve_server()`); tests/unit/test_cli_connect.py walks
  every remote command to check it.
  A group takes them before its subcommand (`remote_group()` does that); a single command
  (`dockyard gc`, `promote`, `scan`) takes them itself. Commands that print data also take `JsonOpt`.
  Errors go through `remote.fail()`: one line on stderr, exit 1 (2 for bad options).
- **Offline commands** (straight on the data directory) take `ConfigOpt`, `DataDirOpt`, `DbOpt`
  and load settings with `load_settings()`. Those that work on an existing registry then call
  `existing_database(settings)`: it prints the database they use (stderr) and refuses, exit 1, when
  there is none, so that a command run from the wrong directory never creates an empty
  `./dockyard-data`. Those that open the blob store (`admin gc`, `admin purge-uploads`, `worker`) also
  call `existing_blob_store(settings)`, so a `--database-url` with a wrong `--data-dir` is refused too. Only `serve`, `admin migrate` and `admin bootstrap` create one (they call
  `announce_database()` to say which).
- Deleting asks for confirmation unless `YesOpt` (`--yes`, `-y`); see `remote.confirm()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from dockyard.safe_text import safe_console
from dockyard.settings import CONFIG_ENV, Settings

DEFAULT_URL = "http://127.0.0.1:5000"

# -- remote commands ------------------------------------------------------------------------------

UrlOpt = Annotated[
    Optional[str],
    typer.Option("--url", "--registry", "-r", envvar="DOCKYARD_URL", show_default=False,
                 help="Registry host[:port] or base URL [default: the registry of the last `dockyard login`, "
                      "else http://127.0.0.1:5000]."),
]
UserOpt = Annotated[
    Optional[str],
    typer.Option("--username", "-u", envvar="DOCKYARD_USERNAME",
                 help="User or robot to act as (default: the credentials `dockyard login` saved for the registry)."),
]
PassOpt = Annotated[
    Optional[str],
    typer.Option("--password", "-p", envvar="DOCKYARD_PASSWORD", help="Its password or robot secret (prefer --password-stdin)."),
]
PassStdinOpt = Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")]
PlainHttpOpt = Annotated[
    Optional[bool], typer.Option("--plain-http/--https", help="For a host without a scheme; default: plain HTTP for loopback only.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables and text.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
PageOpt = Annotated[Optional[int], typer.Option("--page", help="Fetch only this page (default: all pages).")]
PageSizeOpt = Annotated[int, typer.Option("--page-size", help="Items per page (max 100).")]

# -- offline commands -----------------------------------------------------------------------------

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Settings file (TOML).", envvar=CONFIG_ENV)]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Data directory (database + blobs).")]
DbOpt = Annotated[Optional[str], typer.Option("--database-url", help="sqlite:///… or postgresql://…")]

console = safe_console(stderr=True)


def group(name: str, help_text: str) -> typer.Typer:
    """A sub-app (`dockyard <name> …`) with the settings every group shares."""
    return typer.Typer(name=name, help=help_text, no_args_is_help=True, add_completion=False)


def _settings_error(exc: ValueError) -> str:
    """One line per problem, naming the setting, without pydantic's boilerplate (error counts, doc links)."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":  # a typo in the settings file: name the likely setting
            from dockyard.cli.check_config import suggestion

            message = f"unknown setting{suggestion(field)}"
        lines.append(f"{field}: {message}" if field and not message.startswith(field) else message)
    return "\n".join(lines)


def load_settings(config: Path | None, **overrides) -> Settings:
    """Settings for an offline command (file < env < flags); exits 2 with one line per bad setting."""
    from dockyard.settings import load_settings as load

    try:
        settings = load(config, **overrides)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        console.print(f"[red]invalid settings:[/red] {escape(_settings_error(exc))}")
        raise typer.Exit(2) from exc
    from dockyard.storage.permissions import restrict_umask

    restrict_umask()  # local commands write into the data directory: owner-only files
    # Workers and later commands must agree on paths whatever their working directory.
    return settings.model_copy(update={"data_dir": settings.data_dir.resolve()})


def sqlite_file(settings: Settings) -> Path | None:
    """The SQLite file the database URL names: DATA_DIR/dockyard.db unless --database-url names
    another (None for an in-memory database or PostgreSQL)."""
    if not settings.is_sqlite:
        return None
    if not settings.database_url:
        return settings.data_dir / "dockyard.db"
    from sqlalchemy.engine import make_url

    name = make_url(settings.resolved_database_url).database
    return Path(name) if name and name != ":memory:" and not name.startswith("file:") else None


def database_label(settings: Settings) -> str:
    """The database a command uses, for humans: the SQLite file, or the PostgreSQL URL without its password."""
    path = sqlite_file(settings)
    if path is not None:
        return str(path)
    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url)
    # libpq also reads `password` (and `sslpassword`) from the query string: mask those too.
    query = {k: ("***" if "password" in k.lower() else v) for k, v in url.query.items()}
    return url.set(query=query).render_as_string(hide_password=True)


def announce_database(settings: Settings) -> None:
    """One stderr line naming the database, so a command run from the wrong directory is noticed."""
    console.print(f"database: {escape(database_label(settings))}", soft_wrap=True, highlight=False)


def _has_schema(url: str) -> bool:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return inspect(conn).has_table("alembic_version")
    finally:
        engine.dispose()


def existing_blob_store(settings: Settings) -> None:
    """Exit 1 unless the data directory, and a filesystem blob store, already exist.

    For offline commands that open the blob store (`admin gc`, `admin purge-uploads`, `worker`): with
    `--database-url` naming an existing database, a mistyped or missing `--data-dir` used to be created
    empty, and the command then ran against a blob store that holds nothing of the registry's (and a
    new key-encryption key). GC decides from the database, never from missing files, but a worker
    writing into a fresh directory is never what was meant."""
    missing = [("data directory", settings.data_dir)]
    if settings.storage_driver == "filesystem":
        missing.append(("blob store", settings.resolved_storage_root))
    for what, path in missing:
        if not Path(path).is_dir():
            console.print(f"[red]error:[/red] no {what} at {escape(str(path))}; give --data-dir (or storage_root) for the "
                          "registry's data: this command does not create one, as it would start from an empty blob store",
                          soft_wrap=True, highlight=False)
            raise typer.Exit(1)


def existing_database(settings: Settings) -> None:
    """Announce the database and exit 1 unless it exists (with a Dockyard schema for PostgreSQL).

    Offline commands must never create a data directory implicitly: `dockyard vulndb status` run from
    another directory used to make a new, empty `./dockyard-data` and report it as the registry's."""
    announce_database(settings)
    hint = ("give --data-dir or --database-url (or --config / DOCKYARD_CONFIG) for the registry's data, "
            "or create one with `dockyard admin migrate` or `dockyard serve`")
    if settings.is_sqlite:
        path = sqlite_file(settings)
        if path is None:
            return
        if not path.is_file():
            where = "no data directory" if not settings.database_url and not path.parent.exists() else "no database"
            console.print(f"[red]error:[/red] {where} at {escape(str(path.parent))} (looked for {escape(str(path))}); "
                          f"{escape(hint)}", soft_wrap=True, highlight=False)
            raise typer.Exit(1)
        return
    try:
        ok = _has_schema(settings.resolved_database_url)
    except Exception as exc:  # noqa: BLE001 - any driver error: one line, not a traceback
        console.print(f"[red]error:[/red] cannot connect to {escape(database_label(settings))}: "
                      f"{escape(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from exc
    if not ok:
        console.print(f"[red]error:[/red] {escape(database_label(settings))} holds no Dockyard schema; {escape(hint)}",
                      soft_wrap=True, highlight=False)
        raise typer.Exit(1)
