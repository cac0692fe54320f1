"""The opening allocation runs in chunks: the rates it decided, and when it finished.

An opening batch can be tens of thousands of claims. Deciding them all in one transaction held
SQLite's only writer for the whole batch (every other write waited or was refused), and a caller's
deadline or a restart lost all of it. Now the first transaction records each TPL's rate; later
ones decide the queue a chunk at a time from those rates, and the last marks it completed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('quota_openings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rates', sa.Text(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True))
    # Openings allocated before this revision were allocated whole, in one transaction.
    op.execute("UPDATE quota_openings SET completed_at = allocated_at")


def downgrade() -> None:
    with op.batch_alter_table('quota_openings', schema=None) as batch_op:
        batch_op.drop_column('completed_at')
        batch_op.drop_column('rates')
