"""keys, tokens and file permissions (issue 9 items 1, 2)

Revision ID: 0006_keys
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa


revision = '0006_keys'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
