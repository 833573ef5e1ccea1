"""Alembic environment: runs on the connection Database.migrate() hands over."""

from alembic import context

from dockyard.metadata.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `dockyard admin migrate` (Database.migrate)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
