"""MatchService against a real server on a real port over a real SQLite file."""
from __future__ import annotations

import datetime as dt

import grpc
import pytest
from sqlalchemy import text

from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import CANCEL, NOW, certificate, claim_line, envelope, run_cutoff_batch, small_levels
from tests.grpc_errors import rich_error

PREFERENTIAL = mpb.CLAIM_DECISION_PREFERENTIAL
PARTIAL = mpb.CLAIM_DECISION_PARTIAL
MFN = mpb.CLAIM_DECISION_MFN_REQUIRED
PENDING = mpb.CLAIM_DECISION_PENDING
# The log's entries without their index, which the sequencer gives them in the background.
TABLES = {"claims": "*", "quota_levels": "*", "quota_ledger": "*", "certificates": "*", "log_entries": "id, kind, subject, entry"}


def snapshot(server) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    with server.database.read_engine.connect() as connection:
        return {t: sorted(map(tuple, connection.execute(text(f"SELECT {columns} FROM {t}")))) for t, columns in TABLES.items()}


@pytest.fixture
def transmit(transmission, partner, clock):  # type: ignore[no-untyped-def]
    """Transmit a certificate as the partner, sent at customs' current (test) time."""
    sent = [0]

    def send(cert=None):  # type: ignore[no-untyped-def]
        sent[0] += 1
        env = envelope(partner.signer, cert or certificate(), message_id=f"m-{sent[0]}", sent_at=clock.at)
        return transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env))

    return send


def claim(match, line) -> mpb.ClaimResult:  # type: ignore[no-untyped-def]
    return match.MatchClaim(mpb.MatchClaimRequest(line=line)).result


def current(match, result: mpb.ClaimResult) -> mpb.ClaimResult:  # type: ignore[no-untyped-def]
    """The line's claim as stored now (after a batch decided it)."""
    return match.GetClaim(mpb.GetClaimRequest(entry_number=result.entry_number, line_number=result.line_number)).result


def level(quota, tpl="9823.53.01", year=2026) -> qpb.QuotaStatus:  # type: ignore[no-untyped-def]
    return quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number=tpl, quota_year=year)).status


@pytest.fixture
def on_file(transmit):  # type: ignore[no-untyped-def]
    """The default certificate (1200 dozen knit shirts, TPL 1, 2026) is on file."""
    return transmit()


# -- decisions ---------------------------------------------------------------------------------------


def test_matching_claim_is_preferential_and_charges_certificate_and_level(match, quota, on_file):
    result = claim(match, claim_line())
    assert result.decision == PREFERENTIAL and list(result.reasons) == []
    assert (result.claimed_quantity, result.unit, result.measure_unit) == ("100", "DOZ", "SME")
    assert (result.claimed_measure, result.conversion_factor, result.factor_version) == ("600", "6.0", "sme-statistical-lines-2026.1")
    assert (result.granted_quantity, result.granted_measure, result.mfn_quantity) == ("100", "600", "0")
    assert result.certificate_remaining == "1100"
    assert result.level_remaining == "44999400" and level(quota).charged == "600"
    # Priority time is the latest of filing, arrival and payment.
    assert result.presentation_time.ToDatetime(tzinfo=dt.timezone.utc) == NOW


def test_warehouse_withdrawal_ignores_arrival_for_priority(match, on_file):
    # Entry type 38: a withdrawal from warehouse for consumption, quota (QB 22-111, QB 24-111).
    line = claim_line(entry_type="38", arrived_at=NOW, paid_at=NOW - dt.timedelta(hours=4), filed_at=NOW - dt.timedelta(hours=5))
    result = claim(match, line)
    assert result.presentation_time.ToDatetime(tzinfo=dt.timezone.utc) == NOW - dt.timedelta(hours=4)


def test_same_line_again_returns_the_original_decision_and_charges_nothing(match, quota, server, on_file):
    first = match.MatchClaim(mpb.MatchClaimRequest(line=claim_line()))
    before = snapshot(server)
    again = match.MatchClaim(mpb.MatchClaimRequest(line=claim_line()))
    assert again.replayed and not first.replayed
    assert again.result == first.result
    assert snapshot(server) == before


def test_same_line_with_other_data_is_refused(match, server, on_file):
    claim(match, claim_line())
    before = snapshot(server)
    with pytest.raises(grpc.RpcError) as caught:
        claim(match, claim_line(quantity="50"))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "CLAIM_ALREADY_DECIDED")
    assert snapshot(server) == before


