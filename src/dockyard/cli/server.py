"""The local commands: `dockyard serve`, `dockyard version`, and `dockyard admin migrate|bootstrap|purge-uploads`,
which work straight on the data directory (no running server needed). `serve`, `migrate` and `bootstrap` create
the database when there is none; `purge-uploads` refuses to (cli/options.py `existing_database`)."""

from __future__ import annotations

import json

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from dockyard import __version__
from dockyard.cli.options import (
    ConfigOpt,
    DataDirOpt,
    DbOpt,
    JsonOpt,
    announce_database,
    console,
    database_label,
    existing_blob_store,
    existing_database,
    load_settings,
)
from dockyard.settings import settings_to_env


class _Say:
    """`serve`'s own lines: on the console as text, or through logging (JSON lines) with log_format=json."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.log = logging.getLogger("dockyard.serve")

    def info(self, message: str) -> None:
        if self.as_json:
            self.log.info(message)
        else:
            console.print(message, soft_wrap=True, markup=False, highlight=False)  # one line, whatever the width

    def error(self, message: str) -> None:
        if self.as_json:
            self.log.error(message)
        else:
            console.print(f"[red]{escape(message)}[/red]", soft_wrap=True)


def _ensure_port_free(host: str, port: int, say: _Say | None = None) -> None:
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
            (say or _Say(False)).error(f"cannot listen on {host}:{port}: {exc.strerror}")
            raise typer.Exit(2) from exc


def next_steps(settings) -> list[str]:
    """What a new operator does next, printed by `serve` under its first line: the login command and the
    URLs that exist (the API docs; there is no web UI yet, so none is printed)."""
    from urllib.parse import urlsplit

    if settings.public_url:
        base = settings.public_url.rstrip("/")
    else:
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(settings.host, settings.host)
        scheme = "https" if settings.tls_enabled else "http"
        base = f"{scheme}://{'[' + host + ']' if ':' in host and not host.startswith('[') else host}:{settings.port}"
    from dockyard.client.credentials import is_loopback

    parts = urlsplit(base)
    registry = parts.netloc
    # `dockyard login HOST` means HTTPS off loopback and drops any path: give it the URL itself then.
    # Loopback without a scheme means plain HTTP to it: give the https:// URL when serving HTTPS.
    if parts.path.rstrip("/") or (parts.scheme == "http") != is_loopback(parts.netloc):
        registry = base
    password_file = settings.data_dir / "initial-admin-password"
    where = (f"in {password_file}" if password_file.exists()
             else "printed above on first start, or DOCKYARD_ADMIN_PASSWORD")
    return [
        "Next steps:",
        f"  log in:   dockyard login {registry} -u admin   (the admin password: {where})",
        f"  API docs: {base}/api/v1/docs   (OpenAPI: {base}/api/v1/openapi.json)",
        "  commands: dockyard --help",
    ]


def serve(
    config: ConfigOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address.")] = None,
    port: Annotated[Optional[int], typer.Option(help="TCP port.")] = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    storage_driver: Annotated[Optional[str], typer.Option(help="filesystem or memory.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes.")] = None,
    server: Annotated[Optional[str], typer.Option(help="granian (default) or uvicorn.")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", help="PEM certificate chain: serve HTTPS (with --tls-key).")] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
) -> None:
    """Run the registry HTTP server."""
    settings = load_settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        storage_driver=storage_driver,
        workers=workers,
        server=server,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
    )
    from dockyard.metadata.db import Database
    from dockyard.safe_text import configure_logging

    from dockyard.storage.permissions import secure_settings_paths

    # Before anything logs (bootstrap's "created user 'admin'"): with log_format=json every line is JSON.
    configure_logging(settings.log_level, settings.log_format)
    say = _Say(settings.log_format == "json")
    secure_settings_paths(settings)
    from dockyard.auth.bootstrap import bootstrap
    from dockyard.auth.token_keys import open_keystore
    from dockyard.auth.secret_box import KeyEncryptionError

    _ensure_port_free(settings.host, settings.port, say)
    if settings.acme_domain:
        _ensure_port_free(settings.host, settings.tls_redirect_http_port, say)
    elif settings.tls_enabled:
        from dockyard.cli.tls_serve import key_file_warning, tls_files_problem

        if problem := tls_files_problem(settings):
            say.error(problem)
            raise typer.Exit(2)
        if warning := key_file_warning(settings.tls_key_file):
            say.error(f"warning: {warning}")
        if settings.tls_redirect_http_port:
            _ensure_port_free(settings.host, settings.tls_redirect_http_port, say)
    db = Database(settings.resolved_database_url)
    db.migrate()  # once here, so workers never race on it
    try:
        bootstrap(db, open_keystore(db, settings), settings.admin_password, settings.data_dir)
    except KeyEncryptionError as exc:
        say.error(f"cannot open the token-signing keys: {exc}")
        raise typer.Exit(2) from exc
    db.dispose()
    if settings.acme_domain:  # the certificate files exist only after this (docs/tls.md)
        from dockyard.cli.acme_serve import start_acme

        try:
            settings = start_acme(settings)
        except KeyEncryptionError as exc:  # ACME keys sealed under another node's KEK
            say.error(f"cannot open the ACME keys: {exc}")
            raise typer.Exit(2) from exc
        say.info(f"certificate for {settings.acme_domain} by ACME from {settings.acme_directory_url}; "
                 f"plain HTTP on port {settings.tls_redirect_http_port} answers its challenges and redirects to HTTPS")
    if settings.storage_driver == "memory" and settings.workers > 1:
        if workers is not None:
            say.error("the memory storage driver cannot be shared by several workers")
            raise typer.Exit(2)
        settings = settings.model_copy(update={"workers": 1})
    os.environ.update(settings_to_env(settings))
    os.environ["DOCKYARD_AUTO_MIGRATE"] = "false"
    from dockyard.observability.multiproc import prepare_multiproc_dir

    prepare_multiproc_dir(settings.data_dir)  # metrics summed over the workers (docs/metrics.md)
    from dockyard.runtime import limit_malloc_arenas

    limit_malloc_arenas(settings.malloc_arena_max)  # this process and the workers it starts
    scheme = "https" if settings.tls_enabled else "http"
    say.info(
        f"Dockyard {__version__} serving on {scheme}://{settings.host}:{settings.port} "
        f"(data: {settings.data_dir}, database: {database_label(settings)}, "
        f"storage: {settings.storage_driver}, server: {settings.server} x{settings.workers})"
    )
    for line in next_steps(settings):
        say.info(line)
    if settings.tls_redirect_http_port and not settings.acme_domain:
        from dockyard.cli.tls_serve import start_redirect_listener

        start_redirect_listener(settings.host, settings.tls_redirect_http_port, settings.port, settings.public_url)
        say.info(f"plain HTTP on port {settings.tls_redirect_http_port} redirects to HTTPS")
    if settings.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            "dockyard.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="warning",
            **({"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file),
                "ssl_ca_certs": str(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
                "ssl_cert_reqs": 2 if settings.tls_client_ca_file else 0} if settings.tls_enabled else {}),
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        )
        return
    from granian.constants import Interfaces

    from dockyard.cli.tls_serve import granian_server
    from dockyard.safe_text import JSON_LOG_DICTCONFIG

    granian_server(
        settings,
        target="dockyard.app:app_from_env",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        factory=True,
        log_access=settings.log_level == "debug",
        log_dictconfig=JSON_LOG_DICTCONFIG if settings.log_format == "json" else None,
        # SIGTERM: stop accepting, let in-flight requests finish, kill workers still busy after this.
        workers_kill_timeout=settings.shutdown_timeout_seconds,
    ).serve()


def migrate(config: ConfigOpt = None, data_dir: DataDirOpt = None, database_url: DbOpt = None) -> None:
    """Apply database migrations."""
    from dockyard.metadata.db import Database

    from dockyard.storage.permissions import secure_settings_paths

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    announce_database(settings)  # migrate creates the database when there is none: its job
    secure_settings_paths(settings)
    Database(settings.resolved_database_url).migrate()
    console.print("database is at the latest schema")


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

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    announce_database(settings)  # bootstrap creates the database when there is none: its job
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


def purge_uploads(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    older_than: Annotated[Optional[int], typer.Option(help="Seconds idle; default upload_max_age_seconds.")] = None,
) -> None:
    """Delete uploads that have been idle too long, with their partial data."""
    from dockyard.app import build_services

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    existing_database(settings)
    existing_blob_store(settings)
    services = build_services(settings)
    purged = services.uploads.purge_stale(older_than if older_than is not None else settings.upload_max_age_seconds)
    console.print(f"purged {purged} stale upload(s)")


def version(json_output: JsonOpt = False) -> None:
    """Print the Dockyard version."""
    typer.echo(json.dumps({"version": __version__}) if json_output else __version__)


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("version")(version)
    admin.command("migrate")(migrate)
    admin.command("bootstrap")(bootstrap_offline)
    admin.command("purge-uploads")(purge_uploads)
