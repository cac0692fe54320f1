"""The opening allocation as stored: every queued claim decided, and the certificates, levels, quota
ledger and audit chain left exactly as deciding them one after another (in queue order) would leave
them. On a real server over both engines.

The scenario mixes what the allocation must handle at once: an oversubscribed TPL (one rate for
all, a claim rounded down to nothing, two claims on one certificate), two TPLs under an aggregate
ceiling that binds, and a TPL with room for everyone.
"""
from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal

import grpc
import pytest
from sqlalchemy import select

from contract.log_entry import LogEntry
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from server.adapters.orm import CertificateRow, ClaimRow, LogEntryRow, QuotaLedgerRow, QuotaLevelRow
from server.domain.quantity import format_quantity
from server.service import batches as batches_service
from server.service.audit import verify_audit_log
from tests.factories import certificate, claim_line, envelope, run_cutoff_batch, small_levels
from tests.grpc_errors import rich_error

YEAR = 2027
# In the 2027 opening window (the first business day, Monday 4 January, 00:00 to 12:00 noon Eastern),
# and after it.
QUEUED_AT = dt.datetime(2027, 1, 4, 15, tzinfo=dt.timezone.utc)
OPENED_AT = dt.datetime(2027, 1, 4, 18, tzinfo=dt.timezone.utc)
# TPL 3 is the aggregate ceiling of TPLs 4 and 5.
LIMITS = {"9823.53.01": "100000", "9823.53.02": "1000", "9823.53.03": "1500", "9823.53.04": "1000", "9823.53.05": "10000"}
GOODS = {  # tpl -> (HTSUS, unit)
    "9823.53.01": ("6109.10.0012", "DOZ"),
    "9823.53.02": ("6110.11.0030", "DOZ"),
    "9823.53.04": ("5208.52.3035", "M2"),
    "9823.53.05": ("6006.22.9080", "KG"),
}
# (certificate, tpl, quantity asked): TPL 2 asks 181 dozen women's wool sweaters (category 446, 30.8 SME a
# dozen in the packaged table), 5574.8 SME of 1000 (the 1-dozen claim rounds down to
# nothing); TPL 4 and 5 fit their own levels but not TPL 3 together; TPL 1 has room.
CLAIMS = [
    ("MX27-00000001", "9823.53.02", "100"),
    ("MX27-00000002", "9823.53.02", "50"),
    ("MX27-00000002", "9823.53.02", "30"),
    ("MX27-00000003", "9823.53.02", "1"),
    ("MX27-00000004", "9823.53.04", "800"),
    ("MX27-00000005", "9823.53.05", "100"),
    ("MX27-00000005", "9823.53.05", "7"),
    ("MX27-00000006", "9823.53.01", "40"),
    ("MX27-00000006", "9823.53.01", "60"),
]
CERTIFICATE_QUANTITY = Decimal(1000)


def _rows(server, table, *order):  # type: ignore[no-untyped-def]
    with server.database.read_engine.connect() as connection:
        return [row._asdict() for row in connection.execute(select(table.__table__).order_by(*order))]


def _queue_scenario(server, match, transmission, partner, clock) -> int:  # type: ignore[no-untyped-def]
    """The scenario's certificates and claims, queued before the 2027 opening; the log entries so far."""
    server.use_cases.references.load(small_levels("opening-scenario", LIMITS))
    clock.at = QUEUED_AT
    tpl_of = {number: tpl for number, tpl, _ in CLAIMS}
    for n, (number, tpl) in enumerate(sorted(tpl_of.items()), start=1):
        htsus, unit = GOODS[tpl]
        cert = certificate(number, tpl_number=tpl, htsus_number=htsus, unit=unit, quantity=str(CERTIFICATE_QUANTITY),
                           quota_year=YEAR, issue_date="2026-12-15", last_valid_date="2027-12-31")
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, cert, message_id=f"m-{n}", sent_at=clock.at)))
    for n, (number, tpl, quantity) in enumerate(CLAIMS, start=1):
        htsus, unit = GOODS[tpl]
        line = claim_line(n, certificate_number=number, quantity=quantity, tpl_number=tpl, htsus_number=htsus, unit=unit,
                          filed_at=clock.at, arrived_at=clock.at, paid_at=clock.at, date_of_importation="2027-01-02")
        result = match.MatchClaim(mpb.MatchClaimRequest(line=line)).result
        assert result.decision == mpb.CLAIM_DECISION_QUEUED, (tpl, result.reasons, result.mismatches)
    return len(_rows(server, LogEntryRow, LogEntryRow.id))


