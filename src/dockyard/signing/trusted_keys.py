"""A project's trusted public keys (cosign.pub PEMs): the keys its signature gates accept.

Stored per project in `trusted_keys`; every change bumps the project's security generation in the
same transaction (metadata/generations.py) and clears this node's security caches, so cached
signature verdicts and pull-gate verdicts never outlive the key set they were made with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from dockyard.domain.events import record
from dockyard.domain.security_settings import SecuritySettings
from dockyard.errors import Conflict, InvalidRequest, NotFound
from dockyard.metadata import generations
from dockyard.metadata.db import aware, insert_ignore, utcnow
from dockyard.metadata.lookups import require_project_id
from dockyard.metadata.models import trusted_keys
from dockyard.signing.cosign_keys import KeyFileError, PublicKey, fingerprint, load_public_key


@dataclass(frozen=True)
class TrustedKey:
    id: int
    name: str
    fingerprint: str
    public_key: str
    created_at: datetime
    created_by: str | None


class TrustedKeys:
    def __init__(self, security: SecuritySettings):
        self.security = security
        self.db = security.db

    def trusted_keys(self, project: str) -> list[TrustedKey]:
        with self.db.read() as conn:
            project_id = require_project_id(conn, project)
            rows = conn.execute(select(trusted_keys).where(trusted_keys.c.project_id == project_id).order_by(trusted_keys.c.name)).all()
        return [TrustedKey(r.id, r.name, r.fingerprint, r.public_key, aware(r.created_at), r.created_by) for r in rows]

    def public_keys(self, project: str) -> tuple[PublicKey, ...]:
        """Parsed keys, cached: verification runs on the pull path."""
        return self.security.remember("keys:" + project, lambda: tuple(load_public_key(k.public_key.encode()) for k in self.trusted_keys(project)))

    def trust(self, project: str, name: str, public_key_pem: str, *, by: str | None) -> TrustedKey:
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidRequest("a trusted key needs a name of 1 to 100 characters")
        try:
            key = load_public_key(public_key_pem.encode())
        except (KeyFileError, ValueError) as exc:
            raise InvalidRequest(f"not a PEM public key (as cosign.pub): {exc}") from exc
        now = utcnow()
        row = {"name": name, "public_key": public_key_pem.strip() + "\n", "fingerprint": fingerprint(key), "created_at": now, "created_by": by}
        with self.db.write() as conn:
            project_id = require_project_id(conn, project)
            if not insert_ignore(conn, trusted_keys, {"project_id": project_id, **row}, ["project_id", "name"]):
                raise Conflict(f"project {project} already has a trusted key named {name}", detail={"name": name})
            key_id = conn.execute(
                select(trusted_keys.c.id).where(trusted_keys.c.project_id == project_id, trusted_keys.c.name == name)
            ).scalar_one()
            record(conn, "policy.changed", project=project,
                   data={"kind": "security", "change": "key_trusted", "name": name, "fingerprint": row["fingerprint"]})
            generations.bump(conn, project)
        self.security.invalidate()
        return TrustedKey(key_id, name, row["fingerprint"], row["public_key"], now, by)

    def untrust(self, project: str, name: str) -> None:
        with self.db.write() as conn:
            project_id = require_project_id(conn, project)
            gone = conn.execute(delete(trusted_keys).where(trusted_keys.c.project_id == project_id, trusted_keys.c.name == name)).rowcount
            if gone:
                record(conn, "policy.changed", project=project,
                       data={"kind": "security", "change": "key_untrusted", "name": name})
            generations.bump(conn, project)
        if not gone:
            raise NotFound(f"project {project} has no trusted key named {name}", detail={"name": name[:100]})
        self.security.invalidate()
