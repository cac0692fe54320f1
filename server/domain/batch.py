"""Near fill, priority by presentation time: the hold and the daily cutoff batch.

While every claim fits, the order in which claims reach customs cannot matter, so each is decided at
once. Once a claim would take a level past its critical share (or would not fit in full), the order
does matter: 19 CFR 132.11 ranks claims by their presentation time, not by when a system saw them.
The level is then on hold. Its claims are answered PENDING (the certificate quantity reserved,
nothing charged) and decided together at the daily cutoff (CBP: "quota entries finalize after daily
batching at 8:30 PM ET", QB 23-128), in presentation-time order:

- claims presented at the same instant are simultaneous (19 CFR 132.12): if what is left cannot
  cover all of them, each gets the same share of what it asked, rounded down to whole units of the
  goods, as an offer (CSMS 16-000886: the prorated amount is reserved and the filer has five business
  days to claim all, part or none of it);
- a claim alone at its instant that does not fit is cut to what is left (19 CFR 132.11: the claim
  that fills the level), rounded down to whole units, and granted;
- the claims after it get nothing (MFN).

Nothing here touches storage: the batch's steps charge what this decides with the same conditional
updates as any claim, so a level is never exceeded whatever this computes.
"""
from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction

from server.domain.quota import Grant, Level, opening_grant, opening_rates

MICRO = Decimal("0.000001")


class BatchOutcome(enum.Enum):
    GRANTED = "GRANTED"  # all it asked
    CUT = "CUT"  # alone at its instant, cut to what was left (maybe nothing)
    OFFERED = "OFFERED"  # one of simultaneous claims sharing what was left: an offer (maybe of nothing)


@dataclass(frozen=True)
class PendingClaim:
    """What the batch needs of a pending claim."""

    claim_id: str
    tpl_number: str
    presented: dt.datetime
    quantity: Decimal  # in the goods' unit
    factor: Decimal  # the goods' unit -> the level's measure


@dataclass(frozen=True)
class BatchDecision:
    claim_id: str
    outcome: BatchOutcome
    grant: Grant
    rate: Fraction  # the share its instant's group got (1: all of it)
    binding: str  # the level whose room decided a cut or a share ("" when granted in full)


def critical_cap(limit: Decimal, critical_share: Decimal) -> Decimal:
    """How much a level may hold before it goes on hold: its critical share of the limit, rounded
    down to the ledger's precision (a millionth of the measure)."""
    return min(limit, (limit * critical_share).quantize(MICRO, rounding=ROUND_DOWN))


def must_wait(levels: Sequence[Level], measure: Decimal, critical_share: Decimal) -> bool:
    """Whether a claim of `measure` waits for the batch: some level it charges is on hold already,
    or would pass its critical share (or its limit) with this claim."""
    return any(level.held or level.charged + measure > critical_cap(level.limit, critical_share) for level in levels)


def decide_batch(
    pending: Sequence[PendingClaim], room: dict[str, Decimal], aggregate_of: dict[str, str | None]
) -> list[BatchDecision]:
    """Decide pending claims in the order given (by presentation time, then claim id: the caller
    sorts), each instant's claims together, against `room`: what each level (members and aggregate
    ceilings) can still take. Returns one decision per claim, in the same order; `room` is not changed."""
    left = {level: Fraction(amount) for level, amount in room.items()}
    decisions: list[BatchDecision] = []
    start = 0
    while start < len(pending):
        end = start
        while end < len(pending) and pending[end].presented == pending[start].presented:
            end += 1
        decisions.extend(_decide_instant(pending[start:end], left, aggregate_of))
        start = end
    return decisions


def _decide_instant(
    group: Sequence[PendingClaim], left: dict[str, Fraction], aggregate_of: dict[str, str | None]
) -> list[BatchDecision]:
    """One instant's claims: all granted if they fit; else each level's claims at one rate (scaled
    together under a shared aggregate, as at the opening). Updates `left`."""
    demand: dict[str, Fraction] = {}
    count: dict[str, int] = {}
    for claim in group:
        demand[claim.tpl_number] = demand.get(claim.tpl_number, Fraction(0)) + Fraction(claim.quantity * claim.factor)
        count[claim.tpl_number] = count.get(claim.tpl_number, 0) + 1
    rates = opening_rates(demand, _as_decimals(left), aggregate_of)
    decided = []
    for claim in group:
        rate = rates[claim.tpl_number]
        grant = opening_grant(claim.quantity, claim.factor, rate)
        if rate >= 1:
            decided.append(BatchDecision(claim.claim_id, BatchOutcome.GRANTED, grant, Fraction(1), ""))
        else:
            binding = _binding(claim.tpl_number, left, demand, aggregate_of)
            # Alone at its instant on the level that ran out: the claim that fills it, cut. Sharing it
            # with others presented at the same instant: one rate for all, as offers.
            rivals = count[claim.tpl_number] if binding == claim.tpl_number else sum(
                n for tpl, n in count.items() if aggregate_of.get(tpl) == binding
            )
            outcome = BatchOutcome.CUT if rivals == 1 else BatchOutcome.OFFERED
            decided.append(BatchDecision(claim.claim_id, outcome, grant, rate, binding))
    for claim, decision in zip(group, decided):
        for level in (claim.tpl_number, aggregate_of.get(claim.tpl_number)):
            if level is not None and level in left:
                left[level] -= Fraction(decision.grant.measure)
    return decided


def _binding(tpl: str, left: dict[str, Fraction], demand: dict[str, Fraction], aggregate_of: dict[str, str | None]) -> str:
    """Which level ran out: the member unless its aggregate ceiling had less room for the group."""
    aggregate = aggregate_of.get(tpl)
    if aggregate is not None and aggregate in left:
        members = [m for m in demand if aggregate_of.get(m) == aggregate]
        if left[aggregate] < sum((demand[m] for m in members), Fraction(0)) and left[aggregate] < left.get(tpl, left[aggregate]):
            return aggregate
    return tpl


def _as_decimals(left: dict[str, Fraction]) -> dict[str, Decimal]:
    """Room as the exact decimals opening_rates takes (what is left is always a whole number of
    millionths: every grant is units × factor, both exact decimals)."""
    return {level: Decimal(amount.numerator) / Decimal(amount.denominator) for level, amount in left.items()}
