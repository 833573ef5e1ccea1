"""webhook delivery cost (issue 10, placeholder)

Revision ID: 0020_webhook_batches
Revises: 0019_robot_logins
"""

from alembic import op
import sqlalchemy as sa


revision = '0020_webhook_batches'
down_revision = '0019_robot_logins'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
