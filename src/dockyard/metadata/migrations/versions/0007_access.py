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
    pass


def downgrade() -> None:
    pass
