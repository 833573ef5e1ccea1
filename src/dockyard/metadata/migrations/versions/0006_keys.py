"""keys, tokens and file permissions (issue 9 items 1, 2)

Signing keys get a sealed (encrypted) private key and a revocation time; the plaintext column
becomes nullable and is emptied on start by auth/token_keys.py, which holds the key-encryption key
(a migration cannot: the KEK is a setting). Users and robots get a random credential epoch that
login passwords, tokens and refresh tokens carry.

Revision ID: 0006_keys
Revises: 0005
"""

import secrets

from alembic import op
import sqlalchemy as sa


revision = '0006_keys'
down_revision = '0005'
branch_labels = None
depends_on = None


def _random_epochs(table: str) -> None:
    conn = op.get_bind()
    t = sa.table(table, sa.column('id', sa.Integer), sa.column('credential_epoch', sa.BigInteger))
    for (row_id,) in conn.execute(sa.select(t.c.id)).all():
        conn.execute(sa.update(t).where(t.c.id == row_id).values(credential_epoch=secrets.randbits(62)))


def upgrade() -> None:
    with op.batch_alter_table('signing_keys') as batch:
        batch.alter_column('private_pem', existing_type=sa.Text(), nullable=True)
        batch.add_column(sa.Column('private_sealed', sa.Text(), nullable=True))
        batch.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))
    # No batch (table copy) here: dropping the old users table would cascade into project_members.
    # SQLite adds a NOT NULL column only with a default; the rows then get random values.
    for table in ('users', 'robots'):
        op.add_column(table, sa.Column('credential_epoch', sa.BigInteger(), nullable=False, server_default='0'))
        _random_epochs(table)
        if op.get_bind().dialect.name != 'sqlite':
            op.alter_column(table, 'credential_epoch', server_default=None)
    op.add_column('refresh_tokens', sa.Column('account_id', sa.Integer(), nullable=True))
    op.add_column('refresh_tokens', sa.Column('credential_epoch', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column('refresh_tokens', 'credential_epoch')
    op.drop_column('refresh_tokens', 'account_id')
    for table in ('robots', 'users'):
        op.drop_column(table, 'credential_epoch')
    with op.batch_alter_table('signing_keys') as batch:
        batch.drop_column('revoked_at')
        batch.drop_column('private_sealed')
