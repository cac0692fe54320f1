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
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

import grpc
from sqlalchemy import text

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import certificate, claim_line, envelope, run_cutoff_batch, small_levels
from server.app import create_server
from server.service.clock import FixedClock
from tests.integration.test_ledger_invariants import assert_balanced, scalar

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


def test_lines_a_lagging_replica_still_reviewing_files_while_the_other_allocates_are_held_or_decided_after(  # type: ignore[no-untyped-def]
    server, settings, match, transmission, partner, clock,
):
    # A read-then-write across replicas: the opening's last step reads which TPLs have lines pending
    # from the review and puts those levels on hold. Here replica B's clock lags 30 s, so B still sees
    # the review and answers lines presented after the window PENDING while A allocates the opening.
    # Each such line must either have committed before the opening began (then its level is on hold
    # when the opening completes) or see the opening and be decided after it: never a line left
    # pending on an open level, where later lines would be decided ahead of it.
    server.use_cases.references.load(small_levels("review-race", {TPL: "100000"}, opening=REVIEWED))
    clock.at = _eastern(4, 9).astimezone(dt.timezone.utc)
    numbers = [f"MX27-0000080{n}" for n in range(4)]
    for n, number in enumerate(numbers):
        cert = certificate(number, quantity="1000", quota_year=2027, issue_date="2026-12-15", last_valid_date="2027-12-31", **GOODS)
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, cert, message_id=f"rr-{n}", sent_at=clock.at)))
    for n in range(12):
        line = claim_line(800 + n, certificate_number=numbers[n % 4], quantity="5", filed_at=clock.at, arrived_at=clock.at,
                          paid_at=clock.at, date_of_importation="2027-01-02", **GOODS)
        assert match.MatchClaim(mpb.MatchClaimRequest(line=line)).result.decision == mpb.CLAIM_DECISION_QUEUED
    clock.at = (FINAL + dt.timedelta(seconds=1)).astimezone(dt.timezone.utc)
    lagging = FixedClock(clock.at - dt.timedelta(seconds=30))
    presented = lagging.at - dt.timedelta(minutes=5)  # after the window, during the review as B sees it
    late = [claim_line(900 + n, certificate_number=numbers[n % 4], quantity="1", filed_at=presented, arrived_at=presented,
                       paid_at=presented, date_of_importation="2027-01-02", **GOODS) for n in range(16)]
    replica = create_server(settings, address="127.0.0.1:0", clock=lagging)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
            lagging_match = match_pb2_grpc.MatchServiceStub(channel)
            def file(line: mpb.EntrySummaryLine) -> mpb.ClaimResult:
                return lagging_match.MatchClaim(mpb.MatchClaimRequest(line=line)).result

            answers = [file(line) for line in late[:4]]  # before A begins: certainly still under review
            with ThreadPoolExecutor(8) as pool:
                opened = pool.submit(server.use_cases.claims.allocate_due_openings)
                answers += list(pool.map(file, late[4:]))
                opened.result()
    finally:
        replica.stop(0)
    assert _opening_row(server)[0] is not None  # type: ignore[index]
    reviewed = [a for a in answers if list(a.reasons) == ["OPENING_UNDER_REVIEW"]]
    assert len(reviewed) >= 4 and all(a.decision == mpb.CLAIM_DECISION_PENDING for a in reviewed)
    # Every line still pending has its level on hold now that the opening is complete.
    unheld = scalar(server, "SELECT count(*) FROM claims c JOIN quota_levels l ON l.tpl_number = c.tpl_number AND l.quota_year = c.quota_year"
                            " WHERE c.decision = 'PENDING' AND c.reversed_at IS NULL AND l.held_since IS NULL")
    assert unheld == 0
    assert scalar(server, "SELECT count(*) FROM quota_levels WHERE tpl_number = :t AND quota_year = 2027 AND held_since IS NOT NULL", t=TPL) == 1
    # The first cutoff after the opening decides every waiting line; the books balance.
    run_cutoff_batch(server, clock)
    assert scalar(server, "SELECT count(*) FROM claims WHERE decision IN ('PENDING', 'QUEUED') AND reversed_at IS NULL") == 0
    for line in late:  # (room for all: 100,000 SME)
        decided = match.GetClaim(mpb.GetClaimRequest(entry_number=line.entry_number, line_number=1)).result
        assert decided.decision == mpb.CLAIM_DECISION_PREFERENTIAL
    assert_balanced(server)
