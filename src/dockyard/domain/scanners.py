"""Registered external scanners (Harbor Pluggable Scanner API v1.2 adapters, e.g. Trivy's).

A project picks one by name in its security policy; the built-in scanner needs no registration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, func, select

from dockyard.policy.security_policy import BUILTIN_SCANNER
from dockyard.errors import Conflict, InvalidRequest, NotFound
from dockyard.metadata.db import Database, aware, insert_ignore, utcnow
from dockyard.metadata.models import project_security, scanners

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Scanner:
    id: int
    name: str
    url: str
    authorization: str | None
    created_at: datetime

    def as_dict(self) -> dict:
        """Never includes the credential itself."""
        return {"name": self.name, "url": self.url, "has_authorization": bool(self.authorization), "created_at": self.created_at}


class ScannerRegistry:
    def __init__(self, db: Database):
        self.db = db

    def add(self, name: str, url: str, authorization: str | None = None) -> Scanner:
        self.validate(name, url)
        now = utcnow()
        with self.db.write() as conn:
            row = {"name": name, "url": url.rstrip("/"), "authorization": authorization or None, "created_at": now}
            if not insert_ignore(conn, scanners, row, ["name"]):
                raise Conflict(f"scanner {name} is already registered", detail={"name": name})
            scanner_id = conn.execute(select(scanners.c.id).where(scanners.c.name == name)).scalar_one()
        return Scanner(scanner_id, name, row["url"], row["authorization"], now)

    @staticmethod
    def validate(name: str, url: str) -> None:
        """Refuse a bad name or URL before anything (such as a metadata probe) uses them."""
        if not _NAME.fullmatch(name) or name == BUILTIN_SCANNER:
            raise InvalidRequest(
                f"scanner name must be lower-case letters, digits, '.', '_' or '-' and not {BUILTIN_SCANNER!r}",
                detail={"name": name[:100]},
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidRequest("scanner url must be an http(s) URL of the adapter, e.g. http://trivy-adapter:8080", detail={"url": url[:200]})
        try:
            httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidRequest(f"scanner url is not a valid URL: {exc}", detail={"url": url[:200]}) from exc

    def list(self) -> list[Scanner]:
        with self.db.read() as conn:
            rows = conn.execute(select(scanners).order_by(scanners.c.name)).all()
        return [Scanner(r.id, r.name, r.url, r.authorization, aware(r.created_at)) for r in rows]

    def get(self, name: str) -> Scanner:
        with self.db.read() as conn:
            r = conn.execute(select(scanners).where(scanners.c.name == name)).first()
        if r is None:
            raise NotFound(f"scanner {name} is not registered", detail={"scanner": name[:100]})
        return Scanner(r.id, r.name, r.url, r.authorization, aware(r.created_at))

    def remove(self, name: str) -> None:
        """Refused while a project uses it: silently falling back to another scanner would change verdicts."""
        with self.db.write() as conn:
            scanner_id = conn.execute(select(scanners.c.id).where(scanners.c.name == name)).scalar()
            if scanner_id is None:
                raise NotFound(f"scanner {name} is not registered", detail={"scanner": name[:100]})
            users = conn.execute(
                select(func.count()).select_from(project_security).where(project_security.c.scanner_id == scanner_id)
            ).scalar_one()
            if users:
                raise Conflict(f"scanner {name} is used by {users} project(s); switch them to another scanner first")
            conn.execute(delete(scanners).where(scanners.c.id == scanner_id))
