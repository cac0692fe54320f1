"""Several `ecert serve` processes over one PostgreSQL database, racing on the same certificates.

Every race must end with exactly one winner per step, clean refusals for the others, and the stored
rows agreeing with the answers: never two versions with one number, never a message stored twice.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, text

from ecert.v1 import transmission_pb2 as tpb
from tests.factories import CREATE, REPLACE
from tests.grpc_errors import rich_error
from tests.processes import Deployment, envelope_now, replicas, stub, todays_certificate

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPLICAS = 2
CONTENDERS = 6  # concurrent callers per race, spread over the replicas


def race(targets: list[str], calls: list[Callable[[Any], Any]]) -> list[Any]:
    """Run each call at the same instant against the replicas in turn; results or (code, reason)."""
    channels = [stub(t) for t in targets]
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        service = channels[index % len(channels)][1]
        barrier.wait()
        try:
            results[index] = calls[index](service)
        except grpc.RpcError as error:
            info = rich_error(error)
            results[index] = (info.code, info.reason)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for channel, _ in channels:
        channel.close()
    return results


def submit(env: tpb.SignedEnvelope) -> Callable[[Any], tpb.SubmitCertificateResponse]:
    return lambda service: service.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env), timeout=30)


def count(db: Engine, sql: str, **params: object) -> int:
    with db.connect() as connection:
        return int(connection.execute(text(sql), params).scalar_one())


def test_concurrent_replaces_across_replicas_have_one_winner_per_version(deployment: Deployment, db: Engine):
    number, steps = "MX26-00000001", 8
    with replicas(deployment, REPLICAS) as services:
        targets = [s.target for s in services]
        first = race(targets, [submit(envelope_now(deployment.partner, todays_certificate(number), message_id="c-0"))])
        assert first[0].receipt.certificate_version == 1
        for version in range(1, steps + 1):
            calls = [
                submit(envelope_now(deployment.partner, todays_certificate(number, quantity=str(100 * version + n)),
                                message_id=f"r-{version}-{n}", action=REPLACE, replaces_version=version))
                for n in range(CONTENDERS)
            ]
            results = race(targets, calls)
            winners = [r for r in results if isinstance(r, tpb.SubmitCertificateResponse)]
            losers = Counter(r for r in results if not isinstance(r, tpb.SubmitCertificateResponse))
            assert len(winners) == 1, results
            assert winners[0].receipt.certificate_version == version + 1
            assert losers == {(grpc.StatusCode.ABORTED, "STALE_VERSION"): CONTENDERS - 1}, results
    assert count(db, "SELECT current_version FROM certificates WHERE certificate_number = :n", n=number) == steps + 1
    assert count(db, "SELECT count(*) FROM certificate_versions") == steps + 1
    assert count(db, "SELECT count(*) FROM transmissions") == steps + 1


def test_concurrent_creates_of_one_number_across_replicas_have_one_winner(deployment: Deployment, db: Engine):
    numbers = [f"MX26-{n:08d}" for n in range(5)]
    with replicas(deployment, REPLICAS) as services:
        targets = [s.target for s in services]
        for number in numbers:
            calls = [
                submit(envelope_now(deployment.partner, todays_certificate(number, quantity=str(10 + n)),
                                message_id=f"{number}-{n}", action=CREATE))
                for n in range(CONTENDERS)
            ]
            results = race(targets, calls)
            winners = [r for r in results if isinstance(r, tpb.SubmitCertificateResponse)]
            losers = Counter(r for r in results if not isinstance(r, tpb.SubmitCertificateResponse))
            assert len(winners) == 1 and winners[0].receipt.certificate_version == 1, results
            assert losers == {(grpc.StatusCode.FAILED_PRECONDITION, "CERTIFICATE_ALREADY_EXISTS"): CONTENDERS - 1}, results
    assert count(db, "SELECT count(*) FROM certificates") == len(numbers)
    assert count(db, "SELECT count(*) FROM certificate_versions") == len(numbers)
    assert count(db, "SELECT count(*) FROM transmissions") == len(numbers)


def test_one_message_sent_to_every_replica_at_once_is_stored_once_and_answered_alike(deployment: Deployment, db: Engine):
    messages = 5
    with replicas(deployment, REPLICAS) as services:
        targets = [s.target for s in services]
        for n in range(messages):
            env = envelope_now(deployment.partner, todays_certificate(f"MX26-{n:08d}"), message_id=f"dup-{n}")
            results = race(targets, [submit(env)] * CONTENDERS)
            assert all(isinstance(r, tpb.SubmitCertificateResponse) for r in results), [r for r in results if isinstance(r, tuple)]
            assert len({r.receipt.SerializeToString() for r in results}) == 1  # the same signed receipt
            assert sum(not r.replayed for r in results) <= 1
    assert count(db, "SELECT count(*) FROM transmissions") == messages
    assert count(db, "SELECT count(*) FROM certificate_versions") == messages