def test_entry_number_of_another_importer_is_refused(match, server, on_file):
    claim(match, claim_line())
    before = snapshot(server)
    with pytest.raises(grpc.RpcError) as caught:
        claim(match, claim_line(line_number=2, importer_of_record="98-765432100"))
    assert rich_error(caught.value).reason == "ENTRY_NUMBER_REUSED"
    assert snapshot(server) == before


def test_no_transmission_requires_mfn(match, quota):
    result = claim(match, claim_line(certificate_number="MX26-99999999"))
    assert (result.decision, list(result.reasons)) == (MFN, ["NO_TRANSMISSION"])
    assert result.granted_quantity == "0" and result.mfn_quantity == "100"
    assert level(quota).charged == "0"


def test_canceled_certificate_requires_mfn(match, transmission, partner, on_file):
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(
        partner.signer, cpb.Certificate(certificate_number="MX26-00000001", issuing_country="MX"),
        message_id="cancel-1", action=CANCEL, replaces_version=1)))
    result = claim(match, claim_line())
    assert (result.decision, list(result.reasons)) == (MFN, ["CERTIFICATE_CANCELED"])


MISMATCHES = [
    ({"tpl_number": "9823.53.02"}, "tpl_number", "9823.53.02", "9823.53.01"),
    ({"htsus_number": "6110.20.2010"}, "htsus_number", "6110202010", "6109100012"),
    ({"importer_of_record": "98-765432100"}, "importer_of_record", "98-765432100", "12-345678900"),
    ({"unit": "KG"}, "unit", "KG", "DOZ"),
    ({"date_of_importation": "2026-02-01"}, "date_of_importation", "2026-02-01", "2026-02-20..2026-12-31"),
]


@pytest.mark.parametrize("changes,field,claimed,transmitted", MISMATCHES, ids=[m[1] for m in MISMATCHES])
def test_each_mismatched_element_is_listed(match, quota, on_file, changes, field, claimed, transmitted):
    result = claim(match, claim_line(**changes))
    assert (result.decision, list(result.reasons)) == (MFN, ["DATA_MISMATCH"])
    assert [(m.field, m.claimed, m.transmitted) for m in result.mismatches] == [(field, claimed, transmitted)]
    assert level(quota).charged == "0"


def test_several_mismatches_are_all_listed(match, on_file):
    result = claim(match, claim_line(unit="KG", importer_of_record="98-765432100"))
    assert {m.field for m in result.mismatches} == {"unit", "importer_of_record"}


def test_entry_outside_the_quota_year_is_a_mismatch(match, transmission, partner, transmit):
    # A 2025 certificate still valid in March 2026 (dates of importation in the future are refused).
    transmit(certificate(quota_year=2025, issue_date="2025-12-01", last_valid_date="2026-03-31"))
    result = claim(match, claim_line(date_of_importation="2026-03-01"))
    assert result.decision == MFN and ("quota_year", "2026", "2025") in [(m.field, m.claimed, m.transmitted) for m in result.mismatches]


def test_quantity_beyond_the_certificate_is_refused_and_exhaustion_is_reported(match, on_file):
    too_much = claim(match, claim_line(quantity="1201"))
    assert (too_much.decision, list(too_much.reasons)) == (MFN, ["QUANTITY_EXCEEDS_CERTIFICATE"])
    assert [(m.field, m.claimed, m.transmitted) for m in too_much.mismatches] == [("quantity", "1201", "1200")]
    assert claim(match, claim_line(2, quantity="1200")).decision == PREFERENTIAL
    exhausted = claim(match, claim_line(3, quantity="1"))
    assert (exhausted.decision, list(exhausted.reasons)) == (MFN, ["CERTIFICATE_EXHAUSTED"])


def test_entry_before_the_ecert_effective_date_needs_no_transmission(match, quota):
    result = claim(match, claim_line(date_of_importation="2021-10-04", certificate_number="MX21-00000001"))
    assert (result.decision, list(result.reasons)) == (mpb.CLAIM_DECISION_ECERT_NOT_REQUIRED, ["BEFORE_ECERT_EFFECTIVE_DATE"])


def test_period_closed_requires_mfn(match, transmission, partner, server, clock, transmit):
    clock.at = dt.datetime(2025, 11, 1, 12, tzinfo=dt.timezone.utc)
    transmit(certificate("MX25-00000001", quota_year=2025, issue_date="2025-10-01", last_valid_date="2025-12-31"))
    clock.at = NOW  # 2026-03-02
    line = claim_line(certificate_number="MX25-00000001", date_of_importation="2025-12-20")
    result = claim(match, line)
    assert (result.decision, list(result.reasons)) == (MFN, ["PERIOD_CLOSED"])


