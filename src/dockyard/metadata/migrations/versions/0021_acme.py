"""ACME: account key, issued certificates and the ordering lease (issue 16) -- placeholder, filled by h/acme

Revision ID: 0021_acme
Revises: 0020_backup
"""

revision = '0021_acme'
down_revision = '0020_backup'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
