"""TPL levels: balances, states, and how much a claim (or an opening batch) may be granted.

Nothing here touches storage; the ledger's atomic conditional updates enforce the same bounds in
the database, so a race can only make a charge fail and be recomputed, never exceed a level.
"""
from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction


class QuotaState(enum.Enum):
    OPEN = "OPEN"
    CRITICAL = "CRITICAL"
    # Near fill: claims wait for the daily cutoff batch, decided in presentation-time order (domain/batch.py).
    ON_HOLD = "ON_HOLD"
    FILLED = "FILLED"
    CLOSED = "CLOSED"


class QuotaEventKind(enum.Enum):
    BECAME_CRITICAL = "BECAME_CRITICAL"
    ON_HOLD = "ON_HOLD"
    FILLED = "FILLED"
    REOPENED = "REOPENED"
    CHARGED = "CHARGED"


def quota_period(quota_year: int) -> tuple[dt.date, dt.date]:
    """The first and last day of a TPL quota period: the calendar year (in the importing country's
    time; server/service/quota.py turns the days into instants)."""
    return dt.date(quota_year, 1, 1), dt.date(quota_year, 12, 31)


@dataclass(frozen=True)
class Level:
    tpl_number: str
    quota_year: int
    label: str
    measure_unit: str
    limit: Decimal
    charged: Decimal
    aggregate: str | None  # the aggregate ceiling this level also charges
    # When lines may first be presented for the period: 00:00 on its first business day (its opening
    # date); lines presented earlier get no quota status.
    opens_at: dt.datetime
    closes_at: dt.datetime  # the first instant after the period
    # The end of the opening window (12:00 noon Eastern on the opening date): lines presented from
    # `opens_at` until then count as presented at the opening moment and are decided together when
    # it closes. None: no window (the period simply opens at `opens_at`).
    window_closes_at: dt.datetime | None = None
    # Lines presented before `opens_at` get no quota status (else: count as presented at the opening).
    refuse_before_opening: bool = True
    # On hold since a claim would have passed the critical share: claims wait for the cutoff batch.
    held_since: dt.datetime | None = None

    @property
    def held(self) -> bool:
        return self.held_since is not None

    @property
    def remaining(self) -> Decimal:
        return self.limit - self.charged

    @property
    def fill_share(self) -> Decimal:
        if self.limit <= 0:
            return Decimal(1)
        return (self.charged / self.limit).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)

    def is_open_at(self, at: dt.datetime) -> bool:
        return self.opens_at <= at < self.closes_at

    def state_at(self, at: dt.datetime, critical_share: Decimal) -> QuotaState:
        if not self.is_open_at(at):
            return QuotaState.CLOSED
        return self.fill_state(critical_share)

    def fill_state(self, critical_share: Decimal) -> QuotaState:
        if self.charged >= self.limit:
            return QuotaState.FILLED
        if self.held:
            return QuotaState.ON_HOLD
        if self.charged >= self.limit * critical_share:
            return QuotaState.CRITICAL
        return QuotaState.OPEN


def event_between(before: QuotaState, after: QuotaState) -> QuotaEventKind | None:
    """What a subscriber is told when a level's fill state changes (None: nothing changed)."""
    rank = {QuotaState.OPEN: 0, QuotaState.CRITICAL: 1, QuotaState.ON_HOLD: 2, QuotaState.FILLED: 3}
    if before == after or before not in rank or after not in rank:
        return None
    if rank[after] < rank[before]:
        return QuotaEventKind.REOPENED
    if after is QuotaState.FILLED:
        return QuotaEventKind.FILLED
    return QuotaEventKind.ON_HOLD if after is QuotaState.ON_HOLD else QuotaEventKind.BECAME_CRITICAL


def whole_units_down(value: Decimal | Fraction) -> Decimal:
    """Round down to a whole unit of the goods: what a cut or prorated claim may be granted."""
    if isinstance(value, Fraction):
        return Decimal(value.numerator // value.denominator)
    return value.to_integral_value(rounding=ROUND_DOWN)


@dataclass(frozen=True)
class Grant:
    quantity: Decimal  # in the goods' unit
    measure: Decimal  # in the level's measure unit


def grant_first_come(quantity: Decimal, factor: Decimal, available: Decimal) -> Grant:
    """A claim gets all it asks while the level has room; the claim that fills it is cut to what
    remains, rounded down to a whole unit so that the level is never exceeded."""
    wanted = quantity * factor
    if wanted <= available:
        return Grant(quantity, wanted)
    if available <= 0:
        return Grant(Decimal(0), Decimal(0))
    units = min(quantity, whole_units_down(Fraction(available) / Fraction(factor)))
    return Grant(units, units * factor)


def opening_rates(
    demand: dict[str, Fraction], remaining: dict[str, Decimal], aggregate_of: dict[str, str | None]
) -> dict[str, Fraction]:
    """19 CFR 132.12: claims presented at the opening moment are simultaneous; if they exceed a
    level, each gets the same percentage of what it asked. One rate per member level, from what its
    opening claims ask in all (`demand`, in its measure); each claim's grant is opening_grant.

    Each member level gets rate min(1, room / demand). Where members share an aggregate ceiling
    (TPL 4 and 5 under TPL 3), the members' rates are scaled down together until the aggregate
    holds. Grants are rounded down to whole units, so the sum never exceeds any level; what the
    rounding leaves stays in the level for the next claimant.
    """
    rates = {
        level: min(Fraction(1), max(Fraction(0), Fraction(remaining[level])) / wanted) if wanted else Fraction(1)
        for level, wanted in demand.items()
    }
    by_aggregate: dict[str, list[str]] = {}
    for level in demand:
        aggregate = aggregate_of.get(level)
        if aggregate is not None:
            by_aggregate.setdefault(aggregate, []).append(level)
    for aggregate, members in by_aggregate.items():
        granted = sum((demand[m] * rates[m] for m in members), Fraction(0))
        room = max(Fraction(0), Fraction(remaining[aggregate]))
        if granted > room:
            scale = room / granted
            for member in members:
                rates[member] *= scale
    return rates


def opening_grant(quantity: Decimal, factor: Decimal, rate: Fraction) -> Grant:
    """What one claim of the opening batch gets at its level's rate: all it asked at a rate of 1,
    else that share rounded down to a whole unit. Depends on nothing else, so an allocation that
    stopped halfway can finish claim by claim from the stored rates."""
    if rate >= 1:
        return Grant(quantity, quantity * factor)
    units = whole_units_down(Fraction(quantity) * rate)
    return Grant(units, units * factor)


def rate_text(rate: Fraction) -> str:
    """A rate as a decimal fraction rounded down to six places ("0.481735")."""
    return str(Decimal(rate.numerator * 10**6 // rate.denominator) / Decimal(10**6))
