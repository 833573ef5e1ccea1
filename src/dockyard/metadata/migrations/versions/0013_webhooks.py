"""webhooks (issue 10 part 2)

Revision ID: 0013_webhooks
Revises: 0012_events
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0013_webhooks'
down_revision = '0012_events'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