@pytest.fixture(params=[500, 2], ids=["one-chunk", "chunks-of-2"])
def allocated(request, server, match, transmission, partner, clock, monkeypatch):  # type: ignore[no-untyped-def]
    """The scenario queued, then the opening allocated (as the timer does), in one chunk or in many."""
    monkeypatch.setattr(batches_service, "OPENING_CHUNK", request.param)
    audit_before = _queue_scenario(server, match, transmission, partner, clock)
    clock.at = OPENED_AT
    assert server.use_cases.claims.allocate_due_openings()
    return audit_before


def test_every_queued_claim_is_decided_at_the_opening(server, allocated):  # type: ignore[no-untyped-def]
    claims = _year_claims(server)
    assert len(claims) == len(CLAIMS)
    by_tpl = defaultdict(list)
    for c in claims:
        assert c["decided_at"] == OPENED_AT
        by_tpl[c["tpl_number"]].append(c)
    # TPL 2: one rate, 1000 / 5574.8 = 0.179378...; each grant rounded down to a whole dozen
    # (100, 50, 30 and 1 dozen: 17.9, 8.97, 5.38, 0.18).
    assert {c["proration_rate"] for c in by_tpl["9823.53.02"]} == {"0.179378"}
    assert sorted(c["granted_quantity"] for c in by_tpl["9823.53.02"]) == [0, 5, 8, 17]
    nothing = next(c for c in by_tpl["9823.53.02"] if c["granted_quantity"] == 0)
    assert (nothing["decision"], json.loads(nothing["reasons"])) == ("MFN_REQUIRED", ["PRORATED", "LEVEL_FILLED"])
    # TPLs 4 and 5 each fit their own level; scaled together until their aggregate holds: 1500 / 2116.1.
    assert {c["proration_rate"] for c in by_tpl["9823.53.04"] + by_tpl["9823.53.05"]} == {"0.708851"}
    assert all(c["decision"] == "PRORATED_OFFER" for c in by_tpl["9823.53.04"] + by_tpl["9823.53.05"])
    # TPL 1 had room: granted in full, not prorated.
    assert [(c["decision"], c["proration_rate"], c["granted_quantity"]) for c in by_tpl["9823.53.01"]] == [
        ("PREFERENTIAL", "", c["claimed_quantity"]) for c in by_tpl["9823.53.01"]
    ]


def test_levels_ledger_and_balances_follow_the_queue_order(server, allocated):  # type: ignore[no-untyped-def]
    _assert_levels_and_ledger_follow_the_queue(server)


def _year_claims(server) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return [c for c in _rows(server, ClaimRow, ClaimRow.claim_id) if c["quota_year"] == YEAR]


def _assert_levels_and_ledger_follow_the_queue(server) -> None:  # type: ignore[no-untyped-def]
    claims = _year_claims(server)
    levels = {r["tpl_number"]: r for r in _rows(server, QuotaLevelRow, QuotaLevelRow.tpl_number) if r["quota_year"] == YEAR}
    aggregate_of = {t: r["aggregate"] for t, r in levels.items()}
    charged: dict[str, Decimal] = defaultdict(Decimal)
    expected_ledger = []
    for c in claims:  # the queue order
        measure = c["granted_measure"]
        tpl, aggregate = c["tpl_number"], aggregate_of[c["tpl_number"]]
        if measure > 0:
            for level in (tpl, *([aggregate] if aggregate else [])):
                charged[level] += measure
                expected_ledger.append((level, measure, c["claim_id"], "ALLOCATION"))
            assert c["level_remaining"] == levels[tpl]["limit"] - charged[tpl]
            assert c["aggregate_remaining"] == (levels[aggregate]["limit"] - charged[aggregate] if aggregate else None)
        else:
            assert (c["level_remaining"], c["aggregate_remaining"]) == (levels[tpl]["limit"] - charged[tpl], None)
    assert {t: r["charged"] for t, r in levels.items() if r["charged"]} == dict(charged)
    assert all(r["charged"] <= r["limit"] for r in levels.values())
    assert charged["9823.53.03"] == charged["9823.53.04"] + charged["9823.53.05"]
    ledger = [(r["tpl_number"], r["delta"], r["claim_id"], r["kind"]) for r in _rows(server, QuotaLedgerRow, QuotaLedgerRow.id)
              if r["quota_year"] == YEAR]
    assert ledger == expected_ledger
    assert all(r["at"] == OPENED_AT for r in _rows(server, QuotaLedgerRow, QuotaLedgerRow.id) if r["quota_year"] == YEAR)


