"""The transparency log: entries, the Merkle tree's nodes, signed checkpoints, witness cosignatures.

The hash chain linked every audited write through one tip row (audit_head), which every claim of every
replica locked in turn. Entries now go in with one INSERT each and no shared row; a sequencer gives them
their indices later (server/service/log.py). The chain's records are copied into log entries in chain
order, so an upgraded database keeps its history (the sequencer integrates them first, by id), then
the receipts of the stored transmissions; the chain's table stays, no longer written, and its tip is
dropped.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""
import hashlib
import json

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# The entry format of server/domain/log_entry.py, frozen here as this revision wrote it.
ENTRY_TAG = b"ecert.v1.LogEntry\n"
BATCH = 1000


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _entry(at: str, kind: str, subject: str, payload: str) -> bytes:
    try:
        facts = json.loads(payload)
    except ValueError:
        facts = None
    if not isinstance(facts, dict):
        facts = {"payload": payload}
    return ENTRY_TAG + _canonical({"at": at, "facts": facts, "kind": kind, "subject": subject})


def upgrade() -> None:
    op.create_table('log_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('subject', sa.String(length=128), nullable=False),
    sa.Column('entry', sa.LargeBinary(), nullable=False),
    sa.Column('leaf_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('log_index', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_log_entries')),
    sa.UniqueConstraint('log_index', name='uq_log_entries_log_index')
    )
    op.create_index('ix_log_entries_subject', 'log_entries', ['subject'])
    op.create_index('ix_log_entries_leaf_hash', 'log_entries', ['leaf_hash'])
    op.create_index('ix_log_entries_pending', 'log_entries', ['id'],
                    sqlite_where=sa.text('log_index IS NULL'), postgresql_where=sa.text('log_index IS NULL'))
    op.create_table('log_nodes',
    sa.Column('level', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('level', 'idx', name=op.f('pk_log_nodes'))
    )
    op.create_table('log_checkpoints',
    sa.Column('tree_size', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('root_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tree_size', name=op.f('pk_log_checkpoints'))
    )
    op.create_table('log_cosignatures',
    sa.Column('tree_size', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('key_name', sa.String(length=128), nullable=False),
    sa.Column('line', sa.Text(), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tree_size', 'key_name', name=op.f('pk_log_cosignatures'))
    )

    # The chain's records become entries in chain order (ids follow the insertion order).
    connection = op.get_bind()
    entries = sa.table('log_entries', sa.column('kind'), sa.column('subject'), sa.column('entry', sa.LargeBinary), sa.column('leaf_hash', sa.LargeBinary))
    after = -1
    while True:
        rows = connection.execute(
            sa.text("SELECT seq, at, kind, subject, payload FROM audit_log WHERE seq > :after ORDER BY seq LIMIT :n"),
            {"after": after, "n": BATCH},
        ).fetchall()
        if not rows:
            break
        values = []
        for _, at, kind, subject, payload in rows:
            data = _entry(at, kind, subject, payload)
            values.append({"kind": kind, "subject": subject, "entry": data, "leaf_hash": hashlib.sha256(b"\x00" + data).digest()})
        for value in values:  # one by one: the ids keep the chain's order on every engine
            connection.execute(entries.insert().values(value))
        after = rows[-1][0]
    # Then the receipt of every stored transmission, in the order they were stored, made from the
    # receipt as customs signed it (server/domain/log_entry.py receipt_entry).
    from server.adapters.repositories import receipt_from_json
    from contract.log_entry import receipt_entry

    after = 0
    while True:
        rows = connection.execute(
            sa.text("SELECT id, receipt_json, receipt_signature FROM transmissions WHERE id > :after ORDER BY id LIMIT :n"),
            {"after": after, "n": BATCH},
        ).fetchall()
        if not rows:
            break
        for _, receipt_json, signature in rows:
            try:
                made = receipt_entry(receipt_from_json(receipt_json, bytes(signature)))
            except (ValueError, KeyError, TypeError):
                continue  # not a receipt this code can read: `ecert audit verify` names it
            connection.execute(entries.insert().values(kind=made.kind, subject=made.subject, entry=made.encode(), leaf_hash=made.leaf_hash))
        after = rows[-1][0]
    op.drop_table('audit_head')


def downgrade() -> None:
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    # The chain resumes from its last record; what was logged since the upgrade is not chained.
    connection = op.get_bind()
    last = connection.execute(sa.text("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")).first()
    seq, digest = (last[0], last[1]) if last else (0, "0" * 64)
    connection.execute(sa.text("INSERT INTO audit_head (id, seq, hash) VALUES (1, :seq, :hash)"), {"seq": seq, "hash": digest})
    op.drop_table('log_cosignatures')
    op.drop_table('log_checkpoints')
    op.drop_table('log_nodes')
    op.drop_index('ix_log_entries_pending', table_name='log_entries')
    op.drop_index('ix_log_entries_leaf_hash', table_name='log_entries')
    op.drop_index('ix_log_entries_subject', table_name='log_entries')
    op.drop_table('log_entries')
