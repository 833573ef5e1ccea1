"""repository lifecycle and listings (issue 15, placeholder)

Revision ID: 0018_repo_lifecycle
Revises: 0017_tag_rule_syntax
"""

from alembic import op
import sqlalchemy as sa


revision = '0018_repo_lifecycle'
down_revision = '0017_tag_rule_syntax'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
