"""The hold near fill and the daily cutoff batch, through the real gRPC server on both engines.

Sources: 19 CFR 132.11 (presentation time decides; the claim that fills the level is cut), 19 CFR
132.12 (claims presented at the same instant are simultaneous, pro rata), CSMS 16-000886 (a prorated
share is an offer with five business days to answer), QB 23-128 (quota entries finalize after the
daily batch at 8:30 PM ET). The test clock starts on Monday 2 March 2026, 10:00 Eastern (EST).
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select

from contract.log_entry import LogEntry

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb
from server.adapters.orm import LogEntryRow
from server.app import create_server
from server.service.batches import Batches
from tests.factories import NOW, certificate, claim_line, envelope, run_cutoff_batch, small_levels

UTC = dt.timezone.utc
PENDING = mpb.CLAIM_DECISION_PENDING
CUTOFF = dt.datetime(2026, 3, 3, 1, 30, tzinfo=UTC)  # Monday 2 March, 20:30 EST
NEXT_CUTOFF = CUTOFF + dt.timedelta(days=1)


@pytest.fixture
def near_fill(server, transmission, partner, clock, match):  # type: ignore[no-untyped-def]
    """TPL 1 limited to 1,000 SME, three certificates of 1,200 dozen knit shirts (6 SME a dozen), and a
    first claim of 150 dozen decided at once: 900 SME, exactly the 90% critical share."""
    server.use_cases.references.load(small_levels("batch", {"9823.53.01": "1000"}))
    for n in range(1, 4):
        env = envelope(partner.signer, certificate(f"MX26-0000000{n}"), message_id=f"b-{n}", sent_at=clock.at)
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env))
    first = claim(match, 1, "150", NOW)
    assert first.decision == mpb.CLAIM_DECISION_PREFERENTIAL
    clock.advance(minutes=10)


def claim(match, n: int, quantity: str, presented: dt.datetime, certificate_number: str = "MX26-00000001") -> mpb.ClaimResult:  # type: ignore[no-untyped-def]
    line = claim_line(n, quantity=quantity, certificate_number=certificate_number, paid_at=presented)
    return match.MatchClaim(mpb.MatchClaimRequest(line=line)).result


def current(match, result: mpb.ClaimResult) -> mpb.ClaimResult:  # type: ignore[no-untyped-def]
    return match.GetClaim(mpb.GetClaimRequest(entry_number=result.entry_number, line_number=result.line_number)).result


def charged(quota) -> str:  # type: ignore[no-untyped-def]
    return quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number="9823.53.01", quota_year=2026)).status.charged


def test_simultaneous_claims_at_the_cutoff_share_what_is_left_as_offers(server, match, quota, clock, near_fill):
    # X and Y are presented at the same instant and ask 60 SME each; 100 SME are left: 19 CFR 132.12,
    # one rate, 100/120 -> 8.33 -> 8 dozen each (48 SME), offered (CSMS 16-000886). Z, a minute later,
    # finds 4 SME: less than a dozen, nothing (the claim that fills is cut, here to zero).
    instant = NOW + dt.timedelta(minutes=1)
    x = claim(match, 2, "10", instant, "MX26-00000002")
    z = claim(match, 4, "1", instant + dt.timedelta(minutes=1), "MX26-00000003")
    y = claim(match, 3, "10", instant, "MX26-00000003")
    assert {r.decision for r in (x, y, z)} == {PENDING} and charged(quota) == "900"
    assert run_cutoff_batch(server, clock) == CUTOFF
    x, y, z = (current(match, r) for r in (x, y, z))
    for offer in (x, y):
        assert (offer.decision, list(offer.reasons), offer.granted_quantity, offer.proration_rate) == (
            mpb.CLAIM_DECISION_PRORATED_OFFER, ["PRORATED"], "8", "0.833333")
        # Five business days after Monday 2 March (3, 4, 5, 6 and 9 March), to midnight: 10 March 00:00 EDT.
        assert offer.offer_expires_at.ToDatetime(tzinfo=UTC) == dt.datetime(2026, 3, 10, 4, tzinfo=UTC)
        assert offer.batch_cutoff.ToDatetime(tzinfo=UTC) == CUTOFF
    assert (z.decision, list(z.reasons), z.granted_quantity, z.proration_rate) == (mpb.CLAIM_DECISION_MFN_REQUIRED, ["LEVEL_FILLED"], "0", "")
    assert charged(quota) == "996"  # the offers are reserved on the level
    # The log entry of each decision names the batch that made it, for outsiders to check.
    with server.database.read_engine.connect() as connection:
        rows = connection.execute(select(LogEntryRow.entry).where(
            LogEntryRow.kind == "ALLOCATION", LogEntryRow.subject == f"entry:{x.entry_number}/1#1")).scalars().all()
    assert [LogEntry.decode(r).facts["batch_cutoff"] for r in rows] == [CUTOFF.isoformat()]
    # ... and the offer's deadline, five business days on (CSMS 16-000886).
    assert [LogEntry.decode(r).facts["offer_expires"] for r in rows] == [x.offer_expires_at.ToDatetime(tzinfo=UTC).isoformat()]
    # An offer of a cutoff batch is answered like the opening's: the accepted part is granted.
    answered = match.AnswerProratedOffer(mpb.AnswerProratedOfferRequest(entry_number=x.entry_number, line_number=1, accepted_quantity="5"))
    assert (answered.result.decision, answered.result.granted_quantity) == (mpb.CLAIM_DECISION_PARTIAL, "5")
    assert charged(quota) == "978"


def test_a_claim_presented_before_a_cutoff_already_run_joins_the_next_batch(server, match, quota, clock, near_fill):
    early = claim(match, 2, "10", NOW + dt.timedelta(minutes=2))
    run_cutoff_batch(server, clock)
    assert current(match, early).decision == mpb.CLAIM_DECISION_PREFERENTIAL  # 960 SME
    # Presented before that cutoff, it reaches customs only after its batch: it waits for the next one,
    # where it is ranked by its presentation time (before the claim presented after the cutoff).
    late_arrival = claim(match, 3, "5", NOW + dt.timedelta(minutes=1), "MX26-00000002")
    after_cutoff = claim(match, 4, "5", clock.at, "MX26-00000003")
    assert (late_arrival.decision, after_cutoff.decision) == (PENDING, PENDING)
    assert not server.use_cases.claims.run_due_batch()  # that cutoff's batch is complete
    assert current(match, late_arrival).decision == PENDING
    assert run_cutoff_batch(server, clock) == NEXT_CUTOFF
    late_arrival, after_cutoff = current(match, late_arrival), current(match, after_cutoff)
    assert (late_arrival.decision, late_arrival.granted_quantity) == (mpb.CLAIM_DECISION_PREFERENTIAL, "5")  # 990
    assert (after_cutoff.decision, after_cutoff.granted_quantity) == (mpb.CLAIM_DECISION_PARTIAL, "1")  # 10 SME left: 1 dozen
    assert late_arrival.batch_cutoff.ToDatetime(tzinfo=UTC) == NEXT_CUTOFF and charged(quota) == "996"


def test_a_pending_claim_canceled_gives_back_its_reservation_and_is_not_decided(server, match, quota, clock, near_fill):
    waiting = claim(match, 2, "50", NOW + dt.timedelta(minutes=1), "MX26-00000002")
    usage = lambda: match.GetCertificateUsage(mpb.GetCertificateUsageRequest(issuing_country="MX", certificate_number="MX26-00000002"))  # noqa: E731
    assert (waiting.decision, usage().used_quantity) == (PENDING, "50")  # reserved, nothing charged
    canceled = match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=waiting.entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED))
    assert canceled.reversed.reversed and usage().used_quantity == "0"
    run_cutoff_batch(server, clock)
    after = current(match, waiting)
    assert (after.decision, after.reversed, charged(quota)) == (PENDING, True, "900")  # left as it was canceled
    # Nothing waits and 900 is within the critical share: the hold is lifted and claims that fit are decided at once.
    assert quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number="9823.53.01", quota_year=2026)).status.state == qpb.QUOTA_STATE_CRITICAL


def test_a_batch_stopped_between_steps_is_finished_by_another_replica(server, settings, match, quota, clock, near_fill, monkeypatch):
    # Five claims presented a minute apart, 3 dozen (18 SME) each, 100 SME left: the first five fit
    # whole (90 SME), decided over steps of two claims; replica A stops after its first step, replica B
    # (another server on the same database), starting after the cutoff, finishes the batch: the same
    # result as in one go.
    pending = [claim(match, 10 + n, "3", NOW + dt.timedelta(minutes=1 + n), f"MX26-0000000{1 + n % 3}") for n in range(6)]
    assert {r.decision for r in pending} == {PENDING}
    monkeypatch.setattr("server.service.batches.BATCH_CHUNK", 2)
    decide = Batches._decide_pending
    steps: list[int] = []

    def stops(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        steps.append(1)
        if len(steps) == 2:
            raise RuntimeError("the process stopped")
        return decide(self, *args, **kwargs)

    monkeypatch.setattr(Batches, "_decide_pending", stops)
    clock.at = CUTOFF + dt.timedelta(seconds=1)
    with pytest.raises(RuntimeError):
        server.use_cases.claims.run_due_batch()
    decided = [current(match, r).decision for r in pending]
    assert decided == [mpb.CLAIM_DECISION_PREFERENTIAL] * 2 + [PENDING] * 4  # the first step committed
    monkeypatch.setattr(Batches, "_decide_pending", decide)
    replica = create_server(settings, address="127.0.0.1:0", clock=clock)  # a cutoff passed: it runs that batch as it starts
    try:
        assert not replica.use_cases.claims.run_due_batch()  # done already
    finally:
        replica.stop(0)
    results = [current(match, r) for r in pending]
    # 900 + 5 x 18 = 990; the sixth would need 18 of the 10 left: cut to one dozen (6 SME).
    assert [(r.decision, r.granted_quantity) for r in results] == [(mpb.CLAIM_DECISION_PREFERENTIAL, "3")] * 5 + [(mpb.CLAIM_DECISION_PARTIAL, "1")]
    assert charged(quota) == "996" and {r.batch_cutoff.ToDatetime(tzinfo=UTC) for r in results} == {CUTOFF}
    assert sum(Decimal(r.granted_measure) for r in results) == 96
