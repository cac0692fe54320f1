"""Per-replica allotments carved from a level (escrow), so that claims on different certificates of an
open level take no lock in common.

`quota_allotments` holds, per level and holder (a serving process), the room carved out for it and
what its claims charged from it since it was last folded back. `quota_levels.escrowed` is the sum of
both over the level's allotments: the level row's `charged + escrowed` never passes its limit (a
constraint), so charges plus allotments never exceed the level at any instant. A level's charged total
is `charged` plus what its allotments used; the `quota_usage` view shows it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

USAGE_VIEW = """
CREATE VIEW quota_usage AS
SELECT l.tpl_number, l.quota_year, l."limit", l.charged + coalesce(
         (SELECT sum(a.used) FROM quota_allotments a WHERE a.tpl_number = l.tpl_number AND a.quota_year = l.quota_year), 0
       ) AS charged, l.escrowed, l.held_since
FROM quota_levels l
"""


def upgrade() -> None:
    with op.batch_alter_table('quota_levels') as batch:
        batch.add_column(sa.Column('escrowed', sa.BigInteger(), nullable=False, server_default='0'))
        batch.drop_constraint(op.f('ck_quota_levels_charged_within_limit'), type_='check')
        batch.create_check_constraint(op.f('ck_quota_levels_charged_within_limit'), 'charged + escrowed <= "limit"')
        batch.create_check_constraint(op.f('ck_quota_levels_escrowed_not_negative'), 'escrowed >= 0')
    op.create_table(
        'quota_allotments',
        sa.Column('tpl_number', sa.String(16), nullable=False),
        sa.Column('quota_year', sa.Integer(), nullable=False),
        sa.Column('holder', sa.String(40), nullable=False),
        sa.Column('room', sa.BigInteger(), nullable=False),
        sa.Column('used', sa.BigInteger(), nullable=False),
        sa.Column('touched_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('room >= 0', name=op.f('ck_quota_allotments_room_not_negative')),
        sa.CheckConstraint('used >= 0', name=op.f('ck_quota_allotments_used_not_negative')),
        sa.ForeignKeyConstraint(['tpl_number', 'quota_year'], ['quota_levels.tpl_number', 'quota_levels.quota_year'],
                                name=op.f('fk_quota_allotments_tpl_number_quota_levels')),
        sa.PrimaryKeyConstraint('tpl_number', 'quota_year', 'holder', name=op.f('pk_quota_allotments')),
    )
    op.execute(USAGE_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW quota_usage")
    op.drop_table('quota_allotments')
    with op.batch_alter_table('quota_levels') as batch:
        batch.drop_constraint(op.f('ck_quota_levels_escrowed_not_negative'), type_='check')
        batch.drop_constraint(op.f('ck_quota_levels_charged_within_limit'), type_='check')
        batch.create_check_constraint(op.f('ck_quota_levels_charged_within_limit'), 'charged <= "limit"')
        batch.drop_column('escrowed')
