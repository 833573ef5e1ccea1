"""supply chain security

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scan_reports',
    sa.Column('digest', sa.String(length=255), nullable=False),
    sa.Column('scanner', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('generated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('vulndb_updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('package_count', sa.Integer(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('findings', sa.Text(), nullable=False),
    sa.Column('packages', sa.Text(), nullable=True),
    sa.Column('sbom_digest', sa.String(length=255), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('digest', 'scanner', name=op.f('pk_scan_reports'))
    )
    op.create_table('scanners',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('url', sa.String(length=1000), nullable=False),
    sa.Column('authorization', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scanners')),
    sa.UniqueConstraint('name', name=op.f('uq_scanners_name'))
    )
    op.create_table('vuln_advisories',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('modified', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published', sa.DateTime(timezone=True), nullable=True),
    sa.Column('withdrawn', sa.DateTime(timezone=True), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vuln_advisories'))
    )
    op.create_table('vuln_sources',
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('origin', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('advisory_count', sa.Integer(), nullable=False),
    sa.Column('withdrawn_count', sa.Integer(), nullable=False),
    sa.Column('invalid_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('source', name=op.f('pk_vuln_sources'))
    )
    op.create_table('cve_allowlist',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('vulnerability', sa.String(length=255), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_cve_allowlist_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cve_allowlist')),
    sa.UniqueConstraint('project_id', 'vulnerability', name=op.f('uq_cve_allowlist_project_id_vulnerability'))
    )
    op.create_table('project_security',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('auto_scan', sa.Boolean(), nullable=False),
    sa.Column('scanner_id', sa.Integer(), nullable=True),
    sa.Column('block_severity', sa.String(length=16), nullable=True),
    sa.Column('unscanned', sa.String(length=8), nullable=False),
    sa.Column('unscanned_wait_seconds', sa.Integer(), nullable=False),
    sa.Column('require_signature', sa.Boolean(), nullable=False),
    sa.Column('promotion_max_severity', sa.String(length=16), nullable=True),
    sa.Column('promotion_require_signature', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_project_security_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['scanner_id'], ['scanners.id'], name=op.f('fk_project_security_scanner_id_scanners'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('project_id', name=op.f('pk_project_security'))
    )
    op.create_table('trusted_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_trusted_keys_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trusted_keys')),
    sa.UniqueConstraint('project_id', 'name', name=op.f('uq_trusted_keys_project_id_name'))
    )
    op.create_table('vuln_affected',
    sa.Column('advisory_id', sa.String(length=255), nullable=False),
    sa.Column('ecosystem', sa.String(length=255), nullable=False),
    sa.Column('package', sa.String(length=512), nullable=False),
    sa.Column('ecosystem_base', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['advisory_id'], ['vuln_advisories.id'], name=op.f('fk_vuln_affected_advisory_id_vuln_advisories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('advisory_id', 'ecosystem', 'package', name=op.f('pk_vuln_affected'))
    )
    with op.batch_alter_table('vuln_affected', schema=None) as batch_op:
        batch_op.create_index('ix_vuln_affected_lookup', ['ecosystem_base', 'package'], unique=False)
    op.create_table('vuln_aliases',
    sa.Column('alias', sa.String(length=255), nullable=False),
    sa.Column('advisory_id', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['advisory_id'], ['vuln_advisories.id'], name=op.f('fk_vuln_aliases_advisory_id_vuln_advisories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('alias', 'advisory_id', name=op.f('pk_vuln_aliases'))
    )


def downgrade() -> None:
    op.drop_table('vuln_aliases')
    with op.batch_alter_table('vuln_affected', schema=None) as batch_op:
        batch_op.drop_index('ix_vuln_affected_lookup')

    op.drop_table('vuln_affected')
    op.drop_table('trusted_keys')
    op.drop_table('project_security')
    op.drop_table('cve_allowlist')
    op.drop_table('vuln_sources')
    op.drop_table('vuln_advisories')
    op.drop_table('scanners')
    op.drop_table('scan_reports')
