"""Opening proration, level states and the audit chain, in plain Python."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from server.domain.audit import GENESIS, AuditRecord, first_broken_link, link_hash
from server.domain.quota import Level, OpeningClaim, QuotaEventKind, QuotaState, allocate_opening, event_between, rate_text

UTC = dt.timezone.utc


def test_oversubscribed_opening_gives_every_claimant_the_same_rate():
    claims = [OpeningClaim(f"c{n}", "L", Decimal(q), Decimal(1)) for n, q in enumerate((500, 300, 200, 100))]
    result = allocate_opening(claims, {"L": Decimal(550)}, {"L": None})
    assert result.rates["L"] == Fraction(550, 1100)
    assert [result.grants[f"c{n}"].quantity for n in range(4)] == [250, 150, 100, 50]
    assert rate_text(result.rates["L"]) == "0.5"


def test_rounding_down_never_exceeds_the_level():
    claims = [OpeningClaim(f"c{n}", "L", Decimal(7), Decimal("6.0")) for n in range(3)]  # 126 SME asked
    result = allocate_opening(claims, {"L": Decimal(100)}, {"L": None})
    granted = sum(g.measure for g in result.grants.values())
    assert granted <= 100 and all(g.quantity == 5 for g in result.grants.values())  # 7 * 100/126 = 5.55 -> 5


def test_aggregate_scales_its_members_together():
    claims = [OpeningClaim("w", "T4", Decimal(600), Decimal(1)), OpeningClaim("k", "T5", Decimal(600), Decimal(1))]
    result = allocate_opening(claims, {"T4": Decimal(1000), "T5": Decimal(1000), "T3": Decimal(600)}, {"T4": "T3", "T5": "T3", "T3": None})
    assert result.rates == {"T4": Fraction(1, 2), "T5": Fraction(1, 2)}
    assert sum(g.measure for g in result.grants.values()) == 600


def test_undersubscribed_opening_grants_everything():
    claims = [OpeningClaim("a", "L", Decimal("10.5"), Decimal(1))]
    assert allocate_opening(claims, {"L": Decimal(100)}, {"L": None}).grants["a"].quantity == Decimal("10.5")


@given(
    asks=st.lists(st.integers(min_value=1, max_value=10_000), min_size=3, max_size=40),
    room=st.integers(min_value=0, max_value=200_000),
    factor=st.sampled_from([Decimal(1), Decimal("6.0"), Decimal("14.9"), Decimal("12.3")]),
)
def test_proration_is_fair_and_never_over(asks, room, factor):
    claims = [OpeningClaim(str(n), "L", Decimal(q), factor) for n, q in enumerate(asks)]
    result = allocate_opening(claims, {"L": Decimal(room)}, {"L": None})
    grants = [result.grants[str(n)] for n in range(len(asks))]
    assert sum(g.measure for g in grants) <= room
    rate = result.rates["L"]
    for ask, grant in zip(asks, grants):
        assert 0 <= grant.quantity <= ask
        # Each gets its share of one common rate, less less than one whole unit of rounding.
        assert Fraction(ask) * rate - 1 < Fraction(grant.quantity) <= Fraction(ask) * rate


def test_states_and_events():
    level = Level("T", 2026, "TPL", "SME", Decimal(100), Decimal(90), None, dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC))
    assert level.state_at(dt.datetime(2026, 6, 1, tzinfo=UTC), Decimal("0.9")) is QuotaState.CRITICAL
    assert level.state_at(dt.datetime(2027, 6, 1, tzinfo=UTC), Decimal("0.9")) is QuotaState.CLOSED
    assert event_between(QuotaState.OPEN, QuotaState.CRITICAL) is QuotaEventKind.BECAME_CRITICAL
    assert event_between(QuotaState.CRITICAL, QuotaState.FILLED) is QuotaEventKind.FILLED
    assert event_between(QuotaState.FILLED, QuotaState.OPEN) is QuotaEventKind.REOPENED
    assert event_between(QuotaState.OPEN, QuotaState.OPEN) is None


def chain(n: int) -> list[AuditRecord]:
    records, prev = [], GENESIS
    for seq in range(1, n + 1):
        digest = link_hash(prev, seq, "2026-01-01T00:00:00+00:00", "DECISION", f"s{seq}", '{"x":1}')
        records.append(AuditRecord(seq, "2026-01-01T00:00:00+00:00", "DECISION", f"s{seq}", '{"x":1}', prev, digest))
        prev = digest
    return records


def test_intact_chain_verifies_and_any_change_is_found_where_it_is():
    records = chain(5)
    assert first_broken_link(records) == (None, 5)
    altered = list(records)
    altered[2] = AuditRecord(3, records[2].at, "DECISION", "s3", '{"x":2}', records[2].prev_hash, records[2].hash)
    assert first_broken_link(altered)[0] == 3
    assert first_broken_link(records[:2] + records[3:])[0] == 4  # a removed record
    assert first_broken_link([records[1], records[0]] + records[2:])[0] == 2  # reordered
