"""The hold near fill and the daily cutoff batch, in plain Python (server/domain/batch.py).

Sources: 19 CFR 132.11 (priority by presentation time; the claim that fills the level is cut),
19 CFR 132.12 (claims presented at the same instant are simultaneous and share pro rata), CSMS
16-000886 (a prorated share is an offer), QB 23-128 ("quota entries finalize after daily batching at
8:30 PM ET"). Every expected figure below is worked out by hand in its comment.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from server.domain.batch import BatchOutcome, PendingClaim, critical_cap, decide_batch, must_wait
from server.domain.claims import Decision, decided_in_batch
from server.domain.quota import Level, QuotaEventKind, QuotaState, event_between

UTC = dt.timezone.utc
T1 = dt.datetime(2026, 6, 1, 14, 0, tzinfo=UTC)
T2 = T1 + dt.timedelta(seconds=1)
T3 = T1 + dt.timedelta(seconds=2)


def _claim(claim_id: str, at: dt.datetime, quantity: int, tpl: str = "L", factor: str = "1") -> PendingClaim:
    return PendingClaim(claim_id, tpl, at, Decimal(quantity), Decimal(factor))


def _level(charged: str, limit: str = "1000", held: bool = False) -> Level:
    return Level("L", 2026, "TPL", "SME", Decimal(limit), Decimal(charged), None,
                 dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC), held_since=T1 if held else None)


def test_a_claim_waits_once_it_would_pass_the_critical_share():
    # 90% of 1000 is 900: from 896, a claim of 4 reaches it exactly and is decided at once; 5 would pass it.
    assert critical_cap(Decimal(1000), Decimal("0.9")) == Decimal(900)
    assert not must_wait([_level("896")], Decimal(4), Decimal("0.9"))
    assert must_wait([_level("896")], Decimal(5), Decimal("0.9"))
    # A claim that does not fit in full waits too, whatever the share (here 1: no critical share).
    assert must_wait([_level("996")], Decimal(5), Decimal(1)) and not must_wait([_level("995")], Decimal(5), Decimal(1))
    # On hold, even the smallest claim waits: an earlier-presented claim may be pending.
    assert must_wait([_level("0", held=True)], Decimal("0.000001"), Decimal("0.9"))
    # The aggregate ceiling a member also charges counts as much as the member.
    aggregate = Level("A", 2026, "AGG", "SME", Decimal(100), Decimal(95), None, T1, T1 + dt.timedelta(days=365))
    assert must_wait([_level("0"), aggregate], Decimal(1), Decimal("0.9"))


def test_presentation_order_decides_and_the_claim_that_fills_is_cut():
    # 50 left: A (30) first gets all; B (30) presented next is cut to 20, the rest; C (10) gets nothing.
    decided = decide_batch([_claim("A", T1, 30), _claim("B", T2, 30), _claim("C", T3, 10)], {"L": Decimal(50)}, {"L": None})
    assert [(d.claim_id, d.outcome, d.grant.quantity) for d in decided] == [
        ("A", BatchOutcome.GRANTED, 30), ("B", BatchOutcome.CUT, 20), ("C", BatchOutcome.CUT, 0),
    ]
    assert [decided_in_batch(d, "L") for d in decided] == [
        (Decision.PREFERENTIAL, ()), (Decision.PARTIAL, ("LEVEL_FILLED", "PARTIAL_FILL")), (Decision.MFN_REQUIRED, ("LEVEL_FILLED",)),
    ]


def test_a_cut_is_rounded_down_to_whole_units_of_the_goods():
    # 100 SME left, 20 dozen at 6 SME a dozen asked (120 SME): 100 / 6 = 16.67 -> 16 dozen, 96 SME.
    [decided] = decide_batch([_claim("A", T1, 20, factor="6")], {"L": Decimal(100)}, {"L": None})
    assert (decided.outcome, decided.grant.quantity, decided.grant.measure) == (BatchOutcome.CUT, 16, 96)


def test_simultaneous_claims_share_one_rate_as_offers():
    # 10 left; X, Y, Z presented at the same instant ask 6 + 6 + 3 = 15: rate 10/15 = 2/3 -> 4, 4, 2,
    # each an offer (CSMS 16-000886), not a grant. W, presented later, finds nothing left.
    decided = decide_batch(
        [_claim("X", T1, 6), _claim("Y", T1, 6), _claim("Z", T1, 3), _claim("W", T2, 1)], {"L": Decimal(10)}, {"L": None},
    )
    assert [(d.outcome, d.grant.quantity, d.rate) for d in decided] == [
        (BatchOutcome.OFFERED, 4, Fraction(2, 3)), (BatchOutcome.OFFERED, 4, Fraction(2, 3)), (BatchOutcome.OFFERED, 2, Fraction(2, 3)),
        (BatchOutcome.CUT, 0, Fraction(0)),
    ]
    assert decided_in_batch(decided[0], "L") == (Decision.PRORATED_OFFER, ("PRORATED",))


def test_what_rounding_leaves_goes_to_the_next_claimant():
    # 10 left; three simultaneous claims of 4 (12): rate 5/6 -> 3.33 -> 3 each, 9 offered; the 1 left
    # goes whole to the claim presented next.
    decided = decide_batch([_claim(c, T1, 4) for c in "XYZ"] + [_claim("N", T2, 1)], {"L": Decimal(10)}, {"L": None})
    assert [d.grant.quantity for d in decided] == [3, 3, 3, 1]
    assert decided[-1].outcome is BatchOutcome.GRANTED


def test_simultaneous_claims_that_fit_are_all_granted():
    decided = decide_batch([_claim("X", T1, 5), _claim("Y", T1, 5)], {"L": Decimal(10)}, {"L": None})
    assert [(d.outcome, d.grant.quantity) for d in decided] == [(BatchOutcome.GRANTED, 5), (BatchOutcome.GRANTED, 5)]


def test_a_shared_aggregate_scales_its_members_together():
    # TPL 4 and 5 each have 100 left but their aggregate only 50: simultaneous claims of 40 on each (80)
    # get 50/80 each: 25 and 25, offers bound by the aggregate.
    decided = decide_batch(
        [_claim("A", T1, 40, tpl="T4"), _claim("B", T1, 40, tpl="T5")],
        {"T4": Decimal(100), "T5": Decimal(100), "AG": Decimal(50)}, {"T4": "AG", "T5": "AG", "AG": None},
    )
    assert [(d.outcome, d.grant.quantity, d.binding) for d in decided] == [(BatchOutcome.OFFERED, 25, "AG"), (BatchOutcome.OFFERED, 25, "AG")]
    alone = decide_batch([_claim("C", T1, 60, tpl="T4")], {"T4": Decimal(100), "AG": Decimal(50)}, {"T4": "AG", "AG": None})
    assert decided_in_batch(alone[0], "T4") == (Decision.PARTIAL, ("AGGREGATE_FILLED", "PARTIAL_FILL"))


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 40), st.sampled_from(["1", "6", "2.5"])), max_size=30), st.integers(0, 400))
def test_a_batch_never_grants_more_than_is_left(claims, room):
    pending = [_claim(f"C{n}", T1 + dt.timedelta(seconds=at), q, factor=f) for n, (at, q, f) in enumerate(sorted(claims))]
    decided = decide_batch(pending, {"L": Decimal(room)}, {"L": None})
    assert sum(d.grant.measure for d in decided) <= room
    assert all(0 <= d.grant.quantity <= c.quantity and d.grant.quantity == int(d.grant.quantity) for c, d in zip(pending, decided))
    # Presentation order: once a claim got less than it asked, no later instant gets anything more
    # than what whole units of the left-over room allow.
    left = Decimal(room)
    for claim, d in zip(pending, decided):
        assert d.grant.measure <= left
        left -= d.grant.measure


def test_level_states_and_events_of_the_hold():
    assert _level("500", held=True).fill_state(Decimal("0.9")) is QuotaState.ON_HOLD
    assert _level("1000", held=True).fill_state(Decimal("0.9")) is QuotaState.FILLED  # filled says more
    assert event_between(QuotaState.OPEN, QuotaState.ON_HOLD) is QuotaEventKind.ON_HOLD
    assert event_between(QuotaState.CRITICAL, QuotaState.ON_HOLD) is QuotaEventKind.ON_HOLD
    assert event_between(QuotaState.ON_HOLD, QuotaState.FILLED) is QuotaEventKind.FILLED
    assert event_between(QuotaState.ON_HOLD, QuotaState.OPEN) is QuotaEventKind.REOPENED
