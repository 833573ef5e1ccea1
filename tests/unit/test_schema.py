"""The Alembic migrations and metadata/models.py must describe the same schema."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dockyard.metadata.db import Database
from dockyard.metadata.schema import metadata


def test_migrations_match_models(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        database.migrate()
        with database.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        database.dispose()


def test_vulnerability_tables_are_migrated(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        database.migrate()
        with database.engine.connect() as conn:
            names = set(conn.dialect.get_table_names(conn))
        assert {"vuln_advisories", "vuln_affected", "vuln_sources", "scan_reports", "trusted_keys"} <= names
    finally:
        database.dispose()
