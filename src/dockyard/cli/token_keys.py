"""Token signing keys: `dockyard admin keys list|rotate|revoke` (remote, through /api/v1/system/keys)
and `dockyard admin rotate-kek` (offline: re-encrypts the keys in the database under a new KEK)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dockyard.cli.options import ConfigOpt, DataDirOpt, DbOpt, JsonOpt, YesOpt, console, existing_database, load_settings
from dockyard.cli.remote import confirm, out, remote, remote_group, seg, show

KEY_COLUMNS = ["kid", "status", "verifies_until", "revoked_at", "algorithm", "created_at", "retired_at"]

keys = remote_group("keys", "Token signing keys on a running registry (administrators; via /api/v1/system/keys).")


@keys.command("list")
def keys_list(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """List signing keys and their status (never private keys)."""
    show(ctx, remote(ctx).call("GET", "/system/keys").json(), KEY_COLUMNS, json_output, whole=2)


@keys.command("rotate")
def keys_rotate(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Create a new active key; the old one verifies until the tokens it signed have expired."""
    show(ctx, remote(ctx).call("POST", "/system/keys/rotate").json(), ["kid"], json_output)


@keys.command("revoke")
def keys_revoke(ctx: typer.Context, kid: str, yes: YesOpt = False, json_output: JsonOpt = False) -> None:
    """Revoke a key at once: every token and login password it signed stops working (`--` before a kid starting with -)."""
    confirm(f"revoke signing key {kid} (tokens it signed stop working)", yes)
    show(ctx, remote(ctx).call("POST", f"/system/keys/{seg(kid)}/revoke").json(), KEY_COLUMNS, json_output,
         whole=2)


def rotate_kek(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    new_secret_key_file: Annotated[
        Optional[Path], typer.Option("--new-secret-key-file", help="File holding the new KEK (32+ bytes).")
    ] = None,
    new_secret_key_stdin: Annotated[bool, typer.Option("--new-secret-key-stdin", help="Read the new KEK from stdin.")] = False,
) -> None:
    """Re-encrypt the token-signing keys under a new key-encryption key (offline; stop the servers first).

    With the default file KEK, the new KEK is written next to the old one as `<file>.new` first;
    after the database commit it replaces the old file. A crash in between leaves both files, and
    start-up (and a second run) open keys sealed under either. With `secret_key` set, the new secret
    must be given and the setting changed on every node afterwards."""
    from dockyard.auth.token_keys import open_keystore
    from dockyard.auth.secret_box import (
        PENDING_SUFFIX, Kek, KeyEncryptionError, KeyRing, generate_secret, read_secret_file, write_secret_file,
    )
    from dockyard.metadata.db import Database
    from dockyard.storage.permissions import secure_settings_paths

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    existing_database(settings)
    secure_settings_paths(settings)
    if new_secret_key_file and new_secret_key_stdin:
        console.print("[red]give --new-secret-key-file or --new-secret-key-stdin, not both[/red]")
        raise typer.Exit(2)
    kek_file = settings.resolved_secret_key_file
    pending = kek_file.with_name(kek_file.name + PENDING_SUFFIX)
    try:
        if new_secret_key_stdin:
            new_secret = sys.stdin.readline().strip().encode()
        elif new_secret_key_file:
            new_secret = read_secret_file(new_secret_key_file)
        elif settings.secret_key is not None:
            console.print("[red]secret_key is set: give the new one with --new-secret-key-file or --new-secret-key-stdin[/red]")
            raise typer.Exit(2)
        elif pending.exists():
            new_secret = read_secret_file(pending)  # finish the rotation a crash interrupted
        else:
            new_secret = generate_secret()
        new_ring = KeyRing(Kek.from_secret(new_secret), source="the new key-encryption key")
        db = Database(settings.resolved_database_url)
        try:
            db.migrate()
            store = open_keystore(db, settings, create_kek=settings.secret_key is None)
            if settings.secret_key is None:
                write_secret_file(pending, new_secret, replace=True)
            old_ring = store.ring
            count = store.reencrypt(new_ring)
            from dockyard.webhooks.service import reseal_secrets

            hooks = reseal_secrets(db, old_ring, new_ring)  # a crash before this: the rerun opens both
            from dockyard.domain.acme_store import reseal as reseal_acme

            acme_keys = reseal_acme(db, old_ring, new_ring)
        finally:
            db.dispose()
        if settings.secret_key is None:
            os.replace(pending, kek_file)
            console.print(f"re-encrypted {count} signing key(s), {hooks} webhook secret(s) and {acme_keys} ACME key(s); "
                          f"the new key-encryption key is in {kek_file}")
            console.print("copy it to every other node that shares this database, and to your backups")
        else:
            console.print(f"re-encrypted {count} signing key(s), {hooks} webhook secret(s) and {acme_keys} ACME key(s) "
                          f"under key-encryption key {new_ring.primary.id}")
            console.print("now set secret_key to the new value on every node and restart them")
    except KeyEncryptionError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    out.print(new_ring.primary.id)


def register(app: typer.Typer, admin: typer.Typer) -> None:
    admin.add_typer(keys, name="keys")
    admin.command("rotate-kek")(rotate_kek)