def test_the_presentation_time_not_the_arrival_at_the_service_decides_the_period(match, quota, clock, transmit):
    # 19 CFR 132.11: priority, and so the period, go by the presentation time. A line presented in the
    # last minute of 2025 (New York) is charged to 2025 even when the service decides it weeks later;
    # one presented a minute into 2026 is not. No grace after the close: none has a source (issue 13).
    clock.at = dt.datetime(2025, 11, 1, 12, tzinfo=dt.timezone.utc)
    transmit(certificate("MX25-00000001", quota_year=2025, issue_date="2025-10-01", last_valid_date="2025-12-31"))
    close = dt.datetime(2026, 1, 1, 5, tzinfo=dt.timezone.utc)  # midnight in New York
    clock.at = close + dt.timedelta(days=20)
    inside = claim_line(1, certificate_number="MX25-00000001", date_of_importation="2025-12-20",
                        filed_at=close - dt.timedelta(hours=3), arrived_at=close - dt.timedelta(hours=2), paid_at=close - dt.timedelta(minutes=1))
    assert claim(match, inside).decision == PREFERENTIAL
    assert level(quota, year=2025).charged == "600"
    after = claim_line(2, certificate_number="MX25-00000001", date_of_importation="2025-12-20",
                       filed_at=close - dt.timedelta(hours=3), arrived_at=close - dt.timedelta(hours=2), paid_at=close + dt.timedelta(minutes=1))
    result = claim(match, after)
    assert (result.decision, list(result.reasons)) == (MFN, ["PERIOD_CLOSED"])
    assert level(quota, year=2025).charged == "600"


# -- the level fills ---------------------------------------------------------------------------------


def test_near_fill_claims_wait_for_the_cutoff_batch_which_cuts_the_one_that_fills_the_level(match, quota, server, clock, transmit):
    """19 CFR 132.11: priority by presentation time, and the claim that fills the level is cut; QB 23-128:
    near fill, quota entries finalize after the daily batch (20:30 Eastern)."""
    server.use_cases.references.load(small_levels("tiny-1", {"9823.53.01": "1000"}))
    transmit()
    transmit(certificate("MX26-00000002"))
    first = claim(match, claim_line(1, quantity="150"))  # 900 SME of 1000: exactly the 90% critical share
    assert first.decision == PREFERENTIAL and first.level_remaining == "100"
    clock.advance(minutes=5)
    # The line presented later reaches customs first; both would pass the critical share: both wait.
    late = claim(match, claim_line(3, quantity="1", certificate_number="MX26-00000002", paid_at=NOW + dt.timedelta(minutes=2)))
    cut = claim(match, claim_line(2, quantity="50", certificate_number="MX26-00000002", paid_at=NOW + dt.timedelta(minutes=1)))
    assert [(r.decision, list(r.reasons)) for r in (late, cut)] == [(PENDING, ["LEVEL_ON_HOLD"])] * 2
    assert (cut.granted_quantity, cut.certificate_remaining) == ("0", "1149")  # 1200 - 1 - 50 reserved, nothing charged
    status = level(quota)
    assert (status.charged, status.state) == ("900", qpb.QUOTA_STATE_ON_HOLD)
    assert status.next_batch_at.ToDatetime(tzinfo=dt.timezone.utc) == dt.datetime(2026, 3, 3, 1, 30, tzinfo=dt.timezone.utc)  # 20:30 EST

    cutoff = run_cutoff_batch(server, clock)
    cut, late = current(match, cut), current(match, late)
    assert cut.decision == PARTIAL and list(cut.reasons) == ["LEVEL_FILLED", "PARTIAL_FILL"]
    # 100 SME left = 16 whole dozen (96 SME); the rest at MFN, the level never exceeded.
    assert (cut.granted_quantity, cut.granted_measure, cut.mfn_quantity, cut.mfn_measure) == ("16", "96", "34", "204")
    assert cut.level_remaining == "4" and cut.certificate_remaining == "1183"  # the later line's 1 still reserved then
    assert (late.decision, list(late.reasons), late.certificate_remaining) == (MFN, ["LEVEL_FILLED"], "1184")
    assert cut.batch_cutoff.ToDatetime(tzinfo=dt.timezone.utc) == cutoff == late.decided_at.ToDatetime(tzinfo=dt.timezone.utc)
    status = level(quota)
    assert (status.charged, status.remaining, status.state) == ("996", "4", qpb.QUOTA_STATE_ON_HOLD)  # past its critical share


