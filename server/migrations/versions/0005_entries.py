"""Entry numbers and the parties they belong to, one row each.

An entry number is never reused for another importer's entry. The check read the claims of the entry,
then inserted a claim: two importers filing the first lines of one new entry at once could both pass
it. The row's primary key now decides; existing entries are copied from the claims.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('entries',
    sa.Column('entry_number', sa.String(length=16), nullable=False),
    sa.Column('importer_of_record', sa.String(length=16), nullable=False),
    sa.Column('filer_code', sa.String(length=8), nullable=False),
    sa.PrimaryKeyConstraint('entry_number', name=op.f('pk_entries'))
    )
    op.execute(
        "INSERT INTO entries (entry_number, importer_of_record, filer_code) "
        "SELECT entry_number, min(importer_of_record), min(filer_code) FROM claims GROUP BY entry_number"
    )


def downgrade() -> None:
    op.drop_table('entries')
