"""`dockyard` command line. Every command is documented in docs/cli.md (checked by tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.markup import escape

from dockyard import __version__
from dockyard.safe_text import one_line, safe_console
from dockyard.settings import CONFIG_ENV, Settings, load_settings, settings_to_env

app = typer.Typer(
    help="Dockyard: a self-hosted private OCI registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a crash must not print passwords or hostile text from locals
)
admin = typer.Typer(
    help="Administration: `migrate` and `purge-uploads` work directly on the data directory; "
    "the other groups are clients of a running registry's /api/v1.",
    no_args_is_help=True,
)
app.add_typer(admin, name="admin")
console = safe_console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Settings file (TOML).", envvar=CONFIG_ENV)]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Data directory (database + blobs).")]
DbOpt = Annotated[Optional[str], typer.Option("--database-url", help="sqlite:///… or postgresql://…")]


def _settings_error(exc: ValueError) -> str:
    """One line per problem, naming the setting, without pydantic's boilerplate (error counts, doc links)."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        lines.append(f"{field}: {message}" if field and not message.startswith(field) else message)
    return "\n".join(lines)


def _settings(config: Path | None, **overrides) -> Settings:
    try:
        settings = load_settings(config, **overrides)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        console.print(f"[red]invalid settings:[/red] {escape(_settings_error(exc))}")
        raise typer.Exit(2) from exc
    from dockyard.storage.permissions import restrict_umask

    restrict_umask()  # local commands write into the data directory: owner-only files
    # Workers and later commands must agree on paths whatever their working directory.
    return settings.model_copy(update={"data_dir": settings.data_dir.resolve()})


