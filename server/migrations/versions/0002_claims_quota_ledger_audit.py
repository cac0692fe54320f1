"""Claims, quota levels and their ledger, the opening marker, reference versions, the audit chain.

Quantities are BIGINT micro-units (see server.adapters.orm.ExactQuantity).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    op.create_table('audit_log',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('at', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('subject', sa.String(length=128), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_log'))
    )
    op.create_table('claims',
    sa.Column('claim_id', sa.String(length=40), nullable=False),
    sa.Column('entry_number', sa.String(length=16), nullable=False),
    sa.Column('line_number', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('request_digest', sa.String(length=64), nullable=False),
    sa.Column('filer_code', sa.String(length=8), nullable=False),
    sa.Column('importer_of_record', sa.String(length=16), nullable=False),
    sa.Column('issuing_country', sa.String(length=8), nullable=False),
    sa.Column('certificate_number', sa.String(length=64), nullable=False),
    sa.Column('certificate_version', sa.Integer(), nullable=False),
    sa.Column('tpl_number', sa.String(length=16), nullable=False),
    sa.Column('quota_year', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=24), nullable=False),
    sa.Column('reasons', sa.Text(), nullable=False),
    sa.Column('mismatches', sa.Text(), nullable=False),
    sa.Column('claimed_quantity', sa.BigInteger(), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('claimed_measure', sa.BigInteger(), nullable=False),
    sa.Column('measure_unit', sa.String(length=8), nullable=False),
    sa.Column('conversion_factor', sa.String(length=24), nullable=False),
    sa.Column('factor_version', sa.String(length=64), nullable=False),
    sa.Column('granted_quantity', sa.BigInteger(), nullable=False),
    sa.Column('granted_measure', sa.BigInteger(), nullable=False),
    sa.Column('certificate_remaining', sa.BigInteger(), nullable=True),
    sa.Column('level_remaining', sa.BigInteger(), nullable=True),
    sa.Column('aggregate_remaining', sa.BigInteger(), nullable=True),
    sa.Column('presentation_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('post_importation', sa.Boolean(), nullable=False),
    sa.Column('proration_rate', sa.String(length=24), nullable=False),
    sa.Column('reversed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reversal_kind', sa.String(length=16), nullable=True),
    sa.PrimaryKeyConstraint('claim_id', name=op.f('pk_claims')),
    sa.UniqueConstraint('entry_number', 'line_number', 'revision', name='uq_claims_entry_line_revision')
    )
    with op.batch_alter_table('claims', schema=None) as batch_op:
        batch_op.create_index('ix_claims_certificate', ['issuing_country', 'certificate_number'], unique=False)
        batch_op.create_index('ix_claims_queue', ['quota_year', 'decision'], unique=False)

    op.create_table('quota_ledger',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tpl_number', sa.String(length=16), nullable=False),
    sa.Column('quota_year', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delta', sa.BigInteger(), nullable=False),
    sa.Column('claim_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quota_ledger'))
    )
    with op.batch_alter_table('quota_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_quota_ledger_level_at', ['tpl_number', 'quota_year', 'at'], unique=False)

    op.create_table('quota_levels',
    sa.Column('tpl_number', sa.String(length=16), nullable=False),
    sa.Column('quota_year', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=32), nullable=False),
    sa.Column('measure_unit', sa.String(length=8), nullable=False),
    sa.Column('limit', sa.BigInteger(), nullable=False),
    sa.Column('charged', sa.BigInteger(), nullable=False),
    sa.Column('aggregate', sa.String(length=16), nullable=True),
    sa.PrimaryKeyConstraint('tpl_number', 'quota_year', name=op.f('pk_quota_levels'))
    )
    op.create_table('quota_openings',
    sa.Column('quota_year', sa.Integer(), nullable=False),
    sa.Column('allocated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('quota_year', name=op.f('pk_quota_openings'))
    )
    op.create_table('reference_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reference_versions')),
    sa.UniqueConstraint('kind', 'version', name='uq_reference_versions_kind_version')
    )

    # The chain starts from the genesis hash; appenders lock and advance this row.
    op.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '" + "0" * 64 + "')")


def downgrade() -> None:
    op.drop_table('reference_versions')
    op.drop_table('quota_openings')
    op.drop_table('quota_levels')
    with op.batch_alter_table('quota_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_quota_ledger_level_at')

    op.drop_table('quota_ledger')
    with op.batch_alter_table('claims', schema=None) as batch_op:
        batch_op.drop_index('ix_claims_queue')
        batch_op.drop_index('ix_claims_certificate')

    op.drop_table('claims')
    op.drop_table('audit_log')
    op.drop_table('audit_head')