def aggregate_certificates(transmit):  # type: ignore[no-untyped-def]
    fabric = {"htsus_number": "5208.12.4020", "unit": "M2", "goods_description": "Woven cotton fabric"}
    transmit(certificate("MX26-00000004", tpl_number="9823.53.04", quantity="5000", **fabric))
    knit = {"htsus_number": "6006.22.0000", "unit": "M2", "goods_description": "Knit cotton fabric"}
    transmit(certificate("MX26-00000005", tpl_number="9823.53.05", quantity="5000", **knit))


def fabric_line(transaction, tpl, quantity, **times):  # type: ignore[no-untyped-def]
    hts = "5208.12.4020" if tpl == "9823.53.04" else "6006.22.0000"
    return claim_line(transaction, tpl_number=tpl, htsus_number=hts, unit="M2", quantity=quantity,
                      certificate_number="MX26-0000000" + tpl[-1], **times)


def test_aggregate_ceiling_stops_tpl4_while_tpl5_alone_would_fit(match, quota, transmission, partner, server, clock, transmit):
    server.use_cases.references.load(
        small_levels("aggregate-1", {"9823.53.03": "1000", "9823.53.04": "800", "9823.53.05": "900"})
    )
    aggregate_certificates(transmit)
    clock.advance(minutes=5)
    at = [NOW + dt.timedelta(minutes=n) for n in range(3)]  # three lines presented a minute apart
    knit = claim(match, fabric_line(1, "9823.53.05", "900", paid_at=at[0]))  # past TPL 5's and TPL 3's critical share
    woven = claim(match, fabric_line(2, "9823.53.04", "300", paid_at=at[1]))  # TPL 4 has 800 of room, TPL 3 only 100
    blocked = claim(match, fabric_line(3, "9823.53.04", "10", paid_at=at[2]))
    assert [r.decision for r in (knit, woven, blocked)] == [PENDING] * 3  # the aggregate is on hold for its members too
    run_cutoff_batch(server, clock)
    knit, woven, blocked = (current(match, r) for r in (knit, woven, blocked))
    assert knit.decision == PREFERENTIAL and (knit.level_remaining, knit.aggregate_remaining) == ("0", "100")
    assert (woven.decision, list(woven.reasons)) == (PARTIAL, ["AGGREGATE_FILLED", "PARTIAL_FILL"])
    assert (woven.granted_quantity, woven.level_remaining, woven.aggregate_remaining) == ("100", "700", "0")
    assert (blocked.decision, list(blocked.reasons)) == (MFN, ["AGGREGATE_FILLED"])
    assert level(quota, "9823.53.03").charged == "1000" and level(quota, "9823.53.03").state == qpb.QUOTA_STATE_FILLED
    assert level(quota, "9823.53.04").charged == "100"


# -- dry run -------------------------------------------------------------------------------------------


def test_check_claim_decides_the_same_way_and_records_nothing(match, server, on_file):
    before = snapshot(server)
    checked = match.CheckClaim(mpb.CheckClaimRequest(line=claim_line())).result
    assert snapshot(server) == before
    decided = claim(match, claim_line())
    assert checked.decision == decided.decision == PREFERENTIAL
    assert (checked.granted_quantity, checked.claimed_measure) == (decided.granted_quantity, decided.claimed_measure)
    assert checked.claim_id == ""
    mismatch = match.CheckClaim(mpb.CheckClaimRequest(line=claim_line(2, unit="KG"))).result
    assert mismatch.decision == MFN and [m.field for m in mismatch.mismatches] == ["unit"]


# -- reversals and corrections ------------------------------------------------------------------------


def test_reversal_returns_quantity_and_the_next_batch_reopens_the_level(match, quota, transmission, partner, server, clock, transmit):
    server.use_cases.references.load(small_levels("tiny-2", {"9823.53.01": "600"}))
    transmit()
    clock.advance(minutes=5)
    filled = claim(match, claim_line(1, quantity="100"))  # 600 SME: the whole level, past its critical share
    assert filled.decision == PENDING
    run_cutoff_batch(server, clock)
    filled = current(match, filled)
    assert (filled.decision, filled.level_remaining) == (PREFERENTIAL, "0") and level(quota).state == qpb.QUOTA_STATE_FILLED
    waiting = claim(match, claim_line(2, quantity="1", paid_at=clock.at - dt.timedelta(seconds=1)))
    assert waiting.decision == PENDING
    reversed_ = match.ReverseClaim(mpb.ReverseClaimRequest(
        entry_number=filled.entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED, reason="entry canceled")).reversed
    assert reversed_.reversed and reversed_.level_remaining == "600" and reversed_.certificate_remaining == "1199"
    # Room again, but a claim is waiting: the level stays on hold until the batch has decided it.
    assert (level(quota).state, level(quota).charged) == (qpb.QUOTA_STATE_ON_HOLD, "0")
    again = match.ReverseClaim(mpb.ReverseClaimRequest(
        entry_number=filled.entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED))
    assert again.reversed.claim_id == reversed_.claim_id and level(quota).charged == "0"  # idempotent
    run_cutoff_batch(server, clock)
    assert current(match, waiting).decision == PREFERENTIAL
    assert (level(quota).state, level(quota).charged) == (qpb.QUOTA_STATE_OPEN, "6")  # nothing waits, under 90%: open again
    assert claim(match, claim_line(3, quantity="10", paid_at=clock.at)).decision == PREFERENTIAL  # decided at once again


