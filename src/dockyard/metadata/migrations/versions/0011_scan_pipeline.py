"""scan pipeline: reports, queueing, safe output (issue 19 items 3, 5, 6)

Revision ID: 0011_scan_pipeline
Revises: 0010_signatures
"""

from alembic import op
import sqlalchemy as sa


revision = '0011_scan_pipeline'
down_revision = '0010_signatures'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
