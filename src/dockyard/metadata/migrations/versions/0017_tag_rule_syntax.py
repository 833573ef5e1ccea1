"""tag rules: one pattern syntax (issue 15, placeholder)

Revision ID: 0017_tag_rule_syntax
Revises: 0016_event_request_id
"""

from alembic import op
import sqlalchemy as sa


revision = '0017_tag_rule_syntax'
down_revision = '0016_event_request_id'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