def test_corrected_claim_keeps_its_original_priority(match, quota, on_file):
    original = claim(match, claim_line(quantity="100"))
    corrected_line = claim_line(quantity="80", filed_at=NOW - dt.timedelta(minutes=10), arrived_at=NOW, paid_at=NOW)
    response = match.ReverseClaim(mpb.ReverseClaimRequest(
        entry_number=original.entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CORRECTED, corrected_line=corrected_line))
    assert response.reversed.reversed and response.corrected.decision == PREFERENTIAL
    assert response.corrected.presentation_time == original.presentation_time
    assert response.corrected.granted_quantity == "80" and level(quota).charged == "480"
    current = match.GetClaim(mpb.GetClaimRequest(entry_number=original.entry_number, line_number=1)).result
    assert current.claim_id == response.corrected.claim_id


def test_a_correction_asking_more_than_was_granted_takes_the_new_presentation_time(match, quota, on_file, clock):
    # A correction never earns an earlier slot for more than the line already had (CSMS 13-000217).
    original = claim(match, claim_line(quantity="100"))
    clock.at = later = NOW + dt.timedelta(hours=1)
    corrected_line = claim_line(quantity="120", filed_at=later - dt.timedelta(minutes=10), arrived_at=later, paid_at=later)
    response = match.ReverseClaim(mpb.ReverseClaimRequest(
        entry_number=original.entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CORRECTED, corrected_line=corrected_line))
    assert response.corrected.decision == PREFERENTIAL and response.corrected.granted_quantity == "120"
    assert response.corrected.presentation_time.ToDatetime(tzinfo=dt.timezone.utc) == later
    assert original.presentation_time.ToDatetime(tzinfo=dt.timezone.utc) == NOW


def test_a_refused_line_corrected_takes_the_new_presentation_time(match, on_file, clock):
    # CSMS 13-000217: an entry summary rejected for a missing or mismatched certificate gets a new
    # presentation time when it is resubmitted. At 99d2b8c every correction kept the original one.
    refused = claim(match, claim_line(importer_of_record="98-765432100"))
    assert (refused.decision, list(refused.reasons)) == (MFN, ["DATA_MISMATCH"])
    clock.at = later = NOW + dt.timedelta(hours=1)
    corrected_line = claim_line(filed_at=later - dt.timedelta(minutes=10), arrived_at=later - dt.timedelta(minutes=5), paid_at=later)
    response = match.ReverseClaim(mpb.ReverseClaimRequest(
        entry_number=refused.entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CORRECTED, corrected_line=corrected_line))
    assert response.corrected.decision == PREFERENTIAL
    assert response.corrected.presentation_time.ToDatetime(tzinfo=dt.timezone.utc) == later
    assert refused.presentation_time.ToDatetime(tzinfo=dt.timezone.utc) == NOW


def test_reversal_errors(match, on_file):
    with pytest.raises(grpc.RpcError) as caught:
        match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=claim_line().entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED))
    assert rich_error(caught.value).reason == "CLAIM_NOT_FOUND"
    claim(match, claim_line())
    with pytest.raises(grpc.RpcError) as caught:
        match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=claim_line().entry_number, line_number=1))
    assert rich_error(caught.value).fields == {"kind": "REVERSAL_KIND_MISSING"}
    with pytest.raises(grpc.RpcError) as caught:
        match.ReverseClaim(mpb.ReverseClaimRequest(
            entry_number=claim_line().entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CORRECTED, corrected_line=claim_line(2)))
    assert rich_error(caught.value).fields == {"corrected_line.entry_number": "CORRECTION_OF_ANOTHER_LINE"}


# -- post-importation claims ---------------------------------------------------------------------------


def post(match, line):  # type: ignore[no-untyped-def]
    return match.FilePostImportationClaim(mpb.FilePostImportationClaimRequest(line=line)).result


