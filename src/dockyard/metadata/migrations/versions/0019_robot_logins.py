"""robots in CI (issue 15, placeholder)

Revision ID: 0019_robot_logins
Revises: 0018_repo_lifecycle
"""

from alembic import op
import sqlalchemy as sa


revision = '0019_robot_logins'
down_revision = '0018_repo_lifecycle'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
