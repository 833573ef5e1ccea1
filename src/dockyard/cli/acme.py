"""`dockyard admin acme status`: the certificate ACME keeps in the database (offline, on the data directory;
safe while servers run). Getting and renewing it is `serve`'s job (cli/acme_serve.py, docs/tls.md)."""

from __future__ import annotations

import json
from datetime import timedelta

import typer

from dockyard.cli.options import ConfigOpt, DataDirOpt, DbOpt, JsonOpt, existing_database, group, load_settings
from dockyard.safe_text import safe_console

out = safe_console(soft_wrap=True)
acme = group("acme", "Automatic certificates (ACME): what is stored (offline, on the data directory).")


@acme.command("status")
def status(config: ConfigOpt = None, data_dir: DataDirOpt = None, database_url: DbOpt = None,
           json_output: JsonOpt = False) -> None:
    """Each stored certificate: domain, expiry, when it renews, whether a node is ordering now, and whether this
    node's files (data_dir/acme) hold it. Never a private key."""
    from dockyard.domain.acme_store import AcmeStore, fingerprint_of_file
    from dockyard.metadata.db import Database

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    existing_database(settings)
    db = Database(settings.resolved_database_url)
    try:
        rows = AcmeStore(db).status(timedelta(days=settings.acme_renew_before_days))
    finally:
        db.dispose()
    installed = fingerprint_of_file(settings.acme_cert_file)
    for row in rows:
        row["installed_here"] = row["fingerprint"] is not None and row["fingerprint"] == installed
    if json_output:
        out.print_json(json.dumps(rows, default=str))
        return
    if not rows:
        out.print(f"no ACME certificate stored{'' if settings.acme_domain else ' (acme_domain is not set)'}")
    for row in rows:
        if row["fingerprint"] is None:
            out.print(f"{row['domain']}: no certificate stored yet; ordering now: {row['ordering']}")
            continue
        out.print(f"{row['domain']}: valid until {row['not_after']:%Y-%m-%d %H:%M:%S} UTC, renews from "
                  f"{row['renew_at']:%Y-%m-%d %H:%M:%S} UTC, issued {row['issued_at']:%Y-%m-%d %H:%M:%S} UTC; "
                  f"{'ordering now: ' + row['ordering'] if row['ordering'] else 'no order running'}; "
                  f"{'installed' if row['installed_here'] else 'not installed'} in {settings.acme_cert_file}")


def register(app: typer.Typer, admin: typer.Typer) -> None:
    admin.add_typer(acme, name="acme")
