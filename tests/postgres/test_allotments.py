"""Per-replica allotments on PostgreSQL (server/service/allotments.py), two in-process replicas on one
database: claims on different certificates of the same open level share no lock, and charges plus
allotments never exceed the level."""
from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import grpc
import pytest
from sqlalchemy import text

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from server.adapters.claim_repository import ClaimRepository
from server.app import RunningServer, create_server
from server.service.reconcile import reconcile_ledger
from tests.factories import certificate, claim_line, envelope

pytestmark = pytest.mark.postgres

TPL = "9823.53.01"  # the TPL of the test claims (tests/factories.py, claim_line)


@pytest.fixture(params=["postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def replicas(settings, clock) -> Iterator[list[RunningServer]]:  # type: ignore[no-untyped-def]
    first = create_server(settings, address="127.0.0.1:0", clock=clock)
    second = create_server(dataclasses.replace(settings, data_dir=settings.data_dir.parent / "second"), address="127.0.0.1:0", clock=clock)
    yield [first, second]
    for running in (first, second):
        running.stop(0)


def _stubs(running: RunningServer) -> tuple[grpc.Channel, match_pb2_grpc.MatchServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    return channel, match_pb2_grpc.MatchServiceStub(channel)


def _transmit(running: RunningServer, partner, numbers: list[str]) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = transmission_pb2_grpc.TransmissionServiceStub(channel)
        for number in numbers:
            stub.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, certificate(number), message_id=f"al-{number}")))


def test_a_claim_held_open_at_one_replica_does_not_delay_a_claim_on_another_certificate_at_the_other(replicas, partner, monkeypatch):  # type: ignore[no-untyped-def]
    """Issue 17 item 6. Without allotments both claims charge the level row and the second waits for
    the first to commit; with them each charges its own replica's allotment."""
    a, b = replicas
    assert a.use_cases.claims.allotments.enabled and b.use_cases.claims.allotments.enabled  # auto: on with PostgreSQL
    _transmit(a, partner, ["MX26-00000001", "MX26-00000002", "MX26-00000003", "MX26-00000004"])
    channel_a, match_a = _stubs(a)
    channel_b, match_b = _stubs(b)
    try:
        # Warm both replicas' allotments (the first claim at each carves its room, a short transaction).
        match_a.MatchClaim(mpb.MatchClaimRequest(line=claim_line(1, certificate_number="MX26-00000003", quantity="1")), timeout=30)
        match_b.MatchClaim(mpb.MatchClaimRequest(line=claim_line(2, certificate_number="MX26-00000004", quantity="1")), timeout=30)

        # Replica A's next claim stops inside its transaction after charging (certificate, allotment, ledger).
        inside, release = threading.Event(), threading.Event()
        add = ClaimRepository.add

        def held_open(self, record):  # type: ignore[no-untyped-def]
            if record.certificate_number == "MX26-00000001":
                inside.set()
                release.wait(30)
            add(self, record)

        monkeypatch.setattr(ClaimRepository, "add", held_open)
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(match_a.MatchClaim, mpb.MatchClaimRequest(line=claim_line(3, certificate_number="MX26-00000001")), timeout=60)
            assert inside.wait(30), "replica A's claim never reached its charge"
            began = time.monotonic()
            other = match_b.MatchClaim(mpb.MatchClaimRequest(line=claim_line(4, certificate_number="MX26-00000002")), timeout=10)
            waited = time.monotonic() - began
            assert not held.done(), "replica A's claim must still be open while B's is decided"
            release.set()
            first = held.result(timeout=30)
    finally:
        channel_a.close()
        channel_b.close()
    assert other.result.decision == mpb.CLAIM_DECISION_PREFERENTIAL and first.result.decision == mpb.CLAIM_DECISION_PREFERENTIAL
    assert waited < 5, f"replica B's claim waited {waited:.1f} s for replica A's open transaction"
    _assert_within_limits(a)
    assert reconcile_ledger(a.database).drifts == []


def test_claims_at_two_replicas_use_their_allotments_and_fold_back_exactly(replicas, partner):  # type: ignore[no-untyped-def]
    """Many claims at both replicas, then every allotment folded back (as the idle timer does): the
    level's own row then holds exactly what the claims were granted; at no point are charges plus
    allotments above the limit (a constraint), and reconciliation finds no drift."""
    a, b = replicas
    numbers = [f"MX26-000001{n:02d}" for n in range(8)]
    _transmit(a, partner, numbers)
    channels = [_stubs(a), _stubs(b)]
    lines = [claim_line(100 + n, certificate_number=numbers[n % 8], quantity="3") for n in range(64)]
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda p: channels[p[0] % 2][1].MatchClaim(mpb.MatchClaimRequest(line=p[1]), timeout=60), enumerate(lines)))
    finally:
        for channel, _ in channels:
            channel.close()
    granted = sum(Decimal(r.result.granted_measure) for r in results)
    assert granted > 0 and all(r.result.decision == mpb.CLAIM_DECISION_PREFERENTIAL for r in results)
    with a.database.write_engine.connect() as connection:
        holders = connection.execute(text("SELECT holder FROM quota_allotments WHERE used > 0")).scalars().all()
    processes = {a.use_cases.claims.allotments.holder, b.use_cases.claims.allotments.holder}
    assert {holder.split(".")[0] for holder in holders} == processes, "each replica charged its own allotments"
    _assert_within_limits(a)
    for running in (a, b):
        running.use_cases.claims.allotments.stale = dt.timedelta(0)  # as the idle timer does, at once
        running.use_cases.claims.allotments.return_idle()
    with a.database.write_engine.connect() as connection:
        charged, escrowed = connection.execute(
            text("SELECT charged, escrowed FROM quota_levels WHERE tpl_number = :t AND quota_year = 2026"), {"t": TPL}
        ).one()
        left = connection.execute(text("SELECT count(*) FROM quota_allotments WHERE room > 0 OR used > 0")).scalar_one()
    assert (escrowed, left) == (0, 0)
    assert Decimal(charged) / 1_000_000 == granted
    assert reconcile_ledger(a.database).drifts == []


def _assert_within_limits(running: RunningServer) -> None:
    with running.database.write_engine.connect() as connection:
        rows = connection.execute(text(
            'SELECT l.charged, l.escrowed, l."limit", coalesce((SELECT sum(room) + sum(used) FROM quota_allotments a'
            " WHERE a.tpl_number = l.tpl_number AND a.quota_year = l.quota_year), 0) FROM quota_levels l"
        )).all()
    for charged, escrowed, limit, allotted in rows:
        assert 0 <= charged and charged + escrowed <= limit
        assert escrowed == allotted, "the level escrows exactly what its allotments hold"
