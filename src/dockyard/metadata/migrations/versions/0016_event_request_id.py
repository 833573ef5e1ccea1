"""events.request_id as wide as the request ids accepted (attack review of issue 10)

Revision ID: 0016_event_request_id
Revises: 0014_metrics
"""

from alembic import op
import sqlalchemy as sa


revision = '0016_event_request_id'
down_revision = '0014_metrics'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # api/request_id.py keeps an incoming X-Request-Id of up to 128 characters, and audit_events and
    # jobs store 128; PostgreSQL refuses a longer value than VARCHAR(64), which failed the write.
    with op.batch_alter_table("events") as batch:
        batch.alter_column("request_id", existing_type=sa.String(64), type_=sa.String(128), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.alter_column("request_id", existing_type=sa.String(128), type_=sa.String(64), existing_nullable=True)
