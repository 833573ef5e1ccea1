"""faults: disk full, database outages, crashes (issue 9 part 2)

Revision ID: 0009_faults
Revises: 0008_inputs
"""

from alembic import op
import sqlalchemy as sa


revision = '0009_faults'
down_revision = '0008_inputs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