def certificate_2025(transmit, clock, number="MX25-00000001"):  # type: ignore[no-untyped-def]
    saved = clock.at
    clock.at = dt.datetime(2025, 3, 1, 12, tzinfo=dt.timezone.utc)
    transmit(certificate(number, quota_year=2025, issue_date="2025-02-01", last_valid_date="2025-12-31"))
    clock.at = saved


@pytest.mark.parametrize(
    "imported,today,allowed",
    [
        ("2025-03-10", "2026-03-10", True),  # day 365
        ("2025-03-10", "2026-03-11", False),  # day 366
        ("2024-03-10", "2025-03-10", True),  # a leap year between: still the calendar date a year on
        ("2024-02-29", "2025-02-28", True),  # 29 February: the window ends on 28 February
        ("2024-02-29", "2025-03-01", False),
    ],
)
def test_post_importation_window_is_one_year(match, transmission, partner, clock, server, imported, today, allowed, transmit):
    year = int(imported[:4])
    server.use_cases.references.load(small_levels("window", {}, years=(2024, 2026)))
    clock.at = dt.datetime(year, 3, 1, 12, tzinfo=dt.timezone.utc) if imported[5:7] != "02" else dt.datetime(year, 2, 29, 12, tzinfo=dt.timezone.utc)
    number = f"MX{year % 100}-00000001"
    transmit(certificate(number, quota_year=year, issue_date=f"{year}-01-15", last_valid_date=f"{year}-12-31"))
    clock.at = dt.datetime.fromisoformat(today).replace(hour=15, tzinfo=dt.timezone.utc)
    line = claim_line(certificate_number=number, date_of_importation=imported,
                      filed_at=clock.at - dt.timedelta(hours=1), arrived_at=clock.at - dt.timedelta(hours=1), paid_at=clock.at - dt.timedelta(hours=1))
    if allowed:
        result = post(match, line)
        assert result.post_importation and result.decision == PREFERENTIAL and result.quota_year == year
    else:
        with pytest.raises(grpc.RpcError) as caught:
            post(match, line)
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "POST_IMPORTATION_WINDOW_CLOSED")


def test_post_importation_charges_the_original_period_and_is_refused_when_it_is_filled(match, quota, transmission, partner, clock, server, transmit):
    server.use_cases.references.load(small_levels("post-1", {"9823.53.01": "600"}))
    certificate_2025(transmit, clock)
    certificate_2025(transmit, clock, "MX25-00000002")
    # During 2025 an entry took the whole 2025 level; another entry paid MFN.
    clock.at = dt.datetime(2025, 6, 1, 12, tzinfo=dt.timezone.utc)
    times = {"filed_at": clock.at, "arrived_at": clock.at, "paid_at": clock.at}
    first = claim(match, claim_line(1, certificate_number="MX25-00000001", date_of_importation="2025-05-30", **times))
    assert first.decision == PENDING  # the whole level: past its critical share
    run_cutoff_batch(server, clock)
    assert current(match, first).decision == PREFERENTIAL
    clock.at = NOW  # 2026-03-02: the 2026 level is empty, the 2025 one full
    line = claim_line(2, certificate_number="MX25-00000002", date_of_importation="2025-05-30", **times)
    refused = post(match, line)
    assert (refused.decision, refused.quota_year) == (PENDING, 2025)  # the 2025 level went on hold when it filled
    run_cutoff_batch(server, clock)
    refused = current(match, refused)
    assert (refused.decision, list(refused.reasons), refused.quota_year) == (MFN, ["LEVEL_FILLED"], 2025)
    assert level(quota, year=2026).charged == "0"
    # A reversal gives the 2025 level room again: a refund claim is charged to 2025, not 2026.
    match.ReverseClaim(mpb.ReverseClaimRequest(
        entry_number=claim_line(1).entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED))
    granted = post(match, claim_line(3, certificate_number="MX25-00000002", date_of_importation="2025-05-30", **times))
    assert granted.decision == PENDING  # the 2025 level stays on hold until a batch finds it open
    run_cutoff_batch(server, clock)
    granted = current(match, granted)
    assert granted.decision == PREFERENTIAL and granted.quota_year == 2025
    assert level(quota, year=2025).charged == "600" and level(quota, year=2026).charged == "0"


def test_post_importation_is_refused_for_a_line_already_granted(match, on_file):
    claim(match, claim_line())
    with pytest.raises(grpc.RpcError) as caught:
        post(match, claim_line())
    assert rich_error(caught.value).reason == "CLAIM_NOT_MFN"


# -- opening-day proration ------------------------------------------------------------------------------


