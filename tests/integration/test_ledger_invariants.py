"""The quota ledger's invariants under races, through a real server on each engine (issue 12).

Each test races what an outsider raced against main at 99d2b8c and then checks the stored state, not
the answers alone: every level 0 <= charged <= limit and equal to its ledger and its live grants,
every certificate 0 <= used <= quantity and equal to what its live claims hold (the reconciler), each
claim released at most once. On PostgreSQL the server's worker threads run the calls at the same
time on separate connections; on SQLite the single writer makes them serial (the same assertions hold).
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import grpc
import pytest
from sqlalchemy import text

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from server.app import create_server
from server.domain.errors import DomainError
from server.service.clock import FixedClock
from server.service.reconcile import reconcile_ledger
from tests.factories import NOW, certificate, claim_line, envelope, small_levels
from tests.grpc_errors import rich_error

ROUNDS = 12
TPL1 = "9823.53.01"  # knit shirts: 6.0 SME a dozen in the packaged (illustrative) factor table
PREFERENTIAL, PARTIAL, MFN, QUEUED = (
    mpb.CLAIM_DECISION_PREFERENTIAL, mpb.CLAIM_DECISION_PARTIAL, mpb.CLAIM_DECISION_MFN_REQUIRED, mpb.CLAIM_DECISION_QUEUED,
)


def match_retrying_busy(match, line: mpb.EntrySummaryLine) -> mpb.ClaimResult:  # type: ignore[no-untyped-def]
    """MatchClaim as a well-behaved client sends it: a `DATABASE_BUSY` refusal (the writer was taken
    longer than a call may wait for it, e.g. by a reference load) is retried, as its message says."""
    for attempt in range(50):
        try:
            return match.MatchClaim(mpb.MatchClaimRequest(line=line)).result
        except grpc.RpcError as error:
            if rich_error(error).reason != "DATABASE_BUSY":
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("still busy after 50 tries")


def transmit_all(transmission, partner, numbers: list[str], sent_at: dt.datetime = NOW, **fields: object) -> None:  # type: ignore[no-untyped-def]
    for n, number in enumerate(numbers):
        cert = certificate(number, **fields)
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(
            envelope=envelope(partner.signer, cert, message_id=f"inv-{number}-{n}", sent_at=sent_at)))


def assert_balanced(server) -> None:  # type: ignore[no-untyped-def]
    result = reconcile_ledger(server.database)
    assert result.drifts == [] and result.levels > 0 and result.certificates > 0


def scalar(server, sql: str, **params: object):  # type: ignore[no-untyped-def]
    with server.database.read_engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def at_once(*calls):  # type: ignore[no-untyped-def]
    """Run the calls on separate threads released together; each one's result or gRPC error."""
    barrier = threading.Barrier(len(calls))

    def run(call):  # type: ignore[no-untyped-def]
        barrier.wait(timeout=30)
        try:
            return call()
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def cancel(match, line: mpb.EntrySummaryLine):  # type: ignore[no-untyped-def]
    return lambda: match.ReverseClaim(mpb.ReverseClaimRequest(
        entry_number=line.entry_number, line_number=line.line_number, kind=mpb.REVERSAL_KIND_CANCELED, reason="race"))


def correct(match, line: mpb.EntrySummaryLine, quantity: str):  # type: ignore[no-untyped-def]
    corrected = mpb.EntrySummaryLine()
    corrected.CopyFrom(line)
    corrected.quantity = quantity
    return lambda: match.ReverseClaim(mpb.ReverseClaimRequest(
        entry_number=line.entry_number, line_number=line.line_number, kind=mpb.REVERSAL_KIND_CORRECTED, corrected_line=corrected))


# -- finding 1: a claim reversed twice at once is released once ---------------------------------------


