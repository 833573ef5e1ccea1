"""ACME: account key, issued certificates and the ordering lease (issue 16)

Revision ID: 0021_acme
Revises: 0020_backup
"""

from alembic import op
import sqlalchemy as sa


revision = '0021_acme'
down_revision = '0020_backup'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'acme_accounts',
        sa.Column('directory_url', sa.String(length=500), nullable=False),
        sa.Column('key_sealed', sa.Text(), nullable=False),
        sa.Column('uri', sa.String(length=500), nullable=True),
        sa.Column('email', sa.String(length=320), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('directory_url'),
    )
    op.create_table(
        'acme_certificates',
        sa.Column('domain', sa.String(length=253), nullable=False),
        sa.Column('fullchain_pem', sa.Text(), nullable=False),
        sa.Column('key_sealed', sa.Text(), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
        sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('domain'),
    )
    op.create_table(
        'acme_challenges',
        sa.Column('token', sa.String(length=200), nullable=False),
        sa.Column('key_authorization', sa.String(length=500), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('token'),
    )
    op.create_table(
        'acme_leases',
        sa.Column('domain', sa.String(length=253), nullable=False),
        sa.Column('holder', sa.String(length=200), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('domain'),
    )


def downgrade() -> None:
    op.drop_table('acme_leases')
    op.drop_table('acme_challenges')
    op.drop_table('acme_certificates')
    op.drop_table('acme_accounts')
