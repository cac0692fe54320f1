"""Prorated opening shares are offers (issue 13, item 3), through the API on both engines.

Source: CSMS 16-000886 (prorated entry summaries): when an opening is oversubscribed, CBP rejects the
entry summary with the prorated amount reserved, and the filer has five business days to claim all,
part or none of it; what is not claimed goes back to the quota. The opening window and date follow the
quota bulletins (QB 24-111). Here the 2027 opening date is Monday 4 January; the deadline is the end of
the fifth business day after it, Monday 11 January (midnight Eastern: 12 January 05:00 UTC).
"""
from __future__ import annotations

import datetime as dt

import grpc
import pytest

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb
from server.service.reconcile import reconcile_ledger
from tests.factories import certificate, claim_line, envelope, run_cutoff_batch, small_levels
from tests.grpc_errors import rich_error

OFFER, PARTIAL, MFN, PREFERENTIAL = (
    mpb.CLAIM_DECISION_PRORATED_OFFER, mpb.CLAIM_DECISION_PARTIAL, mpb.CLAIM_DECISION_MFN_REQUIRED, mpb.CLAIM_DECISION_PREFERENTIAL,
)
IN_WINDOW = dt.datetime(2027, 1, 4, 15, tzinfo=dt.timezone.utc)  # 10:00 Eastern on the opening date
AFTER_NOON = dt.datetime(2027, 1, 4, 18, tzinfo=dt.timezone.utc)
DEADLINE = dt.datetime(2027, 1, 12, 5, tzinfo=dt.timezone.utc)
SHIRTS = {"tpl_number": "9823.53.01", "htsus_number": "6109.10.0012", "quota_year": 2027,
          "issue_date": "2026-12-15", "last_valid_date": "2027-12-31", "quantity": "500"}


def line(n: int, quantity: str, at: dt.datetime) -> mpb.EntrySummaryLine:
    return claim_line(n, certificate_number=f"MX27-0000000{n}", quantity=quantity, tpl_number="9823.53.01",
                      htsus_number="6109.10.0012", date_of_importation="2027-01-02", filed_at=at, arrived_at=at, paid_at=at)


def charged(quota) -> str:  # type: ignore[no-untyped-def]
    return quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number="9823.53.01", quota_year=2027)).status.charged


def used(match, n: int) -> str:  # type: ignore[no-untyped-def]
    usage = match.GetCertificateUsage(mpb.GetCertificateUsageRequest(issuing_country="MX", certificate_number=f"MX27-0000000{n}"))
    return usage.used_quantity


def answer(match, entry: str, accepted: str) -> mpb.AnswerProratedOfferResponse:  # type: ignore[no-untyped-def]
    return match.AnswerProratedOffer(mpb.AnswerProratedOfferRequest(entry_number=entry, line_number=1, accepted_quantity=accepted))


@pytest.fixture
def offers(server, match, quota, transmission, partner, clock):  # type: ignore[no-untyped-def]
    """Three lines presented in the 2027 opening window ask 1080 SME of a 1000 SME level: after noon
    each holds an offer at 1000/1080 (92, 46 and 27 dozen), 990 SME reserved."""
    server.use_cases.references.load(small_levels("offers", {"9823.53.01": "1000"}))
    clock.at = IN_WINDOW
    for n in range(1, 6):
        env = envelope(partner.signer, certificate(f"MX27-0000000{n}", **SHIRTS), message_id=f"o-{n}", sent_at=clock.at)
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env))
    lines = [line(n, q, IN_WINDOW) for n, q in ((1, "100"), (2, "50"), (3, "30"))]
    assert all(match.MatchClaim(mpb.MatchClaimRequest(line=x)).result.decision == mpb.CLAIM_DECISION_QUEUED for x in lines)
    clock.at = AFTER_NOON
    assert server.use_cases.claims.allocate_due_openings()
    results = [match.GetClaim(mpb.GetClaimRequest(entry_number=x.entry_number, line_number=1)).result for x in lines]
    assert [(r.decision, r.granted_quantity) for r in results] == [(OFFER, "92"), (OFFER, "46"), (OFFER, "27")]
    assert {r.offer_expires_at.ToDatetime(tzinfo=dt.timezone.utc) for r in results} == {DEADLINE}
    assert charged(quota) == "990"  # reserved: nobody else can take it
    return [x.entry_number for x in lines]


def test_an_offer_accepted_in_full_in_part_or_declined(server, match, quota, offers):
    whole = answer(match, offers[0], "92")
    assert (whole.result.decision, list(whole.result.reasons), whole.result.granted_quantity) == (PARTIAL, ["PRORATED", "OFFER_ACCEPTED"], "92")
    assert not whole.replayed and charged(quota) == "990"
    part = answer(match, offers[1], "20").result
    assert (part.decision, part.granted_quantity, part.granted_measure) == (PARTIAL, "20", "120")
    assert charged(quota) == "834" and used(match, 2) == "20"  # 26 dozen (156 SME) back to the level
    none = answer(match, offers[2], "0").result
    assert (none.decision, list(none.reasons), none.granted_quantity) == (MFN, ["PRORATED", "OFFER_DECLINED"], "0")
    assert charged(quota) == "672" and used(match, 3) == "0"
    # The original presentation time stays with what was accepted.
    assert whole.result.presentation_time == part.presentation_time
    assert reconcile_ledger(server.database).drifts == []


