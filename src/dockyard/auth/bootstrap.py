"""First start: an `admin` user and a token signing key, each created exactly once."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from sqlalchemy import func, select

from dockyard.auth.token_keys import KeyStore
from dockyard.auth.passwords import generate_secret, hash_secret
from dockyard.metadata.db import Database, insert_ignore, utcnow
from dockyard.metadata.models import users

ADMIN_USERNAME = "admin"
INITIAL_PASSWORD_FILE = "initial-admin-password"
log = logging.getLogger("dockyard.bootstrap")


def bootstrap(db: Database, keys: KeyStore, admin_password: str | None, data_dir: Path | None = None) -> None:
    keys.ensure_key()
    with db.read() as conn:
        if conn.execute(select(func.count()).select_from(users)).scalar_one():
            return
    generated = admin_password is None
    password = admin_password or generate_secret(18)
    now = utcnow()
    with db.write() as conn:
        created = insert_ignore(
            conn,
            users,
            {
                "username": ADMIN_USERNAME,
                "password_hash": hash_secret(password),
                "is_admin": True,
                "disabled": False,
                "created_at": now,
                "password_changed_at": now,
            },
            ["username"],
        )
    if created and generated:
        reveal_admin_password(password, data_dir)


def reveal_admin_password(password: str, data_dir: Path | None) -> None:
    """Show the generated password to a person, never to a log collector.

    On a terminal it is printed once. Otherwise (a container, a service manager) stderr ends up in
    logs, so it goes to a 0600 file in the data directory and only that file's path is logged."""
    if sys.stderr.isatty() or data_dir is None:
        # Straight to the terminal; deliberately not through logging.
        print(f"Dockyard: created user 'admin' with password: {password}", file=sys.stderr, flush=True)
        print("Dockyard: this password is shown only once; change it with "
              "`dockyard admin users -u admin set-password admin`.", file=sys.stderr, flush=True)
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    path = (data_dir / INITIAL_PASSWORD_FILE).resolve()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file may have had wider permissions
        os.write(fd, f"{password}\n".encode())
    finally:
        os.close(fd)
    log.warning(
        "created user 'admin'; its generated password is in %s (readable by this user only). "
        "Change it with `dockyard admin users -u admin set-password admin`, then delete the file.", path,
    )
