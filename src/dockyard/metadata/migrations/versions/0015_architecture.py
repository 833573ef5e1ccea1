"""architecture steps (issue 10 part 4)

Revision ID: 0015_architecture
Revises: 0014_metrics
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0015_architecture'
down_revision = '0014_metrics'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
