"""backup leases: GC keeps what a running `dockyard admin backup` still has to copy (issue 16)

Revision ID: 0020_backup
Revises: 0019_namesake_tokens
"""

from alembic import op
import sqlalchemy as sa


revision = '0020_backup'
down_revision = '0019_namesake_tokens'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'backup_leases',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('holder', sa.String(length=200), nullable=False),
        sa.Column('since', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_backup_leases_expires_at', 'backup_leases', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_backup_leases_expires_at', table_name='backup_leases')
    op.drop_table('backup_leases')