def test_a_claim_canceled_twice_at_once_is_released_once(server, match, transmission, partner):  # type: ignore[no-untyped-def]
    # Finding 1: two CANCELED reversals of one line at the same moment both gave back its charge (10 of
    # 20 rounds on PostgreSQL), and the loser often got INTERNAL.
    server.use_cases.references.load(small_levels("double-cancel", {TPL1: "6000"}))
    transmit_all(transmission, partner, ["MX26-00000001"])
    for n in range(ROUNDS):
        line = claim_line(100 + n, quantity="100")
        assert match.MatchClaim(mpb.MatchClaimRequest(line=line)).result.decision == PREFERENTIAL
        first, second = at_once(cancel(match, line), cancel(match, line))
        # Both callers are answered with the one reversal: the winner's, and its replay.
        assert not isinstance(first, grpc.RpcError) and not isinstance(second, grpc.RpcError), (first, second)
        assert first.reversed.claim_id == second.reversed.claim_id and first.reversed.reversed
    assert scalar(server, "SELECT charged FROM quota_usage WHERE tpl_number = :t AND quota_year = 2026", t=TPL1) == 0
    reversals = scalar(server, "SELECT count(*) FROM quota_ledger WHERE kind = 'REVERSAL' AND tpl_number = :t", t=TPL1)
    assert reversals == ROUNDS
    assert scalar(server, "SELECT used_quantity FROM certificates") == 0
    assert_balanced(server)


def test_a_cancellation_racing_a_correction_leaves_one_live_claim_charged_once(server, match, transmission, partner):  # type: ignore[no-untyped-def]
    # Finding 1: a cancellation racing a correction left 7,140-7,200 SME of live grants on a 6,000 level.
    server.use_cases.references.load(small_levels("cancel-correct", {TPL1: "6000"}))
    transmit_all(transmission, partner, ["MX26-00000001"])
    outcomes: Counter[str] = Counter()
    for n in range(ROUNDS):
        line = claim_line(200 + n, quantity="100")
        assert match.MatchClaim(mpb.MatchClaimRequest(line=line)).result.decision == PREFERENTIAL
        canceled, corrected = at_once(cancel(match, line), correct(match, line, "80"))
        assert not isinstance(canceled, grpc.RpcError), canceled  # first, or it cancels the corrected revision
        if isinstance(corrected, grpc.RpcError):
            error = rich_error(corrected)
            assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CLAIM_ALREADY_REVERSED")
            outcomes["canceled first"] += 1
        else:
            assert corrected.corrected.decision == PREFERENTIAL
            outcomes["corrected first"] += 1
        live = scalar(server, "SELECT count(*) FROM claims WHERE entry_number = :e AND reversed_at IS NULL", e=line.entry_number)
        assert live == 0  # either way, the cancellation came last
    assert sum(outcomes.values()) == ROUNDS
    assert scalar(server, "SELECT charged FROM quota_usage WHERE tpl_number = :t AND quota_year = 2026", t=TPL1) == 0
    assert_balanced(server)


# -- finding 3: a limit lowered while claims flow never ends below what is charged --------------------


def test_a_limit_lowered_while_claims_flow_never_ends_below_what_is_charged(server, match, transmission, partner):  # type: ignore[no-untyped-def]
    # Finding 3: `ecert reference load` with a lower limit during a claim storm left charged above the
    # new limit (2 of 3 loads on PostgreSQL): the check read `charged` unlocked, then wrote the limit.
    tpl4, fabric = "9823.53.04", {"tpl_number": "9823.53.04", "htsus_number": "5208.12.4020", "unit": "M2"}
    server.use_cases.references.load(small_levels("limits-0", {tpl4: "3000", "9823.53.03": "100000"}))
    transmit_all(transmission, partner, [f"MX26-0000030{n}" for n in range(4)], quantity="1000", **fabric)
    lines = [claim_line(300 + n, certificate_number=f"MX26-0000030{n % 4}", quantity="7", **fabric) for n in range(240)]
    loads: Counter[str] = Counter()

    def lower_and_raise() -> None:
        for n, limit in enumerate(["600", "2500", "900", "2000", "1200", "1500"] * 2):
            for attempt in range(50):
                try:
                    server.use_cases.references.load(small_levels(f"limits-{n + 1}", {tpl4: limit, "9823.53.03": "100000"}))
                    loads["loaded"] += 1
                except DomainError as error:
                    if error.reason == "DATABASE_BUSY":  # SQLite's one writer was taken too long: retried, as an operator would
                        time.sleep(0.05 * (attempt + 1))
                        continue
                    assert error.reason == "LIMIT_BELOW_CHARGED"
                    loads["refused"] += 1
                break

    with ThreadPoolExecutor(17) as pool:
        loader = pool.submit(lower_and_raise)
        results = list(pool.map(lambda line: match_retrying_busy(match, line), lines))
        loader.result()
    assert sum(loads.values()) == 12
    limit, charged = map(Decimal, (
        scalar(server, 'SELECT "limit" FROM quota_levels WHERE tpl_number = :t AND quota_year = 2026', t=tpl4),
        scalar(server, "SELECT charged FROM quota_usage WHERE tpl_number = :t AND quota_year = 2026", t=tpl4),
    ))
    assert 0 <= charged <= limit * 1_000_000  # raw micro-units
    assert sum(Decimal(r.granted_measure) for r in results) * 1_000_000 == charged
    assert_balanced(server)


