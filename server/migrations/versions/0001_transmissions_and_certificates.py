"""Transmissions (with their receipts), certificate versions and the certificate heads.

Quantities are BIGINT micro-units (see server.adapters.orm.ExactQuantity).

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('certificates',
    sa.Column('issuing_country', sa.String(length=8), nullable=False),
    sa.Column('certificate_number', sa.String(length=64), nullable=False),
    sa.Column('current_version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('tpl_number', sa.String(length=16), nullable=False),
    sa.Column('quota_year', sa.Integer(), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('importer_of_record', sa.String(length=16), nullable=False),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.Column('used_quantity', sa.BigInteger(), nullable=False),
    sa.Column('matched_entries', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('issuing_country', 'certificate_number', name=op.f('pk_certificates'))
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index('ix_certificates_listing', ['issuing_country', 'status', 'quota_year', 'tpl_number'], unique=False)

    op.create_table('transmissions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('sender', sa.String(length=8), nullable=False),
    sa.Column('message_id', sa.String(length=128), nullable=False),
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('issuing_country', sa.String(length=8), nullable=False),
    sa.Column('certificate_number', sa.String(length=64), nullable=False),
    sa.Column('certificate_version', sa.Integer(), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('key_id', sa.String(length=128), nullable=False),
    sa.Column('signed_bytes', sa.LargeBinary(), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.Column('receipt_id', sa.String(length=64), nullable=False),
    sa.Column('receipt_json', sa.Text(), nullable=False),
    sa.Column('receipt_signature', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transmissions')),
    sa.UniqueConstraint('receipt_id', name=op.f('uq_transmissions_receipt_id')),
    sa.UniqueConstraint('sender', 'message_id', name='uq_transmissions_sender_message')
    )
    op.create_table('certificate_versions',
    sa.Column('issuing_country', sa.String(length=8), nullable=False),
    sa.Column('certificate_number', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('tpl_number', sa.String(length=16), nullable=False),
    sa.Column('htsus_number', sa.String(length=16), nullable=False),
    sa.Column('goods_description', sa.Text(), nullable=False),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('importer_of_record', sa.String(length=16), nullable=False),
    sa.Column('exporter_name', sa.Text(), nullable=False),
    sa.Column('exporter_address', sa.Text(), nullable=False),
    sa.Column('exporter_tax_id', sa.Text(), nullable=False),
    sa.Column('producer_name', sa.Text(), nullable=False),
    sa.Column('producer_address', sa.Text(), nullable=False),
    sa.Column('producer_tax_id', sa.Text(), nullable=False),
    sa.Column('quota_year', sa.Integer(), nullable=False),
    sa.Column('issue_date', sa.Date(), nullable=False),
    sa.Column('last_valid_date', sa.Date(), nullable=False),
    sa.Column('invoice_number', sa.Text(), nullable=False),
    sa.Column('transmission_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['transmission_id'], ['transmissions.id'], name=op.f('fk_certificate_versions_transmission_id_transmissions')),
    sa.PrimaryKeyConstraint('issuing_country', 'certificate_number', 'version', name=op.f('pk_certificate_versions'))
    )


def downgrade() -> None:
    op.drop_table('certificate_versions')
    op.drop_table('transmissions')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index('ix_certificates_listing')

    op.drop_table('certificates')
