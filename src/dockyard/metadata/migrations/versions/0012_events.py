"""change feed: the events outbox and consumer cursors (issue 10)

Revision ID: 0012_events
Revises: 0011_scan_pipeline
"""

from alembic import op
import sqlalchemy as sa


revision = '0012_events'
down_revision = '0011_scan_pipeline'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'events',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('key', sa.String(length=36), nullable=False),
        sa.Column('txid', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('type', sa.String(length=64), nullable=False),
        sa.Column('project', sa.String(length=255), nullable=True),
        sa.Column('repository', sa.String(length=255), nullable=True),
        sa.Column('digest', sa.String(length=200), nullable=True),
        sa.Column('tag', sa.String(length=255), nullable=True),
        sa.Column('actor', sa.String(length=255), nullable=True),
        sa.Column('request_id', sa.String(length=64), nullable=True),
        sa.Column('data', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
        sa.UniqueConstraint('key', name=op.f('uq_events_key')),
    )
    op.create_index('ix_events_order', 'events', ['txid', 'id'])
    op.create_index('ix_events_project', 'events', ['project', 'id'])
    op.create_index('ix_events_type', 'events', ['type', 'id'])
    op.create_index('ix_events_occurred_at', 'events', ['occurred_at'])
    op.create_table(
        'event_cursors',
        sa.Column('consumer', sa.String(length=100), nullable=False),
        sa.Column('txid', sa.BigInteger(), nullable=False),
        sa.Column('event_id', sa.BigInteger(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('consumer', name=op.f('pk_event_cursors')),
    )


def downgrade() -> None:
    op.drop_table('event_cursors')
    op.drop_index('ix_events_occurred_at', table_name='events')
    op.drop_index('ix_events_type', table_name='events')
    op.drop_index('ix_events_project', table_name='events')
    op.drop_index('ix_events_order', table_name='events')
    op.drop_table('events')
