"""scan pipeline: reports, queueing, safe output (issue 19 items 3, 5, 6)

Revision ID: 0011_scan_pipeline
Revises: 0010_signatures
"""

from alembic import op
import sqlalchemy as sa


revision = '0011_scan_pipeline'
down_revision = '0010_signatures'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_turns',
    sa.Column('fair_key', sa.String(length=255), nullable=False),
    sa.Column('turn', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('fair_key', name=op.f('pk_job_turns'))
    )
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('fair_key', sa.String(length=255), server_default='', nullable=False))
        batch.create_index('ix_jobs_parent', ['parent_id'], unique=False)
    with op.batch_alter_table('scan_reports') as batch:
        batch.add_column(sa.Column('reason', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('match_errors', sa.Text(), nullable=True))
        batch.add_column(sa.Column('unsupported', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('scan_reports') as batch:
        batch.drop_column('unsupported')
        batch.drop_column('match_errors')
        batch.drop_column('reason')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_parent')
        batch.drop_column('fair_key')
        batch.drop_column('parent_id')
    op.drop_table('job_turns')
