"""Near fill, claims wait for the daily cutoff batch and are decided in presentation-time order.

A level goes on hold (`quota_levels.held_since`) once a claim would take it past its critical share;
its claims are then stored PENDING with their certificate quantity reserved, and each daily cutoff's
batch (`quota_batches`, resumable steps like the opening's) decides them in presentation-time order,
recording its cutoff on each claim (`claims.batch_cutoff`). Pending claims and open prorated offers
hold quantity too, so the one-live-hold-per-line index now covers them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

OLD_LIVE_HOLD = sa.text("reversed_at IS NULL AND decision IN ('PREFERENTIAL', 'PARTIAL', 'QUEUED')")
LIVE_HOLD = sa.text("reversed_at IS NULL AND decision IN ('PREFERENTIAL', 'PARTIAL', 'QUEUED', 'PENDING', 'PRORATED_OFFER')")
PENDING = sa.text("decision = 'PENDING'")


def upgrade() -> None:
    with op.batch_alter_table('quota_levels') as batch:
        batch.add_column(sa.Column('held_since', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('claims') as batch:
        batch.add_column(sa.Column('batch_cutoff', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'quota_batches',
        sa.Column('cutoff_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('decided', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('cutoff_at', name=op.f('pk_quota_batches')),
    )
    op.drop_index('uq_claims_live_hold', table_name='claims')
    op.create_index('uq_claims_live_hold', 'claims', ['entry_number', 'line_number'], unique=True,
                    sqlite_where=LIVE_HOLD, postgresql_where=LIVE_HOLD)
    op.create_index('ix_claims_pending', 'claims', ['presentation_time', 'claim_id'],
                    sqlite_where=PENDING, postgresql_where=PENDING)


def downgrade() -> None:
    op.drop_index('ix_claims_pending', table_name='claims')
    op.drop_index('uq_claims_live_hold', table_name='claims')
    op.create_index('uq_claims_live_hold', 'claims', ['entry_number', 'line_number'], unique=True,
                    sqlite_where=OLD_LIVE_HOLD, postgresql_where=OLD_LIVE_HOLD)
    op.drop_table('quota_batches')
    with op.batch_alter_table('claims') as batch:
        batch.drop_column('batch_cutoff')
    with op.batch_alter_table('quota_levels') as batch:
        batch.drop_column('held_since')