def test_certificates_give_back_what_proration_did_not_grant(server, allocated):  # type: ignore[no-untyped-def]
    _assert_certificates_give_back_what_was_not_granted(server)


def _assert_certificates_give_back_what_was_not_granted(server) -> None:  # type: ignore[no-untyped-def]
    claims = _year_claims(server)
    certificates = {r["certificate_number"]: r for r in _rows(server, CertificateRow, CertificateRow.certificate_number)}
    # Each queued claim reserved all it asked; in queue order, each gives back what it was not granted.
    held = defaultdict(Decimal)
    for c in claims:
        held[c["certificate_number"]] += c["claimed_quantity"]
    for c in claims:
        held[c["certificate_number"]] -= c["claimed_quantity"] - c["granted_quantity"]
        assert c["certificate_remaining"] == CERTIFICATE_QUANTITY - held[c["certificate_number"]]
    for number, row in certificates.items():
        mine = [c for c in claims if c["certificate_number"] == number]
        assert row["used_quantity"] == sum(c["granted_quantity"] for c in mine)
        assert row["matched_entries"] == sum(1 for c in mine if c["granted_quantity"] > 0)


def _log_verifies(server) -> int:  # type: ignore[no-untyped-def]
    """Integrated and verified against the signed checkpoint: the number of entries."""
    server.use_cases.log.integrate()
    verification = verify_audit_log(server.database, server.use_cases.log.verifier)
    assert verification.intact, verification.problems
    return verification.records


def test_each_allocation_is_logged_in_queue_order_and_the_log_holds(server, allocated):  # type: ignore[no-untyped-def]
    claims = _year_claims(server)
    records = _rows(server, LogEntryRow, LogEntryRow.id)[allocated:]
    assert [r["kind"] for r in records] == ["ALLOCATION"] * len(claims)
    assert [r["subject"] for r in records] == [f"entry:{c['entry_number']}/{c['line_number']}#{c['revision']}" for c in claims]
    for record, c in zip(records, claims):
        facts = LogEntry.decode(record["entry"]).facts
        assert (facts["claim_id"], facts["decision"]) == (c["claim_id"], c["decision"])
        assert facts["granted"] == f"{format_quantity(c['granted_quantity'])} {c['unit']}"
        assert facts["granted_measure"] == f"{format_quantity(c['granted_measure'])} {c['measure_unit']}"
    assert _log_verifies(server) == allocated + len(records)


def _stop_at_chunk(server, monkeypatch, failing: int) -> None:  # type: ignore[no-untyped-def]
    """The process stops while deciding the `failing`-th chunk (counted from 1)."""
    use_cases = server.use_cases.claims.batches
    decide = use_cases._decide_queued
    steps = []

    def stops(*args, **kwargs):  # type: ignore[no-untyped-def]
        steps.append(1)
        if len(steps) == failing:
            raise RuntimeError("the process stopped")
        return decide(*args, **kwargs)

    monkeypatch.setattr(use_cases, "_decide_queued", stops)


def _late_claim(match, transaction: int, certificate_number: str, tpl: str, quantity: str, at: dt.datetime) -> mpb.ClaimResult:  # type: ignore[no-untyped-def]
    htsus, unit = GOODS[tpl]
    line = claim_line(transaction, certificate_number=certificate_number, quantity=quantity, tpl_number=tpl, htsus_number=htsus,
                      unit=unit, filed_at=at, arrived_at=at, paid_at=at, date_of_importation="2027-01-02")
    return match.MatchClaim(mpb.MatchClaimRequest(line=line)).result


def test_an_interrupted_allocation_keeps_its_chunks_and_the_next_claim_finishes_it(
    server, match, transmission, partner, clock, monkeypatch
):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(batches_service, "OPENING_CHUNK", 3)
    _queue_scenario(server, match, transmission, partner, clock)
    _stop_at_chunk(server, monkeypatch, failing=2)
    clock.at = OPENED_AT
    with pytest.raises(RuntimeError):
        server.use_cases.claims.allocate_due_openings()
    decisions = [c["decision"] for c in _rows(server, ClaimRow, ClaimRow.claim_id) if c["quota_year"] == YEAR]
    assert decisions.count("QUEUED") == len(CLAIMS) - 3  # the first chunk stayed decided

    # A claim presented after the opening comes after the whole batch: it finishes the allocation first.
    result = _late_claim(match, 99, "MX27-00000006", "9823.53.01", "5", clock.at)
    assert result.decision == mpb.CLAIM_DECISION_PREFERENTIAL
    claims = _year_claims(server)
    assert "QUEUED" not in [c["decision"] for c in claims]
    first_allocation = [c for c in claims if c["entry_number"] != result.entry_number]
    assert {c["decided_at"] for c in first_allocation} == {OPENED_AT}
    # Resumed at the rates set when it began: the same grants as in one go.
    assert sorted(c["granted_quantity"] for c in first_allocation if c["tpl_number"] == "9823.53.02") == [0, 5, 8, 17]
    assert _log_verifies(server)


