"""webhooks (issue 10 part 2): endpoints, deliveries and delivery attempts

Revision ID: 0013_webhooks
Revises: 0012_events
"""

from alembic import op
import sqlalchemy as sa


revision = '0013_webhooks'
down_revision = '0012_events'
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'webhooks',
        sa.Column('id', _Id, autoincrement=True, nullable=False),
        sa.Column('project', sa.String(length=64), nullable=True),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('url', sa.String(length=2000), nullable=False),
        sa.Column('format', sa.String(length=20), nullable=False),
        sa.Column('event_types', sa.Text(), server_default='[]', nullable=False),
        sa.Column('repository_pattern', sa.String(length=255), nullable=True),
        sa.Column('tag_pattern', sa.String(length=255), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('secret_sealed', sa.Text(), nullable=False),
        sa.Column('previous_secret_sealed', sa.Text(), nullable=True),
        sa.Column('previous_secret_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('private_target', sa.Boolean(), nullable=False),
        sa.Column('consecutive_failures', sa.Integer(), nullable=False),
        sa.Column('disabled_reason', sa.String(length=500), nullable=True),
        sa.Column('created_by', sa.String(length=255), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks')),
    )
    op.create_index('ix_webhooks_project', 'webhooks', ['project'])
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', _Id, autoincrement=True, nullable=False),
        sa.Column('webhook_id', _Id, nullable=False),
        sa.Column('event_key', sa.String(length=64), nullable=False),
        sa.Column('event_type', sa.String(length=64), nullable=False),
        sa.Column('event', sa.Text(), nullable=False),
        sa.Column('repository', sa.String(length=255), server_default='', nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('max_attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('turn', sa.Integer(), nullable=False),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], name=op.f('fk_webhook_deliveries_webhook_id_webhooks'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
        sa.UniqueConstraint('webhook_id', 'event_key', name=op.f('uq_webhook_deliveries_webhook_id_event_key')),
    )
    op.create_index('ix_webhook_deliveries_lane', 'webhook_deliveries', ['webhook_id', 'repository', 'state', 'id'])
    op.create_index('ix_webhook_deliveries_state', 'webhook_deliveries', ['state'])
    op.create_table(
        'webhook_attempts',
        sa.Column('id', _Id, autoincrement=True, nullable=False),
        sa.Column('delivery_id', _Id, nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('duration_ms', sa.Integer(), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('response_body', sa.Text(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'],
                                name=op.f('fk_webhook_attempts_delivery_id_webhook_deliveries'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts')),
    )
    op.create_index('ix_webhook_attempts_delivery', 'webhook_attempts', ['delivery_id', 'id'])
    op.create_index('ix_webhook_attempts_outcome', 'webhook_attempts', ['outcome'])


def downgrade() -> None:
    op.drop_index('ix_webhook_attempts_outcome', table_name='webhook_attempts')
    op.drop_index('ix_webhook_attempts_delivery', table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    op.drop_index('ix_webhook_deliveries_state', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_lane', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_index('ix_webhooks_project', table_name='webhooks')
    op.drop_table('webhooks')
