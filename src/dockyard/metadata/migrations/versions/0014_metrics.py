"""metrics and request ids (issue 10 part 3)

Revision ID: 0014_metrics
Revises: 0013_webhooks
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0014_metrics'
down_revision = '0013_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The request an audit entry or a job came from (request_context.request_id), so one id ties a
    # request's log lines, audit entries, events and the jobs it enqueued together.
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("request_id", sa.String(128)))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_id", sa.String(128)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_id")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("request_id")
