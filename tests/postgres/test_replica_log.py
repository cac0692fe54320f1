"""The transparency log with several sequencers over one PostgreSQL database: whichever replica
integrates, every entry gets exactly one index, the indices run without a gap, and every checkpoint
any replica signed verifies against the recomputed tree."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text

from contract import merkle
from contract.note import Checkpoint, NoteVerifier, open_note, raw_public_key
from ecert.v1 import log_pb2 as lpb
from ecert.v1 import log_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from server.adapters.database import Database
from server.adapters.keystore import load_or_create_log_key
from server.service.audit import verify_audit_log
from server.service.clock import FixedClock
from server.service.log import LogUseCases
from server.service.unit_of_work import UnitOfWork
from tests.processes import Deployment, envelope_now, replicas, stub, todays_certificate

pytestmark = [pytest.mark.postgres]

AT = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)


def indices(db: Engine) -> list[int | None]:
    with db.connect() as connection:
        return [row[0] for row in connection.execute(text("SELECT log_index FROM log_entries ORDER BY log_index"))]


def test_sequencers_racing_in_one_process_per_replica_keep_indices_unique_and_gapless(empty_postgres: str):
    """Two replicas' sequencers integrate in a loop while writers record entries: no index twice, none skipped."""
    key = Ed25519PrivateKey.generate()
    bases = [Database(empty_postgres) for _ in range(2)]
    bases[0].upgrade()
    logs = [LogUseCases(d, key=key, origin="test.example/log", clock=FixedClock(AT)) for d in bases]
    stop = threading.Event()
    outcomes: list[int] = []
    errors: list[BaseException] = []

    def sequence(log: LogUseCases) -> None:
        while not stop.is_set():
            try:
                outcomes.append(log.integrate())
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
                return

    def write(database: Database, writer: int) -> None:
        for n in range(60):
            with UnitOfWork(database, write=True) as uow:
                uow.audit.append_many(AT, [("DECISION", f"writer-{writer}/{n}/{k}", {"n": n}) for k in range(1 + n % 3)])
                uow.commit()

    sequencers = [threading.Thread(target=sequence, args=(log,)) for log in logs]
    writers = [threading.Thread(target=write, args=(bases[w % 2], w)) for w in range(4)]
    for thread in (*sequencers, *writers):
        thread.start()
    for thread in writers:
        thread.join(120)
    time.sleep(0.2)
    stop.set()
    for thread in sequencers:
        thread.join(60)
    assert not errors, errors
    assert -1 in outcomes  # the sequencers did meet: one found the other holding the lock
    logs[0].integrate()
    total = 4 * sum(1 + n % 3 for n in range(60))
    with bases[0].read_engine.connect() as connection:
        stored = [row[0] for row in connection.execute(text("SELECT log_index FROM log_entries ORDER BY log_index"))]
    assert stored == list(range(total))
    result = verify_audit_log(bases[0], logs[0].verifier)
    assert result.intact and result.records == total, result.problems
    for database in bases:
        database.dispose()


@pytest.mark.slow
def test_two_serving_replicas_integrate_one_log(deployment: Deployment, db: Engine):
    count = 24
    with replicas(deployment, 2, ECERT_LOG_INTERVAL_MS="20") as services:
        channels = [stub(s.target) for s in services]
        answers: list[tpb.SubmitCertificateResponse] = []

        def submit(n: int) -> None:
            service = channels[n % 2][1]
            env = envelope_now(deployment.partner, todays_certificate(f"MX26-{n:08d}"), message_id=f"log-{n}")
            answers.append(service.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env), timeout=30))

        threads = [threading.Thread(target=submit, args=(n,)) for n in range(1, count + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(answers) == count
        logs = [log_pb2_grpc.LogServiceStub(channel) for channel, _ in channels]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and None in indices(db):
            time.sleep(0.1)
        assert indices(db) == list(range(len(indices(db))))  # all integrated, each index once, no gap
        checkpoint = logs[0].GetCheckpoint(lpb.GetCheckpointRequest())
        verifier = NoteVerifier.parse(checkpoint.log_verifier_key)
        assert logs[1].GetCheckpoint(lpb.GetCheckpointRequest()).log_verifier_key == checkpoint.log_verifier_key  # one shared key
        root = Checkpoint.parse(open_note(checkpoint.note, [verifier]).text).root_hash
        for n, answer in enumerate(answers):
            proof = logs[n % 2].GetInclusionProof(lpb.GetInclusionProofRequest(leaf_hash=answer.log_leaf_hash, tree_size=checkpoint.tree_size))
            assert merkle.verify_inclusion(proof.leaf_index, proof.tree_size, answer.log_leaf_hash, list(proof.hashes), root)
        for channel, _ in channels:
            channel.close()
    key = load_or_create_log_key(deployment.receipt_key.parent / "log-signing.pem")
    database = Database(deployment.database_url)
    try:
        result = verify_audit_log(database, NoteVerifier("ecert.cbp.example/log", raw_public_key(key.public_key())))
    finally:
        database.dispose()
    assert result.intact, result.problems
