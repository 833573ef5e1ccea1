"""signature verification (issue 19 items 1, 4)

Revision ID: 0010_signatures
Revises: 0009_faults
"""

from alembic import op
import sqlalchemy as sa


revision = '0010_signatures'
down_revision = '0009_faults'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_generations",
        sa.Column("project", sa.String(255), primary_key=True),
        sa.Column("generation", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("security_generations")
