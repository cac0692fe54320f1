"""The evidence each claim decision relied on: the receipt and digest of the certificate version on file.

A claim is matched against the version customs had received at its presentation time (the eCERT
notice: no transmission upon entry summary means the MFN rate); the decision names that version
(already stored), customs' receipt id for its transmission and the transmission's SHA-256 digest, so
anyone can later show which signed transmission a grant rested on. Older claims keep empty values.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('claims') as batch:
        batch.add_column(sa.Column('certificate_receipt_id', sa.String(length=64), nullable=False, server_default=''))
        batch.add_column(sa.Column('certificate_digest', sa.String(length=64), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('claims') as batch:
        batch.drop_column('certificate_digest')
        batch.drop_column('certificate_receipt_id')
