"""`dockyard` command line. Every command is documented in docs/cli.md (checked by tests).

This module only assembles: each command module adds its commands with `register(app, admin)`.
The shared options, and the conventions a new command follows, are in dockyard.cli.options.
"""

from __future__ import annotations

import typer

from dockyard.cli import admin as admin_groups
from dockyard.cli import (
    acme, audit, background_jobs, backup, check_config, events, jobs, login, policy, promote, quotas, repos, scanners, security, server,
    signing,
    tag_rules, token_keys, vulndb, webhooks,
)

app = typer.Typer(
    help="Dockyard: a self-hosted private OCI registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a crash must not print passwords or hostile text from locals
)
admin = typer.Typer(
    help="Administration: `migrate`, `bootstrap`, `purge-uploads`, `gc`, `rotate-kek`, `backup`, `restore` and `verify` "
    "work directly on the data directory; the other groups are clients of a running registry's /api/v1.",
    no_args_is_help=True,
)
app.add_typer(admin, name="admin")

# In the order `dockyard --help` lists them.
for module in (server, check_config, login, repos, jobs, background_jobs, promote, policy, tag_rules, quotas, webhooks, events, admin_groups,
               audit, token_keys, vulndb, signing, security, scanners, backup, acme):
    module.register(app, admin)


def main() -> None:
    app()