def test_a_limit_lowered_while_a_charge_is_in_flight_waits_for_it_and_is_refused(server):  # type: ignore[no-untyped-def]
    # Finding 3, made deterministic: a charge of 700 SME is in flight (its transaction holds the level)
    # when a reference load lowers the limit to 500. At 99d2b8c the load read `charged` (0, the charge
    # not yet committed), then wrote the limit once the charge committed: 700 charged on a 500 limit.
    tpl4 = "9823.53.04"
    server.use_cases.references.load(small_levels("inflight-0", {tpl4: "1000", "9823.53.03": "100000"}))
    in_flight = server.database.write_engine.connect()
    transaction = in_flight.begin()
    in_flight.execute(text("UPDATE quota_levels SET charged = charged + 700000000 WHERE tpl_number = :t AND quota_year = 2026"), {"t": tpl4})
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(server.use_cases.references.load, small_levels("inflight-1", {tpl4: "500", "9823.53.03": "100000"}))
        threading.Event().wait(0.5)  # the load is waiting for the level (PostgreSQL) or the writer (SQLite)
        transaction.commit()
        in_flight.close()
        with pytest.raises(DomainError) as refused:
            load.result(timeout=30)
    assert refused.value.reason == "LIMIT_BELOW_CHARGED"
    limit = scalar(server, 'SELECT "limit" FROM quota_levels WHERE tpl_number = :t AND quota_year = 2026', t=tpl4)
    assert limit == 1000 * 1_000_000  # nothing of the refused version was stored


# -- finding 2: nothing is charged before its period opens ---------------------------------------------


def test_next_years_level_is_not_charged_before_it_opens(server, match, transmission, partner, clock):  # type: ignore[no-untyped-def]
    # Finding 2: on 29 November a claim for goods imported in January of next year, its filing, arrival
    # and payment in January too, was charged at once. Its instants are now refused as future ones; a
    # claim presented today for goods dated next year gets no quota status: it was presented before the
    # period's opening date (quota bulletins, QB 24-111).
    clock.at = dt.datetime(2026, 11, 29, 15, tzinfo=dt.timezone.utc)
    transmit_all(transmission, partner, ["MX27-00000001"], sent_at=clock.at,
                 quota_year=2027, issue_date="2026-11-20", last_valid_date="2027-12-31")
    january = dt.datetime(2027, 1, 5, 15, tzinfo=dt.timezone.utc)
    ahead = claim_line(1, certificate_number="MX27-00000001", date_of_importation="2027-01-05",
                       filed_at=january, arrived_at=january, paid_at=january)
    with pytest.raises(grpc.RpcError) as caught:
        match.MatchClaim(mpb.MatchClaimRequest(line=ahead))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INSTANT_IN_FUTURE")
    assert set(error.fields) == {"line.filed_at", "line.arrived_at", "line.paid_at"}
    early = claim_line(2, certificate_number="MX27-00000001", date_of_importation="2027-01-05",
                       filed_at=clock.at - dt.timedelta(hours=2), arrived_at=clock.at - dt.timedelta(hours=1), paid_at=clock.at)
    result = match.MatchClaim(mpb.MatchClaimRequest(line=early)).result
    assert (result.decision, list(result.reasons), result.granted_quantity) == (MFN, ["PRESENTED_BEFORE_OPENING"], "0")
    assert scalar(server, "SELECT count(*) FROM quota_ledger WHERE quota_year = 2027") == 0
    assert scalar(server, "SELECT coalesce(sum(charged), 0) FROM quota_usage WHERE quota_year = 2027") == 0
    # A post-importation claim for goods not yet entered is refused, not charged.
    with pytest.raises(grpc.RpcError) as caught:
        match.FilePostImportationClaim(mpb.FilePostImportationClaimRequest(line=claim_line(
            3, certificate_number="MX27-00000001", date_of_importation="2027-01-05",
            filed_at=clock.at - dt.timedelta(hours=2), arrived_at=clock.at - dt.timedelta(hours=1), paid_at=clock.at - dt.timedelta(hours=1))))
    error = rich_error(caught.value)
    assert (error.code, error.reason, set(error.fields)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "DATE_IN_FUTURE", {"line.date_of_importation"})
    # A claim of this year presented 25 days ahead is refused, not ranked by that time.
    later = clock.at + dt.timedelta(days=25)
    with pytest.raises(grpc.RpcError) as caught:
        match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(4, date_of_importation="2026-11-28", paid_at=later)))
    assert rich_error(caught.value).reason == "INSTANT_IN_FUTURE"
    assert scalar(server, "SELECT count(*) FROM claims") == 1