def test_the_same_answer_replays_and_another_is_refused(match, quota, offers):
    first = answer(match, offers[1], "20")
    again = answer(match, offers[1], "20")
    assert again.replayed and again.result.claim_id == first.result.claim_id and charged(quota) == "834"
    with pytest.raises(grpc.RpcError) as caught:
        answer(match, offers[1], "30")
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "OFFER_ALREADY_ANSWERED")
    assert charged(quota) == "834"


def test_bad_answers_are_refused_and_change_nothing(match, quota, offers, clock):
    cases = [
        ("1.5", grpc.StatusCode.INVALID_ARGUMENT, "ACCEPTED_QUANTITY_INVALID"),  # whole units only
        ("93", grpc.StatusCode.INVALID_ARGUMENT, "ACCEPTED_QUANTITY_INVALID"),  # more than offered
        ("-1", grpc.StatusCode.INVALID_ARGUMENT, "ACCEPTED_QUANTITY_INVALID"),
        ("ninety", grpc.StatusCode.INVALID_ARGUMENT, "ACCEPTED_QUANTITY_INVALID"),
        ("", grpc.StatusCode.INVALID_ARGUMENT, "FIELD_REQUIRED"),
    ]
    for accepted, code, reason in cases:
        with pytest.raises(grpc.RpcError) as caught:
            answer(match, offers[0], accepted)
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (code, reason), accepted
        assert "accepted_quantity" in error.fields
    with pytest.raises(grpc.RpcError) as caught:
        answer(match, claim_line(77).entry_number, "1")
    assert rich_error(caught.value).reason == "CLAIM_NOT_FOUND"
    # A line waiting for the cutoff batch (after the opening the level is past its critical share)
    # holds no offer.
    plain = match.MatchClaim(mpb.MatchClaimRequest(line=line(4, "1", AFTER_NOON))).result
    assert plain.decision == mpb.CLAIM_DECISION_PENDING
    with pytest.raises(grpc.RpcError) as caught:
        answer(match, plain.entry_number, "1")
    assert (rich_error(caught.value).code, rich_error(caught.value).reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_OFFER")
    assert charged(quota) == "990"


def test_an_unanswered_offer_lapses_at_its_deadline_and_its_share_goes_to_the_next_claims(server, match, quota, offers, clock):
    answer(match, offers[0], "92")
    clock.at = DEADLINE - dt.timedelta(seconds=1)
    assert server.use_cases.claims.lapse_due_offers() == 0  # not yet
    clock.at = DEADLINE
    assert server.use_cases.claims.lapse_due_offers() == 2  # the timer does this every few seconds
    assert server.use_cases.claims.lapse_due_offers() == 0  # once
    lapsed = match.GetClaim(mpb.GetClaimRequest(entry_number=offers[1], line_number=1)).result
    assert (lapsed.decision, list(lapsed.reasons), lapsed.granted_quantity) == (MFN, ["PRORATED", "OFFER_LAPSED"], "0")
    assert charged(quota) == "552" and used(match, 2) == "0"  # 46 + 27 dozen (438 SME) back
    with pytest.raises(grpc.RpcError) as caught:
        answer(match, offers[2], "27")
    assert (rich_error(caught.value).code, rich_error(caught.value).reason) == (grpc.StatusCode.FAILED_PRECONDITION, "OFFER_LAPSED")
    # The returned share goes to the next claims, first come first served by presentation time.
    at = DEADLINE + dt.timedelta(hours=1)
    clock.at = at
    nxt = match.MatchClaim(mpb.MatchClaimRequest(line=line(5, "70", at))).result
    assert nxt.decision == mpb.CLAIM_DECISION_PENDING  # 552 + 420 would pass 90% of 1000: decided at the cutoff
    run_cutoff_batch(server, clock)
    nxt = match.GetClaim(mpb.GetClaimRequest(entry_number=nxt.entry_number, line_number=1)).result
    assert (nxt.decision, nxt.granted_quantity) == (PREFERENTIAL, "70")
    assert charged(quota) == "972"
    assert reconcile_ledger(server.database).drifts == []


def test_an_offer_answered_after_its_deadline_before_the_timer_is_refused(match, quota, offers, clock):
    clock.at = DEADLINE
    with pytest.raises(grpc.RpcError) as caught:
        answer(match, offers[0], "92")
    assert rich_error(caught.value).reason == "OFFER_LAPSED"
    assert charged(quota) == "990"


def test_a_canceled_offer_returns_its_share(server, match, quota, offers):
    match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=offers[2], line_number=1, kind=mpb.REVERSAL_KIND_CANCELED))
    assert charged(quota) == "828" and used(match, 3) == "0"
    assert reconcile_ledger(server.database).drifts == []
