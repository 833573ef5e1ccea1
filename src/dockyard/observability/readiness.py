"""Readiness: may this process take traffic? The database answers, its schema is at the code's
migration head, and the blob store answers. Each check is one cheap call (never a listing: start-up
and health checks never scan storage), run off the event loop with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from importlib import resources

from alembic.script import ScriptDirectory
from alembic.config import Config
from sqlalchemy import text

from dockyard.metadata.db import Database
from dockyard.storage import StorageDriver

log = logging.getLogger("dockyard.health")

PROBE_KEY = "health/ready"  # outside blobs/ and uploads/: never mistaken for content or an orphan


def migration_heads() -> set[str]:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("dockyard.metadata") / "migrations"))
    return set(ScriptDirectory.from_config(cfg).get_heads())


@dataclass
class Readiness:
    db: Database
    storage: StorageDriver
    timeout_seconds: float = 3.0

    def __post_init__(self) -> None:
        self.heads = migration_heads()  # read once: the code does not change while it runs
        self._running: asyncio.Future | None = None

    def check_database(self) -> str | None:
        with self.db.engine.connect() as conn:
            versions = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
        if versions != self.heads:
            return f"migrations not current: database at {sorted(versions)}, code at {sorted(self.heads)}"
        return None

    def check_storage(self) -> str | None:
        if self.storage.stat(PROBE_KEY) is None:
            self.storage.put(PROBE_KEY, b"ok\n")  # first check on a new store; a stat from then on
            if self.storage.stat(PROBE_KEY) is None:
                return "the probe object written to storage cannot be read back"
        return None

    async def _run(self, check) -> str | None:
        try:
            return await asyncio.wait_for(asyncio.to_thread(check), self.timeout_seconds)
        except TimeoutError:
            return f"no answer within {self.timeout_seconds:g} s"
        except Exception as exc:  # noqa: BLE001 - the failure is the answer
            # The probe is unauthenticated: it names the failure, the log has the detail.
            log.warning("readiness check %s failed: %s", check.__name__, exc)
            return f"failed ({type(exc).__name__})"

    async def check(self) -> dict[str, str]:
        """{check: "ok" | why it failed} for database and storage. Probes that arrive while a check runs
        share its answer (single flight): /readyz is unauthenticated, and a flood of probes must not queue
        a check each on the small default thread pool, where the load balancer's probe would time out."""
        if self._running is None:
            self._running = asyncio.ensure_future(self._check())
            self._running.add_done_callback(self._finished)
        return dict(await asyncio.shield(self._running))

    def _finished(self, future: asyncio.Future) -> None:
        if self._running is future:
            self._running = None

    async def _check(self) -> dict[str, str]:
        database, storage = await asyncio.gather(self._run(self.check_database), self._run(self.check_storage))
        return {"database": database or "ok", "storage": storage or "ok"}
