"""faults: disk full, database outages, crashes (issue 9 part 2)

Revision ID: 0009_faults
Revises: 0007_access
"""

from alembic import op
import sqlalchemy as sa


revision = '0009_faults'
down_revision = '0007_access'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'storage_intents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('storage_key', sa.String(length=400), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('storage_intents', schema=None) as batch_op:
        batch_op.create_index('ix_storage_intents_created_at', ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('storage_intents', schema=None) as batch_op:
        batch_op.drop_index('ix_storage_intents_created_at')
    op.drop_table('storage_intents')
