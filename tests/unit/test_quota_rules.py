"""Opening proration and level states, in plain Python (the transparency log: test_log_tree.py)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.claims import Decision, decide_at_opening
from server.domain.quota import Level, QuotaEventKind, QuotaState, event_between, opening_grant, opening_rates, rate_text

UTC = dt.timezone.utc


def _opening(asks: dict[str, tuple[list[Decimal], Decimal]], room: dict[str, int], aggregate_of: dict[str, str | None]):  # type: ignore[no-untyped-def]
    """The rates for claims asking `asks` (level -> quantities, factor), and each claim's grant."""
    demand = {level: sum((Fraction(q * factor) for q in quantities), Fraction(0)) for level, (quantities, factor) in asks.items()}
    rates = opening_rates(demand, {level: Decimal(r) for level, r in room.items()}, aggregate_of)
    grants = {level: [opening_grant(q, factor, rates[level]) for q in quantities] for level, (quantities, factor) in asks.items()}
    return rates, grants


def test_oversubscribed_opening_gives_every_claimant_the_same_rate():
    rates, grants = _opening({"L": ([Decimal(q) for q in (500, 300, 200, 100)], Decimal(1))}, {"L": 550}, {"L": None})
    assert rates["L"] == Fraction(550, 1100)
    assert [g.quantity for g in grants["L"]] == [250, 150, 100, 50]
    assert rate_text(rates["L"]) == "0.5"


def test_rounding_down_never_exceeds_the_level():
    rates, grants = _opening({"L": ([Decimal(7)] * 3, Decimal("6.0"))}, {"L": 100}, {"L": None})  # 126 SME asked
    assert sum(g.measure for g in grants["L"]) <= 100 and all(g.quantity == 5 for g in grants["L"])  # 7 * 100/126 = 5.55 -> 5


def test_aggregate_scales_its_members_together():
    rates, grants = _opening(
        {"T4": ([Decimal(600)], Decimal(1)), "T5": ([Decimal(600)], Decimal(1))},
        {"T4": 1000, "T5": 1000, "T3": 600}, {"T4": "T3", "T5": "T3", "T3": None},
    )
    assert rates == {"T4": Fraction(1, 2), "T5": Fraction(1, 2)}
    assert sum(g.measure for level in grants.values() for g in level) == 600


def test_undersubscribed_opening_grants_everything():
    rates, grants = _opening({"L": ([Decimal("10.5")], Decimal(1))}, {"L": 100}, {"L": None})
    assert rates["L"] == 1 and grants["L"][0].quantity == Decimal("10.5")


@given(
    asks=st.lists(st.integers(min_value=1, max_value=10_000), min_size=3, max_size=40),
    room=st.integers(min_value=0, max_value=200_000),
    factor=st.sampled_from([Decimal(1), Decimal("6.0"), Decimal("14.9"), Decimal("12.3")]),
)
def test_proration_is_fair_and_never_over(asks, room, factor):
    rates, grants = _opening({"L": ([Decimal(q) for q in asks], factor)}, {"L": room}, {"L": None})
    assert sum(g.measure for g in grants["L"]) <= room
    rate = rates["L"]
    for ask, grant in zip(asks, grants["L"]):
        assert 0 <= grant.quantity <= ask
        # Each gets its share of one common rate, less less than one whole unit of rounding.
        assert Fraction(ask) * rate - 1 < Fraction(grant.quantity) <= Fraction(ask) * rate


@pytest.mark.parametrize(
    "quantity,rate,room,decision,reasons,granted",
    [
        ("100", Fraction(1), "1000", Decision.PREFERENTIAL, (), "100"),
        # CSMS 16-000886: a prorated share is offered (reserved), not granted.
        ("100", Fraction(925, 1000), "1000", Decision.PRORATED_OFFER, ("PRORATED",), "92"),
        ("1", Fraction(925, 1000), "1000", Decision.MFN_REQUIRED, ("PRORATED", "LEVEL_FILLED"), "0"),
        # Queued after the rates were set: cut, first come first served, to what the levels still hold.
        ("100", Fraction(925, 1000), "60", Decision.PARTIAL, ("LEVEL_FILLED", "PARTIAL_FILL"), "10"),
        ("100", Fraction(1), "5", Decision.MFN_REQUIRED, ("LEVEL_FILLED",), "0"),
    ],
)
def test_a_queued_claim_is_decided_at_its_rate_and_never_beyond_the_room(quantity, rate, room, decision, reasons, granted):
    decided = decide_at_opening(Decimal(quantity), Decimal("6.0"), rate, Decimal(room))
    assert (decided.decision, decided.reasons, decided.grant.quantity) == (decision, reasons, Decimal(granted))
    assert decided.grant.measure == decided.grant.quantity * Decimal("6.0") <= Decimal(room)


def test_states_and_events():
    level = Level("T", 2026, "TPL", "SME", Decimal(100), Decimal(90), None, dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC))
    assert level.state_at(dt.datetime(2026, 6, 1, tzinfo=UTC), Decimal("0.9")) is QuotaState.CRITICAL
    assert level.state_at(dt.datetime(2027, 6, 1, tzinfo=UTC), Decimal("0.9")) is QuotaState.CLOSED
    assert event_between(QuotaState.OPEN, QuotaState.CRITICAL) is QuotaEventKind.BECAME_CRITICAL
    assert event_between(QuotaState.CRITICAL, QuotaState.FILLED) is QuotaEventKind.FILLED
    assert event_between(QuotaState.FILLED, QuotaState.OPEN) is QuotaEventKind.REOPENED
    assert event_between(QuotaState.OPEN, QuotaState.OPEN) is None
