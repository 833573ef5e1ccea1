"""metrics and request ids (issue 10 part 3)

Revision ID: 0014_metrics
Revises: 0013_webhooks
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0014_metrics'
down_revision = '0013_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