def test_opening_batch_is_prorated_with_one_rate(match, quota, transmission, partner, server, clock, transmit):
    server.use_cases.references.load(small_levels("opening-1", {"9823.53.01": "1000"}))
    clock.at = dt.datetime(2027, 1, 4, 15, tzinfo=dt.timezone.utc)  # 10:00 Eastern on the 2027 opening date (window)
    # Cotton knit shirts (category 338, 6.0 SME a dozen in the packaged table).
    shirts = {"tpl_number": "9823.53.01", "htsus_number": "6109.10.0012", "quota_year": 2027,
            "issue_date": "2026-12-15", "last_valid_date": "2027-12-31", "quantity": "500"}
    for n in range(1, 5):
        transmit(certificate(f"MX27-0000000{n}", **shirts))
    before = dict(filed_at=clock.at, arrived_at=clock.at, paid_at=clock.at, tpl_number="9823.53.01",
                  htsus_number="6109.10.0012", date_of_importation="2027-01-02")
    asks = {1: "100", 2: "50", 3: "30"}  # 600 + 300 + 180 = 1080 SME against 1000
    queued = [claim(match, claim_line(n, certificate_number=f"MX27-0000000{n}", quantity=q, **before)) for n, q in asks.items()]
    assert all(r.decision == mpb.CLAIM_DECISION_QUEUED for r in queued)
    assert level(quota, "9823.53.01", 2027).charged == "0"

    clock.at = dt.datetime(2027, 1, 4, 18, tzinfo=dt.timezone.utc)  # the window closed at noon Eastern
    after = dict(before, filed_at=clock.at, arrived_at=clock.at)
    late = claim(match, claim_line(4, certificate_number="MX27-00000004", quantity="10", **after))
    assert late.decision == PENDING  # 990 of 1000 after the opening: past the critical share, the level is on hold
    decided = [match.GetClaim(mpb.GetClaimRequest(entry_number=r.entry_number, line_number=1)).result for r in queued]
    rates = {r.proration_rate for r in decided}
    assert rates == {"0.925925"}  # 1000 / 1080, one rate for all
    assert [r.granted_quantity for r in decided] == ["92", "46", "27"]  # each rounded down to a whole dozen
    # Offers, not grants (CSMS 16-000886): reserved until the end of the fifth business day after the
    # opening date (Monday 4 January 2027: 5, 6, 7, 8 and 11 January), midnight Eastern.
    assert all(r.decision == mpb.CLAIM_DECISION_PRORATED_OFFER and list(r.reasons) == ["PRORATED"] for r in decided)
    assert {r.offer_expires_at.ToDatetime(tzinfo=dt.timezone.utc) for r in decided} == {dt.datetime(2027, 1, 12, 5, tzinfo=dt.timezone.utc)}
    opening = sum(int(r.granted_measure) for r in decided)
    assert opening == 990 <= 1000
    assert all(r.presentation_time == decided[0].presentation_time for r in decided)
    # The late claim comes after the whole opening batch: at the day's cutoff it gets what the rounding left.
    run_cutoff_batch(server, clock)
    late = current(match, late)
    assert (late.decision, late.granted_quantity) == (PARTIAL, "1")
    assert level(quota, "9823.53.01", 2027).charged == str(opening + 6)
    # Queued claims reserved their certificates; proration gave back what it did not grant.
    usage = match.GetCertificateUsage(mpb.GetCertificateUsageRequest(issuing_country="MX", certificate_number="MX27-00000001"))
    assert (usage.used_quantity, usage.remaining_quantity) == ("92", "408")


# -- usage and activity -----------------------------------------------------------------------------------


def test_certificate_usage_and_activity_report_show_matched_certificates(match, transmission, partner, on_file, transmit):
    transmit(certificate("MX26-00000002"))
    claim(match, claim_line(1, quantity="100"))
    claim(match, claim_line(2, quantity="50"))
    usage = match.GetCertificateUsage(mpb.GetCertificateUsageRequest(issuing_country="MX", certificate_number="MX26-00000001"))
    assert (usage.quantity, usage.used_quantity, usage.remaining_quantity) == ("1200", "150", "1050")
    assert [(u.entry_number[:3], u.granted_quantity) for u in usage.uses] == [("B76", "100"), ("B76", "50")]
    report = transmission.GetActivityReport(tpb.GetActivityReportRequest(issuing_country="MX", condition=tpb.CERTIFICATE_CONDITION_MATCHED))
    assert [e.certificate_number for e in report.entries] == ["MX26-00000001"]
    unmatched = transmission.GetActivityReport(tpb.GetActivityReportRequest(issuing_country="MX", condition=tpb.CERTIFICATE_CONDITION_UNMATCHED))
    assert [e.certificate_number for e in unmatched.entries] == ["MX26-00000002"]
    stored = transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-00000001"))
    assert stored.certificate.remaining_quantity == "1050"


