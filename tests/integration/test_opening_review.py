"""Headquarters' review of the opening batch, where a program's reference data gives one
(`opening.review_business_days`; QB 16-128: opening-moment entries are batched at 12:00 noon Eastern and
headquarters has three business days to review). On a real server over both engines, on the test clock.

2027: the window closes Monday 4 January at noon Eastern; with three business days of review the batch
is final Thursday 7 January at noon. Meanwhile a line presented in the window still joins the batch,
lines presented after it wait PENDING and no cutoff batch decides them; once the opening is allocated
its offers run five business days from then (CSMS 16-000886), and the next cutoff batch decides the
waiting lines in presentation order, not in the order they reached the service (19 CFR 132.12).
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import text

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import certificate, claim_line, envelope, run_cutoff_batch, small_levels
from tests.integration.test_ledger_invariants import assert_balanced

EASTERN = ZoneInfo("America/New_York")
TPL = "9823.53.02"  # women's wool sweaters, category 446: 30.8 SME a dozen in the packaged table
GOODS = {"tpl_number": TPL, "htsus_number": "6110.11.0030", "unit": "DOZ"}
REVIEWED = {"date": "first-business-day", "window_ends": "12:00", "before_opening": "refused", "review_business_days": 3}
NOON = dt.datetime(2027, 1, 4, 12, tzinfo=EASTERN)  # the opening moment
FINAL = dt.datetime(2027, 1, 7, 12, tzinfo=EASTERN)  # three business days later


def _eastern(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2027, 1, day, hour, minute, tzinfo=EASTERN)


def _claim(match, clock, n: int, quantity: str, presented: dt.datetime, sent: dt.datetime) -> mpb.ClaimResult:  # type: ignore[no-untyped-def]
    clock.at = sent.astimezone(dt.timezone.utc)
    line = claim_line(700 + n, certificate_number=f"MX27-0000070{n}", quantity=quantity, filed_at=presented, arrived_at=presented,
                      paid_at=presented, date_of_importation="2027-01-02", **GOODS)
    return match.MatchClaim(mpb.MatchClaimRequest(line=line)).result


def _get(match, n: int) -> mpb.ClaimResult:  # type: ignore[no-untyped-def]
    return match.GetClaim(mpb.GetClaimRequest(entry_number=claim_line(700 + n).entry_number, line_number=1)).result


def _opening_row(server) -> object:  # type: ignore[no-untyped-def]
    with server.database.read_engine.connect() as connection:
        return connection.execute(text("SELECT completed_at FROM quota_openings WHERE quota_year = 2027")).first()


def test_the_opening_batch_waits_for_the_review_and_later_lines_wait_for_the_batch_after_it(server, match, transmission, partner, clock):  # type: ignore[no-untyped-def]
    server.use_cases.references.load(small_levels("review", {TPL: "1000"}, opening=REVIEWED))
    clock.at = _eastern(4, 9).astimezone(dt.timezone.utc)
    for n in range(1, 6):
        cert = certificate(f"MX27-0000070{n}", quantity="100", quota_year=2027, issue_date="2026-12-15", last_valid_date="2027-12-31", **GOODS)
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, cert, message_id=f"rv-{n}", sent_at=clock.at)))

    # In the window (QB 16-128): the opening batch, at the opening moment's time stamp.
    a = _claim(match, clock, 1, "40", presented=_eastern(4, 10), sent=_eastern(4, 10))
    assert (a.decision, list(a.reasons)) == (mpb.CLAIM_DECISION_QUEUED, ["PERIOD_NOT_YET_OPEN"])

    # The window has closed, the review has not: nothing is allocated yet.
    clock.at = _eastern(4, 13).astimezone(dt.timezone.utc)
    server.use_cases.claims.allocate_due_openings()
    assert _opening_row(server) is None
    # Presented at 11:30 in the window, sent during the review: still the opening batch.
    b = _claim(match, clock, 2, "10", presented=_eastern(4, 11, 30), sent=_eastern(4, 13))
    assert (b.decision, b.presentation_time.ToDatetime(dt.timezone.utc)) == (mpb.CLAIM_DECISION_QUEUED, NOON.astimezone(dt.timezone.utc))
    # Presented after the window: after the whole batch, so it waits; it reaches the service first.
    d = _claim(match, clock, 4, "2", presented=_eastern(5, 14), sent=_eastern(5, 14))
    assert (d.decision, list(d.reasons)) == (mpb.CLAIM_DECISION_PENDING, ["OPENING_UNDER_REVIEW"])
    # A cutoff batch during the review decides nothing of the year.
    run_cutoff_batch(server, clock)  # Tuesday 5 January, 20:30 Eastern
    assert _get(match, 4).decision == mpb.CLAIM_DECISION_PENDING and _get(match, 1).decision == mpb.CLAIM_DECISION_QUEUED
    # Presented Monday afternoon, it reaches the service only on Wednesday.
    c = _claim(match, clock, 3, "1", presented=_eastern(4, 13), sent=_eastern(6, 9))
    assert (c.decision, list(c.reasons)) == (mpb.CLAIM_DECISION_PENDING, ["OPENING_UNDER_REVIEW"])

    clock.at = (FINAL - dt.timedelta(minutes=1)).astimezone(dt.timezone.utc)
    server.use_cases.claims.allocate_due_openings()
    assert _opening_row(server) is None
    clock.at = FINAL.astimezone(dt.timezone.utc)
    server.use_cases.claims.allocate_due_openings()  # (or the server's own timer, meanwhile)
    assert _opening_row(server) is not None and _opening_row(server)[0] is not None  # type: ignore[index]

    # 50 dozen asked in the batch (1540 SME) for 1000: one rate, 0.64935 (rounded down to six places); 25 and 6 dozen offered
    # (954.8 SME), decided as of the opening moment; the offers run five business days from the day the
    # batch became final (CSMS 16-000886): to the end of Thursday 14 January.
    for n, offered in ((1, "25"), (2, "6")):
        decided = _get(match, n)
        assert (decided.decision, decided.granted_quantity, decided.proration_rate) == (mpb.CLAIM_DECISION_PRORATED_OFFER, offered, "0.64935")
        assert decided.offer_expires_at.ToDatetime(dt.timezone.utc) == dt.datetime(2027, 1, 15, tzinfo=EASTERN).astimezone(dt.timezone.utc)
    # The waiting lines hold their level now: a line presented after the opening waits with them.
    e = _claim(match, clock, 5, "1", presented=_eastern(7, 13), sent=_eastern(7, 13))
    assert (e.decision, list(e.reasons)) == (mpb.CLAIM_DECISION_PENDING, ["LEVEL_ON_HOLD"])

    # The first cutoff after the opening decides them in presentation order: C (Monday 13:00, 30.8 SME)
    # fits the 45.2 SME left; D (Tuesday) and E (Thursday) find 14.4, less than a dozen.
    run_cutoff_batch(server, clock)  # Thursday 7 January, 20:30 Eastern
    assert (_get(match, 3).decision, _get(match, 3).granted_quantity) == (mpb.CLAIM_DECISION_PREFERENTIAL, "1")
    for n in (4, 5):
        assert (_get(match, n).decision, list(_get(match, n).reasons)) == (mpb.CLAIM_DECISION_MFN_REQUIRED, ["LEVEL_FILLED"])
    assert_balanced(server)


def test_without_a_review_the_opening_is_allocated_as_the_window_closes(server, match, transmission, partner, clock):  # type: ignore[no-untyped-def]
    # The packaged rule (no review delay): at noon the batch is allocated, and a line presented after the
    # window is decided after it at once, not left pending.
    server.use_cases.references.load(small_levels("no-review", {TPL: "100000"}))
    clock.at = _eastern(4, 9).astimezone(dt.timezone.utc)
    for n in (1, 2):
        cert = certificate(f"MX27-0000070{n}", quantity="100", quota_year=2027, issue_date="2026-12-15", last_valid_date="2027-12-31", **GOODS)
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, cert, message_id=f"nr-{n}", sent_at=clock.at)))
    assert _claim(match, clock, 1, "5", presented=_eastern(4, 10), sent=_eastern(4, 10)).decision == mpb.CLAIM_DECISION_QUEUED
    later = _claim(match, clock, 2, "5", presented=_eastern(4, 13), sent=_eastern(4, 13))
    assert later.decision == mpb.CLAIM_DECISION_PREFERENTIAL
    assert _get(match, 1).decision == mpb.CLAIM_DECISION_PREFERENTIAL
