"""robots: remember a disable by a registry administrator (attack review of issue 15)

A project admin may disable and enable the project's robots, but not undo an administrator's disable:
the row records who disabled it. (The namesake-token fix of the same review needed no schema: tokens
already carry `iat` and projects `created_at`.)

Revision ID: 0019_namesake_tokens
Revises: 0018_repo_lifecycle
"""

from alembic import op
import sqlalchemy as sa


revision = '0019_namesake_tokens'
down_revision = '0018_repo_lifecycle'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('robots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled_by_admin', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('robots', schema=None) as batch_op:
        batch_op.drop_column('disabled_by_admin')