# -- finding 5: quantities that could never be decided are refused up front -----------------------------


@pytest.mark.parametrize(("changes", "reason"), [
    ({"quantity": "0.000001"}, "QUANTITY_TOO_PRECISE"),  # x 20.1 SME/doz: seven decimal places
    ({"quantity": "999999999999"}, "QUANTITY_TOO_LARGE"),  # x 20.1: beyond what a balance can hold
    ({"quantity": "1000000000000"}, "QUANTITY_TOO_LARGE"),
    ({"quantity": "1.0000001"}, "QUANTITY_TOO_PRECISE"),
    ({"date_of_importation": "9999-12-31"}, "DATE_OUT_OF_RANGE"),
])
def test_unstorable_quantities_and_dates_are_invalid_arguments_and_nothing_is_stored(server, match, changes, reason):  # type: ignore[no-untyped-def]
    # Finding 5: each of these ended INTERNAL on every path (MatchClaim, CheckClaim, post-importation).
    shirts = {"htsus_number": "6205.20.2016", "certificate_number": "MX26-00000009"}  # category 340: 20.1 SME a dozen
    before = scalar(server, "SELECT count(*) FROM log_entries")
    for call in (
        lambda line: match.MatchClaim(mpb.MatchClaimRequest(line=line)),
        lambda line: match.CheckClaim(mpb.CheckClaimRequest(line=line)),
        lambda line: match.FilePostImportationClaim(mpb.FilePostImportationClaimRequest(line=line)),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(claim_line(7, **{**shirts, **changes}))
        error = rich_error(caught.value)
        field = "line.date_of_importation" if "date_of_importation" in changes else "line.quantity"
        assert (error.code, error.reason, list(error.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, reason, [field])
    assert scalar(server, "SELECT count(*) FROM claims") == 0
    assert scalar(server, "SELECT count(*) FROM log_entries") == before


# -- finding 4: a replica whose clock lags neither strands queued claims nor races the opening -----------


def test_a_lagging_replica_neither_strands_queued_claims_nor_races_the_opening(server, settings, match, transmission, partner, clock):  # type: ignore[no-untyped-def]
    # Finding 4: with one replica 30 s behind, claims it queued after the batch was allocated stayed
    # QUEUED forever, and cancellations of queued claims racing the allocation left levels charged for
    # reversed claims. Here replica B lags 30 s while A opens 2027 and B files claims and cancels
    # queued ones at the same time.
    opening = dt.datetime(2027, 1, 4, 17, tzinfo=dt.timezone.utc)  # the 2027 opening window closes (noon Eastern)
    clock.at = opening - dt.timedelta(minutes=10)
    server.use_cases.references.load(small_levels("lag", {TPL1: "6000"}, years=(2026, 2028)))
    numbers = [f"MX27-0000010{n}" for n in range(4)]
    transmit_all(transmission, partner, numbers, sent_at=clock.at, quota_year=2027, issue_date="2026-12-20", last_valid_date="2027-12-31")
    queued_lines = [claim_line(400 + n, certificate_number=numbers[n % 4], quantity="100", date_of_importation="2027-01-01",
                               filed_at=clock.at, arrived_at=clock.at, paid_at=clock.at) for n in range(16)]
    for line in queued_lines:
        assert match.MatchClaim(mpb.MatchClaimRequest(line=line)).result.decision == QUEUED
    lagging = FixedClock(opening - dt.timedelta(seconds=30))
    replica = create_server(settings, address="127.0.0.1:0", clock=lagging)
    try:
        from ecert.v1 import match_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
            lagging_match = match_pb2_grpc.MatchServiceStub(channel)
            clock.at = opening + dt.timedelta(seconds=1)
            lagging.at = clock.at - dt.timedelta(seconds=30)
            late_lines = [claim_line(500 + n, certificate_number=numbers[n % 4], quantity="50", date_of_importation="2027-01-01",
                                     filed_at=lagging.at, arrived_at=lagging.at, paid_at=lagging.at) for n in range(8)]
            with ThreadPoolExecutor(12) as pool:
                opened = pool.submit(server.use_cases.claims.allocate_due_openings)
                canceled = list(pool.map(lambda line: cancel(lagging_match, line)(), queued_lines[::3]))
                late = list(pool.map(lambda line: lagging_match.MatchClaim(mpb.MatchClaimRequest(line=line)).result, late_lines))
                opened.result()
    finally:
        replica.stop(0)
    assert all(c.reversed.reversed for c in canceled)
    # A claim the lagging replica filed after the opening began is never left QUEUED: either it queued
    # before the batch summed the queue (and was decided in it) or it was decided after the batch.
    assert scalar(server, "SELECT count(*) FROM claims WHERE decision = 'QUEUED' AND reversed_at IS NULL") == 0
    # (After the opening the level is past its critical share: late claims may wait for the cutoff batch.)
    assert all(r.decision in (PREFERENTIAL, PARTIAL, MFN, QUEUED, mpb.CLAIM_DECISION_PENDING) for r in late)
    charged = scalar(server, "SELECT charged FROM quota_usage WHERE tpl_number = :t AND quota_year = 2027", t=TPL1)
    assert 0 <= charged <= 6000 * 1_000_000
    # A claim canceled while it waited was allocated nothing; one canceled after the batch gave back all.
    unbalanced = scalar(server, "SELECT count(*) FROM (SELECT l.claim_id FROM quota_ledger l JOIN claims c ON c.claim_id = l.claim_id"
                                " WHERE c.reversed_at IS NOT NULL GROUP BY l.claim_id HAVING sum(l.delta) <> 0) AS t")
    assert unbalanced == 0
    assert_balanced(server)


# -- a claim's charge holds only for the certificate version it matched ------------------------------------


def test_a_certificate_is_charged_only_at_the_version_the_claim_matched(server, transmission, partner):  # type: ignore[no-untyped-def]
    # A claim reads the certificate, then charges it: an amendment stored in between (a new version)
    # makes the conditional charge match nothing, and the claim is decided again against it.
    from server.service.transactions import run_in_transaction
    from tests.factories import REPLACE

    transmit_all(transmission, partner, ["MX26-00000001"])
    amended = certificate("MX26-00000001", importer_of_record="98-765432100")
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(
        partner.signer, amended, message_id="amend-1", action=REPLACE, replaces_version=1)))

    def charge(version: int):  # type: ignore[no-untyped-def]
        return lambda uow: uow.certificate_ledger.charge("MX", "MX26-00000001", Decimal(10), entries=1, version=version)

    assert run_in_transaction(server.database, charge(1)) is None  # matched version 1; version 2 is on file
    assert run_in_transaction(server.database, charge(2)) == Decimal(1190)  # not committed: rolled back
    assert scalar(server, "SELECT used_quantity FROM certificates") == 0


