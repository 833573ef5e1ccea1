"""First start: an `admin` user and a token signing key, each created exactly once."""

from __future__ import annotations

import sys

from sqlalchemy import func, select

from dockyard.auth.keys import KeyStore
from dockyard.auth.passwords import generate_secret, hash_secret
from dockyard.metadata.db import Database, insert_ignore, utcnow
from dockyard.metadata.models import users

ADMIN_USERNAME = "admin"


def bootstrap(db: Database, keys: KeyStore, admin_password: str | None) -> None:
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
        # Printed once, straight to the terminal; deliberately not through logging.
        print(f"Dockyard: created user 'admin' with password: {password}", file=sys.stderr, flush=True)
        print("Dockyard: this password is shown only once; change it with `dockyard admin users set-password`.", file=sys.stderr, flush=True)
