"""input validation, throttling and HTTP surface (issue 9 items 3, 7, 8, 11, 12)

Revision ID: 0008_inputs
Revises: 0007_access
"""

from alembic import op
import sqlalchemy as sa


revision = '0008_inputs'
down_revision = '0007_access'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