def test_a_claim_queued_after_the_rates_were_set_never_overfills_a_level(
    server, match, transmission, partner, clock, monkeypatch
):  # type: ignore[no-untyped-def]
    """A replica whose clock lags (issue 12, finding 4) reads the opening that another began: its claim
    is never queued behind a batch whose rates are set (it would have no share in them, and once the
    batch completed nobody would decide it). It helps finish the batch, then is decided at once with
    what the levels still hold."""
    _queue_scenario(server, match, transmission, partner, clock)
    _stop_at_chunk(server, monkeypatch, failing=1)  # the rates are set, nothing decided yet
    clock.at = OPENED_AT
    with pytest.raises(RuntimeError):
        server.use_cases.claims.allocate_due_openings()
    monkeypatch.undo()
    clock.at = QUEUED_AT  # the lagging replica's clock
    straggler = _late_claim(match, 98, "MX27-00000003", "9823.53.02", "20", QUEUED_AT)
    # TPL 2 was oversubscribed: the batch took all but the rounding's remainder; the straggler comes after
    # (past the critical share: at the day's cutoff batch).
    assert straggler.decision == mpb.CLAIM_DECISION_PENDING
    run_cutoff_batch(server, clock)
    straggler = match.GetClaim(mpb.GetClaimRequest(entry_number=straggler.entry_number, line_number=1)).result
    assert straggler.decision == mpb.CLAIM_DECISION_PARTIAL
    claims = _year_claims(server)
    assert "QUEUED" not in [c["decision"] for c in claims]
    assert not server.use_cases.claims.allocate_due_openings()  # nothing was left to do
    level = next(r for r in _rows(server, QuotaLevelRow, QuotaLevelRow.tpl_number) if (r["tpl_number"], r["quota_year"]) == ("9823.53.02", YEAR))
    batch = [c for c in claims if c["tpl_number"] == "9823.53.02" and c["claim_id"] != straggler.claim_id]
    batch_measure = sum(c["granted_measure"] for c in batch)
    # The straggler had no share in the rates: it got at most what the batch left, and the level holds.
    assert Decimal(straggler.granted_measure) <= level["limit"] - batch_measure
    assert level["charged"] == batch_measure + Decimal(straggler.granted_measure) <= level["limit"]
    ledger = [(r["claim_id"], r["kind"]) for r in _rows(server, QuotaLedgerRow, QuotaLedgerRow.id) if r["tpl_number"] == "9823.53.02"]
    assert [kind for _, kind in ledger] == ["ALLOCATION"] * (len(ledger) - 1) + ["BATCH"]
    assert ledger[-1][0] == straggler.claim_id


def test_a_claim_arriving_while_another_thread_allocates_is_told_to_retry(server, match, transmission, partner, clock):  # type: ignore[no-untyped-def]
    """It must not hold a serving thread for the whole batch: it waits as long as a write waits for
    the database, then hears UNAVAILABLE; once the batch is allocated, the same claim is decided."""
    _queue_scenario(server, match, transmission, partner, clock)
    clock.at = OPENED_AT
    runner = server.use_cases.claims.batches._opening_runner
    assert runner.acquire(blocking=False)  # the timer thread is allocating
    try:
        with pytest.raises(grpc.RpcError) as caught:
            _late_claim(match, 97, "MX27-00000006", "9823.53.01", "5", clock.at)
        error = rich_error(caught.value)
        assert (error.code, error.reason, error.metadata) == (
            grpc.StatusCode.UNAVAILABLE, "OPENING_ALLOCATION_IN_PROGRESS", {"quota_year": str(YEAR)}
        )
        assert "QUEUED" in [c["decision"] for c in _year_claims(server)]
        assert not server.use_cases.claims.allocate_due_openings()  # the timer's next check leaves it to the runner
    finally:
        runner.release()
    assert _late_claim(match, 97, "MX27-00000006", "9823.53.01", "5", clock.at).decision == mpb.CLAIM_DECISION_PREFERENTIAL
    assert "QUEUED" not in [c["decision"] for c in _year_claims(server)]