def test_used_certificate_cannot_be_canceled_or_shrunk_below_its_use(match, transmission, partner, on_file):
    claim(match, claim_line(quantity="300"))
    with pytest.raises(grpc.RpcError) as caught:
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(
            partner.signer, cpb.Certificate(certificate_number="MX26-00000001", issuing_country="MX"),
            message_id="c-2", action=CANCEL, replaces_version=1)))
    assert rich_error(caught.value).reason == "CERTIFICATE_IN_USE"
    with pytest.raises(grpc.RpcError) as caught:
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(
            partner.signer, certificate(quantity="299"), message_id="r-2", action=tpb.TRANSMISSION_ACTION_REPLACE, replaces_version=1)))
    assert rich_error(caught.value).reason == "QUANTITY_BELOW_USAGE"
    grown = transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(
        partner.signer, certificate(quantity="2000"), message_id="r-3", action=tpb.TRANSMISSION_ACTION_REPLACE, replaces_version=1)))
    assert grown.certificate.remaining_quantity == "1700"


# -- bad input --------------------------------------------------------------------------------------------

BAD_LINES = [
    ({"entry_number": "B76-1234567-0"}, "line.entry_number", "ENTRY_NUMBER_CHECK_DIGIT"),
    ({"entry_number": "B7-1234567-0"}, "line.entry_number", "ENTRY_NUMBER_MALFORMED"),
    ({"filer_code": "XYZ"}, "line.filer_code", "FILER_CODE_MISMATCH"),
    ({"line_number": 0}, "line.line_number", "LINE_NUMBER_OUT_OF_RANGE"),
    ({"spi": "S"}, "line.spi", "SPI_NOT_TPL"),
    ({"entry_type": "21"}, "line.entry_type", "ENTRY_TYPE_NOT_QUOTA"),
    ({"entry_type": "01"}, "line.entry_type", "ENTRY_TYPE_NOT_QUOTA"),  # QB 22-111/24-111: not a quota type
    ({"entry_type": "2"}, "line.entry_type", "ENTRY_TYPE_MALFORMED"),
    ({"quantity": "-3"}, "line.quantity", "QUANTITY_NOT_POSITIVE"),
    ({"quantity": "abc"}, "line.quantity", "QUANTITY_MALFORMED"),
    ({"unit": ""}, "line.unit", "FIELD_REQUIRED"),
    ({"date_of_importation": "2026-13-01"}, "line.date_of_importation", "DATE_MALFORMED"),
    ({"htsus_number": "61"}, "line.htsus_number", "HTSUS_NUMBER_MALFORMED"),
    ({"certificate_number": ""}, "line.certificate_number", "FIELD_REQUIRED"),
]


@pytest.mark.parametrize("changes,field,reason", BAD_LINES, ids=[b[2] + "-" + b[1] for b in BAD_LINES])
def test_bad_lines_are_invalid_argument_and_change_nothing(match, server, on_file, changes, field, reason):
    before = snapshot(server)
    for rpc in (match.MatchClaim, match.CheckClaim):
        with pytest.raises(grpc.RpcError) as caught:
            rpc.__call__(mpb.MatchClaimRequest(line=claim_line(**changes)) if rpc is match.MatchClaim else mpb.CheckClaimRequest(line=claim_line(**changes)))
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.fields.get(field) == reason
    assert snapshot(server) == before


def test_missing_times_are_invalid(match, on_file):
    line = claim_line(arrived_at=None)
    with pytest.raises(grpc.RpcError) as caught:
        claim(match, line)
    assert rich_error(caught.value).fields == {"line.arrived_at": "FIELD_REQUIRED"}
    line = mpb.EntrySummaryLine()
    line.CopyFrom(claim_line())
    line.ClearField("filed_at")
    with pytest.raises(grpc.RpcError) as caught:
        claim(match, line)
    assert rich_error(caught.value).fields == {"line.filed_at": "FIELD_REQUIRED"}


def test_unconvertible_goods_are_a_failed_precondition(match, transmission, partner, server, transmit):
    transmit(certificate(htsus_number="6201.30.1000"))  # no category for this line in the packaged table
    before = snapshot(server)
    with pytest.raises(grpc.RpcError) as caught:
        claim(match, claim_line(htsus_number="6201.30.1000"))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONVERSION_FACTOR_MISSING")
    assert error.metadata["factor_version"] == "sme-statistical-lines-2026.1"
    assert snapshot(server) == before
