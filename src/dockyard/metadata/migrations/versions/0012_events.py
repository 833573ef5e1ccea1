"""events, webhooks and metrics (issue 10)

Revision ID: 0012_events
Revises: 0011_scan_pipeline
"""

from alembic import op
import sqlalchemy as sa


revision = '0012_events'
down_revision = '0011_scan_pipeline'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
