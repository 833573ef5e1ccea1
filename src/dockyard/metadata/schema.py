"""Every table of the metadata database, for Alembic and the schema test: importing this module
registers each area's schema module on the one `metadata` object."""

from __future__ import annotations

from dockyard.metadata import acme_tables, backup_tables, event_tables, models, webhook_tables  # noqa: F401  (registers tables)
from dockyard.metadata.models import metadata

__all__ = ["metadata"]
