"""Prorated opening shares are offers with a deadline (CSMS 16-000886: five business days).

A claim of an oversubscribed opening batch is answered PRORATED_OFFER with its prorated share reserved;
`offer_expires_at` is when an unanswered offer lapses and the share goes back to the level.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('claims') as batch:
        batch.add_column(sa.Column('offer_expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('claims') as batch:
        batch.drop_column('offer_expires_at')
