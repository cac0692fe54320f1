"""The batches read their claims in index order: no step sorts what is still waiting.

The opening allocation takes its queued claims a chunk at a time in claim-id order; with an index on
(quota_year, decision) alone each step sorted every claim still queued, so a batch of N claims cost
N²/chunk row visits. The queue index now ends in claim_id. The offers timer looks for lapsed offers
every tick: a partial index on the open offers' deadlines (then claim id) replaces a scan of every claim.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

OFFERED = sa.text("decision = 'PRORATED_OFFER'")


def upgrade() -> None:
    op.drop_index('ix_claims_queue', table_name='claims')
    op.create_index('ix_claims_queue', 'claims', ['quota_year', 'decision', 'claim_id'])
    op.create_index('ix_claims_offers', 'claims', ['offer_expires_at', 'claim_id'],
                    sqlite_where=OFFERED, postgresql_where=OFFERED)


def downgrade() -> None:
    op.drop_index('ix_claims_offers', table_name='claims')
    op.drop_index('ix_claims_queue', table_name='claims')
    op.create_index('ix_claims_queue', 'claims', ['quota_year', 'decision'])
