"""The log's storage on each engine: the tree grown by the sequencer in batches of any size gives, from
its stored nodes, the roots and proofs of merkle.py's naive recomputation; and a database upgraded from
the hash chain keeps its history as log entries."""
from __future__ import annotations

import datetime as dt
import json
import pathlib
import random
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract import merkle
from contract.log_entry import LogEntry, receipt_entry
from contract.note import Checkpoint, open_note
from server.adapters.database import Database
from server.adapters.repositories import receipt_to_json
from server.service.audit import verify_audit_log
from server.service.clock import FixedClock
from server.service.log import LogUseCases
from server.service.unit_of_work import UnitOfWork
from tests.integration.test_migrations import alembic_config

AT = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)
SIZE = 300


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[str]:
    """An empty database of each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create()
    yield server.url_of(name)
    server.drop(name)


def test_proofs_from_stored_nodes_match_the_naive_tree_at_every_size(database_url: str):
    database = Database(database_url)
    database.upgrade()
    log = LogUseCases(database, key=Ed25519PrivateKey.generate(), origin="test.example/log", clock=FixedClock(AT))
    leaves: list[bytes] = []
    roots: dict[int, bytes] = {}
    chance = random.Random(17)
    try:
        while len(leaves) < SIZE:
            batch = min(SIZE - len(leaves), chance.choice([1, 1, 2, 3, 7, 16, 33]))
            with UnitOfWork(database, write=True) as uow:
                recorded = uow.audit.append_many(AT, [("DECISION", f"s{len(leaves) + k}", {"k": k}) for k in range(batch)])
                uow.commit()
            leaves += [r.leaf_hash for r in recorded]
            assert log.integrate() == len(leaves)
            stored, note = log.checkpoint()
            signed = Checkpoint.parse(open_note(note, [log.verifier]).text)
            assert signed.size == len(leaves) and signed.root_hash == stored.root_hash == merkle.root(leaves)
            roots[len(leaves)] = signed.root_hash
        for size in roots:
            for index in {0, size // 3, size - 1}:
                found, _, proof = log.inclusion_proof(leaf_index=index, leaf_hash=None, tree_size=size)
                assert proof == merkle.inclusion_proof(index, leaves[:size]), (index, size)
            for old in {1, size // 2 or 1, size}:
                _, proof = log.consistency_proof(old, size)
                assert proof == merkle.consistency_proof(old, leaves[:size]), (old, size)
                assert merkle.verify_consistency(old, size, merkle.root(leaves[:old]), roots[size], proof)
        assert verify_audit_log(database, log.verifier).intact
    finally:
        database.dispose()


def test_an_upgraded_database_keeps_its_chain_and_receipts_as_log_entries(database_url: str):
    from tests.unit.test_receipts import receipt as made_receipt

    config = alembic_config()
    database = Database(database_url)
    try:
        with database.write_engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0005")
        receipt = made_receipt()
        with database.write_engine.begin() as connection:
            for seq, kind in enumerate(["REFERENCE_DATA", "DECISION"], start=1):
                connection.execute(sa.text(
                    "INSERT INTO audit_log (seq, at, kind, subject, payload, prev_hash, hash) VALUES (:s, :at, :k, :sub, :p, 'x', 'y')"),
                    {"s": seq, "at": "2026-03-02T15:00:00+00:00", "k": kind, "sub": f"subject-{seq}", "p": json.dumps({"n": seq})})
            connection.execute(sa.text(
                "INSERT INTO transmissions (sender, message_id, digest, action, issuing_country, certificate_number, certificate_version,"
                " sent_at, received_at, key_id, signed_bytes, signature, receipt_id, receipt_json, receipt_signature) VALUES"
                " ('MX', 'm-1', :d, 'CREATE', 'MX', 'MX26-00000001', 1, :at, :at, 'k', :b, :b, :r, :j, :sig)"),
                {"d": receipt.digest, "at": AT, "b": b"x", "r": receipt.receipt_id, "j": receipt_to_json(receipt), "sig": receipt.signature})
        database.upgrade()
        with database.read_engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT kind, subject, entry, leaf_hash FROM log_entries ORDER BY id")).fetchall()
            tip = sa.inspect(connection).has_table("audit_head")
        assert not tip
        entries = [LogEntry.decode(bytes(row[2])) for row in rows]
        assert [(e.kind, e.subject, e.facts) for e in entries[:2]] == [("REFERENCE_DATA", "subject-1", {"n": 1}), ("DECISION", "subject-2", {"n": 2})]
        assert entries[2].encode() == receipt_entry(receipt).encode()
        assert all(bytes(row[3]) == merkle.leaf_hash(bytes(row[2])) for row in rows)
        log = LogUseCases(database, key=Ed25519PrivateKey.generate(), origin="test.example/log", clock=FixedClock(AT))
        assert log.integrate() == 3
        assert verify_audit_log(database, log.verifier).intact
    finally:
        database.dispose()