def _ensure_port_free(host: str, port: int) -> None:
    """The server binds with SO_REUSEPORT (for its workers), which would let a second registry
    silently share a port with a running one; bind once without it to refuse that."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR tolerates TIME_WAIT leftovers of a previous run, but not a live listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            console.print(f"[red]cannot listen on {host}:{port}: {exc.strerror}[/red]")
            raise typer.Exit(2) from exc


def _add_remote_groups() -> None:
    from dockyard.cli.audit import audit
    from dockyard.cli.remote import GROUPS

    for name, group in {**GROUPS, "audit": audit}.items():
        admin.add_typer(group, name=name)
    from dockyard.cli.promote import promote

    app.command("promote")(promote)


_add_remote_groups()

from dockyard.cli.policy import policy as _policy  # noqa: E402  (`dockyard policy retention …`)

app.add_typer(_policy, name="policy")


def _add_job_commands() -> None:
    import dockyard.cli as helpers
    from dockyard.cli.jobs import register

    register(app, admin, helpers)


_add_job_commands()


def _add_key_commands() -> None:
    import dockyard.cli as helpers
    from dockyard.cli.token_keys import register

    register(admin, helpers)  # admin keys list|rotate|revoke, admin rotate-kek


_add_key_commands()


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address.")] = None,
    port: Annotated[Optional[int], typer.Option(help="TCP port.")] = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    storage_driver: Annotated[Optional[str], typer.Option(help="filesystem or memory.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes.")] = None,
    server: Annotated[Optional[str], typer.Option(help="granian (default) or uvicorn.")] = None,
) -> None:
    """Run the registry HTTP server."""
    settings = _settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        storage_driver=storage_driver,
        workers=workers,
        server=server,
    )
    from dockyard.metadata.db import Database

    from dockyard.storage.permissions import secure_settings_paths

    secure_settings_paths(settings)
    from dockyard.auth.bootstrap import bootstrap
    from dockyard.auth.token_keys import open_keystore
    from dockyard.auth.secret_box import KeyEncryptionError

    _ensure_port_free(settings.host, settings.port)
    db = Database(settings.resolved_database_url)
    db.migrate()  # once here, so workers never race on it
    try:
        bootstrap(db, open_keystore(db, settings), settings.admin_password, settings.data_dir)
    except KeyEncryptionError as exc:
        console.print(f"[red]cannot open the token-signing keys: {exc}[/red]")
        raise typer.Exit(2) from exc
    db.dispose()
    if settings.storage_driver == "memory" and settings.workers > 1:
        if workers is not None:
            console.print("[red]the memory storage driver cannot be shared by several workers[/red]")
            raise typer.Exit(2)
        settings = settings.model_copy(update={"workers": 1})
    os.environ.update(settings_to_env(settings))
    os.environ["DOCKYARD_AUTO_MIGRATE"] = "false"
    from dockyard.runtime import limit_malloc_arenas

    limit_malloc_arenas(settings.malloc_arena_max)  # this process and the workers it starts
    console.print(
        f"Dockyard {__version__} serving on http://{settings.host}:{settings.port} "
        f"(data: {settings.data_dir}, database: {'sqlite' if settings.is_sqlite else 'postgresql'}, "
        f"storage: {settings.storage_driver}, server: {settings.server} x{settings.workers})",
        soft_wrap=True,  # one line in logs, whatever the width
    )
    if settings.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            "dockyard.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="warning",
        )
        return
    from granian.constants import Interfaces
    from granian.server import Server

    Server(
        "dockyard.app:app_from_env",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        factory=True,
        log_access=settings.log_level == "debug",
    ).serve()


@admin.command("migrate")
def migrate(config: ConfigOpt = None, data_dir: DataDirOpt = None, database_url: DbOpt = None) -> None:
    """Apply database migrations."""
    from dockyard.metadata.db import Database

    from dockyard.storage.permissions import secure_settings_paths

    settings = _settings(config, data_dir=data_dir, database_url=database_url)
    secure_settings_paths(settings)
    Database(settings.resolved_database_url).migrate()
    console.print("database is at the latest schema")


@admin.command("bootstrap")
def bootstrap_offline(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    admin_password_stdin: Annotated[
        bool, typer.Option("--admin-password-stdin", help="Set (or reset) the `admin` password from stdin.")
    ] = False,
    project: Annotated[Optional[list[str]], typer.Option("--project", help="Create this private project (repeatable).")] = None,
    public_project: Annotated[
        Optional[list[str]], typer.Option("--public-project", help="Create this public project (repeatable).")
    ] = None,
) -> None:
    """Offline set-up straight against the data directory: migrate, admin password, projects."""
    from dockyard.auth.bootstrap import ADMIN_USERNAME, bootstrap
    from dockyard.auth.token_keys import open_keystore
    from dockyard.domain.projects import ProjectService
    from dockyard.domain.users import UserService
    from dockyard.errors import DockyardError
    from dockyard.metadata.db import Database

    from dockyard.storage.permissions import secure_settings_paths

    settings = _settings(config, data_dir=data_dir, database_url=database_url)
    secure_settings_paths(settings)
    db = Database(settings.resolved_database_url)
    db.migrate()
    password = sys.stdin.readline().rstrip("\n") if admin_password_stdin else settings.admin_password
    bootstrap(db, open_keystore(db, settings), password, settings.data_dir)
    try:
        if admin_password_stdin:
            UserService(db).change_password(ADMIN_USERNAME, password)
            console.print("admin password set")
        projects = ProjectService(db)
        for name, public in [(n, False) for n in project or []] + [(n, True) for n in public_project or []]:
            projects.create(name, public=public)
            console.print(f"created {'public' if public else 'private'} project {name}")
    except DockyardError as exc:
        console.print(f"[red]{exc.code}: {exc.message}[/red]")
        raise typer.Exit(1) from exc
    finally:
        db.dispose()


@admin.command("purge-uploads")
def purge_uploads(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    older_than: Annotated[Optional[int], typer.Option(help="Seconds idle; default upload_max_age_seconds.")] = None,
) -> None:
    """Delete uploads that have been idle too long, with their partial data."""
    from dockyard.app import build_services

    settings = _settings(config, data_dir=data_dir, database_url=database_url)
    services = build_services(settings)
    purged = services.uploads.purge_stale(older_than if older_than is not None else settings.upload_max_age_seconds)
    console.print(f"purged {purged} stale upload(s)")


@app.command()
def login(
    server: Annotated[str, typer.Argument(help="Registry host[:port] or URL.")],
    username: Annotated[Optional[str], typer.Option("--username", "-u", help="User or robot name.")] = None,
    password: Annotated[Optional[str], typer.Option("--password", "-p", help="Password (prefer --password-stdin).")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    plain_http: Annotated[Optional[bool], typer.Option("--plain-http/--https", help="Default: plain HTTP for loopback only.")] = None,
) -> None:
    """Verify credentials and store them in docker's config.json, as `docker login` does."""
    from dockyard.client.credentials import CredentialError, CredentialStore, base_url, verify_login, write_docker_auth

    username = username or typer.prompt("Username")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif password is None:
        password = typer.prompt("Password", hide_input=True)
    url = base_url(server, plain_http)
    try:
        verify_login(url, username, password)
    except (CredentialError, httpx.HTTPError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    path = write_docker_auth(server, username, password)
    CredentialStore().put(server, username, password)
    console.print(f"Login Succeeded (credentials saved in {path})")


@app.command("get-login-password")
def get_login_password(
    registry: Annotated[str, typer.Option("--registry", "-r", help="Registry host[:port] or URL.", envvar="DOCKYARD_URL")] = "127.0.0.1:5000",
    username: Annotated[Optional[str], typer.Option("--username", "-u", envvar="DOCKYARD_USERNAME")] = None,
    password: Annotated[Optional[str], typer.Option("--password", envvar="DOCKYARD_PASSWORD")] = None,
    plain_http: Annotated[Optional[bool], typer.Option("--plain-http/--https")] = None,
) -> None:
    """Print a short-lived password for `docker login --password-stdin` (like `aws ecr get-login-password`)."""
    from dockyard.client.credentials import CredentialError, base_url, fetch_login_password, saved_credentials

    saved = False
    if username is None or password is None:
        stored = saved_credentials(registry)
        if stored is None:
            console.print(f"[red]no credentials for {registry}: run `dockyard login {registry}` or set DOCKYARD_USERNAME/DOCKYARD_PASSWORD[/red]")
            raise typer.Exit(1)
        if password is None and username is not None and username != stored.username:
            # Never send one account's saved secret under another account's name.
            console.print(f"[red]no password for {username}: the credentials saved for {registry} are {stored.username}'s; "
                          f"give --password or DOCKYARD_PASSWORD, or `dockyard login {registry} -u {username}`[/red]")
            raise typer.Exit(1)
        saved = password is None
        username, password = username or stored.username, password or stored.secret
    try:
        typer.echo(one_line(fetch_login_password(base_url(registry, plain_http), username, password)))
    except (CredentialError, httpx.HTTPError) as exc:
        hint = (f" (used the credentials saved for {registry} as {username}; if the password changed, "
                f"run `dockyard login {registry} -u {username}` again)") if saved and isinstance(exc, CredentialError) else ""
        console.print(f"[red]{exc}{hint}[/red]")
        raise typer.Exit(1) from exc


@app.command()
def version() -> None:
    """Print the Dockyard version."""
    typer.echo(__version__)


def _add_signing_commands() -> None:
    from dockyard.cli.signing import register

    register(app)  # generate-key-pair, sign, verify


_add_signing_commands()


def _add_vulndb_commands() -> None:
    import dockyard.cli as helpers
    from dockyard.cli.vulndb import register

    register(app, helpers)  # vulndb update, vulndb status


_add_vulndb_commands()


def _add_security_commands() -> None:
    from dockyard.cli.security import register

    register(app)  # security show|set|allow|disallow|allowlist|trust-key|untrust-key|keys, scan


_add_security_commands()


def _add_events_commands() -> None:
    from dockyard.cli.events import events

    app.add_typer(events, name="events")  # events tail [--follow]


_add_events_commands()


def main() -> None:
    app()
