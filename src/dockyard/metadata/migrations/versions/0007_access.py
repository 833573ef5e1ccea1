"""access, catalog and quotas (issue 9 items 4, 5, 6, 9, 10)

Revision ID: 0007_access
Revises: 0006_keys
"""

from alembic import op
import sqlalchemy as sa


revision = '0007_access'
down_revision = '0006_keys'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Sessions opened before this revision have no owner; nobody can continue them, and the reaper purges them.
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("owner", sa.String(300), nullable=True))
        batch.add_column(sa.Column("project", sa.String(255), nullable=True))
        batch.create_index("ix_uploads_owner", ["owner"])
        batch.create_index("ix_uploads_project", ["project"])


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_index("ix_uploads_project")
        batch.drop_index("ix_uploads_owner")
        batch.drop_column("project")
        batch.drop_column("owner")
