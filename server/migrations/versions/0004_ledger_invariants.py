"""The quota ledger's invariants, kept by the database itself.

- every level: 0 <= charged <= limit; every certificate: 0 <= used_quantity <= quantity and
  matched_entries >= 0 (CHECK constraints, on SQLite and PostgreSQL);
- a claim is charged, allocated and reversed at most once per level (a unique quota-ledger row);
- an entry line has at most one live claim that holds quantity (a partial unique index).

Before this revision two racing reversals on PostgreSQL could release one claim twice; a database
that went through such a race holds rows these constraints refuse, and the upgrade then fails on
them: `ecert audit reconcile` names the drift to repair first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

LIVE_HOLD = sa.text("reversed_at IS NULL AND decision IN ('PREFERENTIAL', 'PARTIAL', 'QUEUED')")


def upgrade() -> None:
    with op.batch_alter_table('quota_levels', schema=None) as batch_op:
        batch_op.create_check_constraint(op.f('ck_quota_levels_charged_not_negative'), 'charged >= 0')
        batch_op.create_check_constraint(op.f('ck_quota_levels_charged_within_limit'), 'charged <= "limit"')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_check_constraint(op.f('ck_certificates_used_not_negative'), 'used_quantity >= 0')
        batch_op.create_check_constraint(op.f('ck_certificates_used_within_quantity'), 'used_quantity <= quantity')
        batch_op.create_check_constraint(op.f('ck_certificates_matched_not_negative'), 'matched_entries >= 0')
    with op.batch_alter_table('quota_ledger', schema=None) as batch_op:
        batch_op.create_unique_constraint(op.f('uq_quota_ledger_claim_level_kind'), ['claim_id', 'tpl_number', 'kind'])
    op.create_index(
        'uq_claims_live_hold', 'claims', ['entry_number', 'line_number'], unique=True,
        sqlite_where=LIVE_HOLD, postgresql_where=LIVE_HOLD,
    )


def downgrade() -> None:
    op.drop_index('uq_claims_live_hold', table_name='claims')
    with op.batch_alter_table('quota_ledger', schema=None) as batch_op:
        batch_op.drop_constraint('uq_quota_ledger_claim_level_kind', type_='unique')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_certificates_matched_not_negative'), type_='check')
        batch_op.drop_constraint(op.f('ck_certificates_used_within_quantity'), type_='check')
        batch_op.drop_constraint(op.f('ck_certificates_used_not_negative'), type_='check')
    with op.batch_alter_table('quota_levels', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_quota_levels_charged_within_limit'), type_='check')
        batch_op.drop_constraint(op.f('ck_quota_levels_charged_not_negative'), type_='check')
