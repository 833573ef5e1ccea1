"""A project's supply-chain policy: scan on push (off by default), the pull gates, the CVE allowlist and trusted keys.

The policy is read on every gated manifest GET, so `policy_for` answers from a short in-process
cache; every write here bumps `generation`, which also clears the pull gate's verdict cache on
this node (other nodes see the change within `security_cache_seconds`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, select

from dockyard.domain.events import record
from dockyard.errors import InvalidRequest, NotFound
from dockyard.metadata import generations
from dockyard.metadata.db import Database, aware, upsert, utcnow
from dockyard.metadata.lookups import require_project_id
from dockyard.metadata.models import cve_allowlist, project_security, scanners
from dockyard.policy.security_policy import (
    BUILTIN_SCANNER,
    MAX_WAIT_SECONDS,
    MISSING,
    UNSCANNED_POLICIES,
    SecurityPolicy,
    require_unscanned_choice,
    validate_threshold,
)

_POLICY_SQL = (
    "SELECT p.id, s.project_id, s.auto_scan, sc.name, s.block_severity, s.unscanned, s.unscanned_wait_seconds,"
    " s.require_signature, s.promotion_max_severity, s.promotion_require_signature"
    " FROM projects p LEFT JOIN project_security s ON s.project_id = p.id"
    " LEFT JOIN scanners sc ON sc.id = s.scanner_id WHERE p.name = ?"
)

@dataclass(frozen=True)
class AllowlistEntry:
    vulnerability: str
    expires_at: datetime | None
    reason: str | None
    created_at: datetime
    created_by: str | None

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


class SecuritySettings:
    def __init__(self, db: Database, *, cache_seconds: float = 2.0, auto_scan_default: bool = False, clock=time.monotonic):
        self.db = db
        self.auto_scan_default = auto_scan_default  # for projects that never set a policy
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.generation = 0  # bumped by every write on this node
        self._cache: dict[str, tuple[float, int, object]] = {}
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Forget this node's cached policies and verdicts (signing.trusted_keys calls it after a key change)."""
        self._changed()

    def remember(self, key: str, load):
        """`load()`, cached like the policy and dropped on every change (for signing.trusted_keys)."""
        return self._cached(key, load)

    def _changed(self) -> None:
        with self._lock:
            self.generation += 1
            self._cache.clear()

    def _peek(self, key: str):
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self.clock() and hit[1] == self.generation:
            return hit[2]
        return MISSING

    def _cached(self, key: str, load):
        value = self._peek(key)
        if value is not MISSING:
            return value
        now = self.clock()
        generation = self.generation
        value = load()
        self._cache[key] = (now + self.cache_seconds, generation, value)
        return value

    # -- policy -------------------------------------------------------------------------------

    def cached_policy(self, project: str):
        """The policy if this node holds a fresh copy, else MISSING (then call policy_for off the loop)."""
        return self._peek("policy:" + project)

    def policy_for(self, project: str) -> SecurityPolicy | None:
        """The project's policy (defaults when never set); None if the project does not exist."""
        return self._cached("policy:" + project, lambda: self._load_policy(project))

    def _load_policy(self, project: str) -> SecurityPolicy | None:
        """One raw read: this runs on the pull path whenever the cached policy has expired."""
        row = self.db.fetchone(_POLICY_SQL, (project,))
        if row is None:
            return None
        project_id, has_policy, auto_scan, scanner, block, unscanned, wait, require_sig, promo_sev, promo_sig = row
        if not has_policy:
            return SecurityPolicy(project_id, project, auto_scan=self.auto_scan_default)
        return SecurityPolicy(
            project_id,
            project,
            auto_scan=bool(auto_scan),
            scanner=scanner or BUILTIN_SCANNER,
            block_severity=block,
            unscanned=unscanned,
            unscanned_wait_seconds=int(wait),
            require_signature=bool(require_sig),
            promotion_max_severity=promo_sev,
            promotion_require_signature=bool(promo_sig),
        )

    def _policy(self, conn: Connection, project_id: int, project: str) -> SecurityPolicy:
        row = conn.execute(
            select(project_security, scanners.c.name.label("scanner_name"))
            .select_from(project_security.outerjoin(scanners, scanners.c.id == project_security.c.scanner_id))
            .where(project_security.c.project_id == project_id)
        ).first()
        if row is None:
            return SecurityPolicy(project_id, project, auto_scan=self.auto_scan_default)
        return SecurityPolicy(
            project_id,
            project,
            auto_scan=row.auto_scan,
            scanner=row.scanner_name or BUILTIN_SCANNER,
            block_severity=row.block_severity,
            unscanned=row.unscanned,
            unscanned_wait_seconds=row.unscanned_wait_seconds,
            require_signature=row.require_signature,
            promotion_max_severity=row.promotion_max_severity,
            promotion_require_signature=row.promotion_require_signature,
        )

    def get(self, project: str) -> SecurityPolicy:
        with self.db.read() as conn:
            return self._policy(conn, require_project_id(conn, project), project)

    def update(self, project: str, changes: dict) -> SecurityPolicy:
        """Apply a partial update; unknown keys are the caller's bug, bad values are INVALID_REQUEST."""
        with self.db.write() as conn:
            project_id = require_project_id(conn, project)
            current = self._policy(conn, project_id, project)
            values = dict(changes)
            if "block_severity" in values:
                values["block_severity"] = validate_threshold(values["block_severity"], "block_severity")
            if "promotion_max_severity" in values:
                values["promotion_max_severity"] = validate_threshold(values["promotion_max_severity"], "promotion_max_severity")
            if "unscanned" in values and values["unscanned"] not in UNSCANNED_POLICIES:
                raise InvalidRequest(
                    f"unscanned must be one of {', '.join(UNSCANNED_POLICIES)}", detail={"unscanned": values["unscanned"]}
                )
            require_unscanned_choice(current, values)
            wait = values.get("unscanned_wait_seconds", current.unscanned_wait_seconds)
            if not isinstance(wait, int) or not 0 <= wait <= MAX_WAIT_SECONDS:
                raise InvalidRequest(f"unscanned_wait_seconds must be between 0 and {MAX_WAIT_SECONDS}")
            scanner_id = None
            if "scanner" in values:
                name = values.pop("scanner") or BUILTIN_SCANNER
                if name != BUILTIN_SCANNER:
                    scanner_id = conn.execute(select(scanners.c.id).where(scanners.c.name == name)).scalar()
                    if scanner_id is None:
                        raise NotFound(f"scanner {name} is not registered", detail={"scanner": name[:100]})
                values["scanner"] = name
            policy = replace(current, **values)
            if policy.unscanned == "wait" and policy.unscanned_wait_seconds == 0:
                raise InvalidRequest("unscanned=wait needs unscanned_wait_seconds > 0")
            if "scanner" not in values and current.scanner != BUILTIN_SCANNER:
                scanner_id = conn.execute(select(scanners.c.id).where(scanners.c.name == current.scanner)).scalar()
            row = {
                "auto_scan": policy.auto_scan,
                "scanner_id": scanner_id,
                "block_severity": policy.block_severity,
                "unscanned": policy.unscanned,
                "unscanned_wait_seconds": policy.unscanned_wait_seconds,
                "require_signature": policy.require_signature,
                "promotion_max_severity": policy.promotion_max_severity,
                "promotion_require_signature": policy.promotion_require_signature,
                "updated_at": utcnow(),
            }
            upsert(conn, project_security, {"project_id": project_id, **row}, ["project_id"], row)
            record(conn, "policy.changed", project=project,
                   data={"kind": "security", "change": "updated", "fields": sorted(changes)})
            generations.bump(conn, project)
        self._changed()
        return policy

    # -- CVE allowlist ----------------------------------------------------------------------------

    def allowlist(self, project: str) -> list[AllowlistEntry]:
        with self.db.read() as conn:
            project_id = require_project_id(conn, project)
            rows = conn.execute(
                select(cve_allowlist).where(cve_allowlist.c.project_id == project_id).order_by(cve_allowlist.c.vulnerability)
            ).all()
        return [
            AllowlistEntry(r.vulnerability, aware(r.expires_at), r.reason, aware(r.created_at), r.created_by) for r in rows
        ]

    def active_allowlist(self, project: str) -> frozenset[str]:
        """Allowlisted ids not yet expired (expired entries are ignored, never silently honoured)."""
        def load():
            now = utcnow()
            return frozenset(e.vulnerability.upper() for e in self.allowlist(project) if e.active(now))

        return self._cached("allow:" + project, load)

    def allow(self, project: str, vulnerability: str, *, expires_at: datetime | None, reason: str | None, by: str | None) -> AllowlistEntry:
        vulnerability = vulnerability.strip()
        if not vulnerability or len(vulnerability) > 255 or any(c.isspace() for c in vulnerability):
            raise InvalidRequest("vulnerability must be an advisory id such as CVE-2024-1234", detail={"vulnerability": vulnerability[:100]})
        now = utcnow()
        if expires_at is not None:  # stored in UTC: SQLite keeps no offset
            expires_at = aware(expires_at).astimezone(UTC)
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("expires_at is in the past", detail={"expires_at": expires_at.isoformat()})
        values = {"expires_at": expires_at, "reason": reason, "created_at": now, "created_by": by}
        with self.db.write() as conn:
            project_id = require_project_id(conn, project)
            upsert(conn, cve_allowlist, {"project_id": project_id, "vulnerability": vulnerability, **values},
                   ["project_id", "vulnerability"], values)
            record(conn, "policy.changed", project=project,
                   data={"kind": "security", "change": "allowlist_added", "vulnerability": vulnerability})
        self._changed()
        return AllowlistEntry(vulnerability, expires_at, reason, now, by)

    def disallow(self, project: str, vulnerability: str) -> None:
        with self.db.write() as conn:
            project_id = require_project_id(conn, project)
            gone = conn.execute(
                delete(cve_allowlist).where(cve_allowlist.c.project_id == project_id, cve_allowlist.c.vulnerability == vulnerability)
            ).rowcount
            if gone:
                record(conn, "policy.changed", project=project,
                       data={"kind": "security", "change": "allowlist_removed", "vulnerability": vulnerability})
        if not gone:
            raise NotFound(f"{vulnerability} is not on the allowlist of project {project}", detail={"vulnerability": vulnerability[:100]})
        self._changed()