# -- an entry number belongs to one importer, even when two file its first lines at once ---------------------


def test_two_importers_filing_one_new_entry_number_at_once_never_both_keep_it(server, match, transmission, partner):  # type: ignore[no-untyped-def]
    # The check read the entry's claims, then inserted a claim: two importers filing the first lines of
    # one new entry at once could both pass it. The entries table's primary key decides now.
    transmit_all(transmission, partner, ["MX26-00000001"])
    transmit_all(transmission, partner, ["MX26-00000002"], importer_of_record="98-765432100")
    for n in range(ROUNDS):
        ours = claim_line(700 + n, line_number=1)
        theirs = claim_line(700 + n, line_number=2, certificate_number="MX26-00000002", importer_of_record="98-765432100")
        answers = at_once(*(lambda line=line: match.MatchClaim(mpb.MatchClaimRequest(line=line)).result for line in (ours, theirs)))
        refused = [a for a in answers if isinstance(a, grpc.RpcError)]
        assert len(refused) == 1, answers
        assert (rich_error(refused[0]).code, rich_error(refused[0]).reason) == (grpc.StatusCode.ALREADY_EXISTS, "ENTRY_NUMBER_REUSED")
        importers = scalar(server, "SELECT count(DISTINCT importer_of_record) FROM claims WHERE entry_number = :e", e=ours.entry_number)
        assert importers == 1
