"""User accounts: creation, listing, profile changes, passwords. No HTTP here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, select, update

from dockyard.auth.passwords import hash_secret, verify_secret
from dockyard.auth.principals import ROBOT_PREFIX, Principal
from dockyard.errors import Conflict, InvalidRequest
from dockyard.paging import Page, page_bounds
from dockyard.errors import NameInvalid, NotFound
from dockyard.metadata.db import Database, aware, insert_ignore, utcnow
from dockyard.metadata.models import new_epoch, users

USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
MIN_PASSWORD_LENGTH = 8
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, line separators
MAX_PASSWORD_LENGTH = 1024  # argon2 copes, but nobody needs more and it bounds hashing work
_UNSET = object()


@dataclass(frozen=True)
class User:
    id: int
    username: str
    email: str | None
    is_admin: bool
    disabled: bool
    created_at: datetime
    password_changed_at: datetime

    def principal(self) -> Principal:
        return Principal("user", self.username, self.id, self.is_admin)


def validate_username(username: str) -> str:
    if username.startswith(ROBOT_PREFIX) or not USERNAME_RE.fullmatch(username):
        raise NameInvalid(
            "username must match [a-z0-9][a-z0-9._-]{1,63} and must not start with robot$",
            detail={"username": username[:100]},
        )
    return username


def validate_password(password: str) -> str:
    if _CONTROL_RE.search(password):
        # A pasted "secret\n" would otherwise become a password nobody can type.
        raise InvalidRequest("password must not contain control characters (newline, carriage return, NUL, ...)")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequest(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


def _user(row) -> User:
    return User(
        id=row.id,
        username=row.username,
        email=row.email,
        is_admin=bool(row.is_admin),
        disabled=bool(row.disabled),
        created_at=aware(row.created_at),
        password_changed_at=aware(row.password_changed_at),
    )


_COLUMNS = [c for c in users.c if c.name != "password_hash"]


class UserService:
    def __init__(self, db: Database):
        self.db = db

    # -- reads ------------------------------------------------------------------------------

    def get(self, username: str) -> User:
        with self.db.read() as conn:
            return self._require(conn, username)

    def list(self, page: int = 1, page_size: int = 50) -> Page[User]:
        limit, offset = page_bounds(page, page_size)
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(users)).scalar_one()
            rows = conn.execute(select(*_COLUMNS).order_by(users.c.username).limit(limit).offset(offset)).all()
        return Page([_user(r) for r in rows], total, page, page_size)

    def verify_password(self, username: str, password: str) -> bool:
        """True if `password` is the password of enabled user `username` (hashing runs either way)."""
        with self.db.read() as conn:
            row = conn.execute(
                select(users.c.password_hash, users.c.disabled).where(users.c.username == username)
            ).first()
        if row is None:
            hash_secret(password)  # same cost as a real check: no timing oracle for existing names
            return False
        return verify_secret(row.password_hash, password) and not row.disabled

    # -- writes -----------------------------------------------------------------------------

    def create(self, username: str, password: str, *, email: str | None = None, is_admin: bool = False) -> User:
        validate_username(username)
        validate_password(password)
        password_hash = hash_secret(password)  # outside the write transaction: it takes ~20 ms
        now = utcnow()
        with self.db.write() as conn:
            inserted = insert_ignore(
                conn,
                users,
                {
                    "username": username,
                    "password_hash": password_hash,
                    "email": email,
                    "is_admin": is_admin,
                    "disabled": False,
                    "created_at": now,
                    "password_changed_at": now,
                },
                ["username"],
            )
            if not inserted:
                raise Conflict(f"user {username} already exists", detail={"username": username})
            return self._require(conn, username)

    def update(self, username: str, *, email=_UNSET, is_admin: bool | None = None, disabled: bool | None = None) -> User:
        values: dict = {}
        if email is not _UNSET:
            values["email"] = email
        if is_admin is not None:
            values["is_admin"] = is_admin
        if disabled is not None:
            values["disabled"] = disabled
        with self.db.write() as conn:
            user = self._require(conn, username)
            if disabled is not None and disabled != user.disabled:
                values["credential_epoch"] = new_epoch()  # login passwords and tokens issued before end
            if values:
                removes_admin = user.is_admin and not user.disabled and (is_admin is False or disabled is True)
                if removes_admin:
                    self._keep_an_admin(conn, user)
                conn.execute(update(users).where(users.c.id == user.id).values(**values))
            return self._require(conn, username)

    def change_password(self, username: str, new_password: str) -> None:
        validate_password(new_password)
        password_hash = hash_secret(new_password)
        with self.db.write() as conn:
            user = self._require(conn, username)
            conn.execute(
                update(users)
                .where(users.c.id == user.id)
                .values(password_hash=password_hash, password_changed_at=utcnow(), credential_epoch=new_epoch())
            )

    def delete(self, username: str) -> None:
        with self.db.write() as conn:
            user = self._require(conn, username)
            if user.is_admin and not user.disabled:
                self._keep_an_admin(conn, user)
            conn.execute(delete(users).where(users.c.id == user.id))

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _require(conn: Connection, username: str) -> User:
        row = conn.execute(select(*_COLUMNS).where(users.c.username == username)).first()
        if row is None:
            raise NotFound(f"user {username} does not exist", detail={"username": username[:100]})
        return _user(row)

    @staticmethod
    def _keep_an_admin(conn: Connection, user: User) -> None:
        """Refuse a change that would leave the registry without an enabled administrator."""
        others = conn.execute(
            select(func.count())
            .select_from(users)
            .where(users.c.is_admin.is_(True), users.c.disabled.is_(False), users.c.id != user.id)
        ).scalar_one()
        if others == 0:
            raise Conflict(
                f"{user.username} is the last enabled administrator", detail={"username": user.username}
            )
