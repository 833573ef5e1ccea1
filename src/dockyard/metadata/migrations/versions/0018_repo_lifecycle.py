"""repository lifecycle: index uploads by repository (issue 15)

When a repository's last manifest is deleted, it is dropped unless an upload into it is open:
that check looks uploads up by repository name.

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
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.create_index('ix_uploads_repository', ['repository'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_index('ix_uploads_repository')
