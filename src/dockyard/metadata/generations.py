"""The per-project security generation: a counter in the database that moves, in the writer's own
transaction, whenever something that can change a signature verdict in the project changes.

Caches key their verdicts on it, so a verdict stays valid exactly until a manifest or tag of the
project is written or deleted (a push, a new referrer, promotion, retag, retention) or its policy
or trusted keys change; every node and worker process sees the same counter. Writers bump it as
the last statement of their transaction, so the row lock (PostgreSQL) is held only to commit.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from dockyard.metadata.db import upsert
from dockyard.metadata.models import security_generations


def bump(conn: Connection, project: str) -> None:
    upsert(conn, security_generations, {"project": project, "generation": 1}, ["project"],
           {"generation": security_generations.c.generation + 1})


def current(conn: Connection, project: str) -> int:
    return conn.execute(
        select(security_generations.c.generation).where(security_generations.c.project == project)
    ).scalar() or 0
