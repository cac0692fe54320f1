"""The batches that decide waiting claims: the opening allocation and the daily cutoff batch.

Both run as resumable steps, one short transaction each, one replica at a time per step (a row per
batch, locked by each step), so that other writes go between the steps and a batch stopped by a
restart is finished by whoever comes next. The arithmetic is the domain's (server/domain/quota.py
for the opening, server/domain/batch.py for the cutoff); server/service/allocation_writer.py writes.
"""
from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import TypeVar

from sqlalchemy.exc import IntegrityError

from server.adapters.claim_repository import NO_YEAR, LevelRow, Opening
from server.adapters.database import Database
from server.domain.batch import BatchOutcome, PendingClaim, critical_cap, decide_batch
from server.domain.claims import Decision, decide_at_opening, decided_in_batch
from server.domain.errors import DomainError, ErrorKind
from server.domain.quota import opening_rates, rate_text
from server.domain.records import ClaimRecord
from server.service import deadline
from server.service.allocation_writer import AllocationWriter
from server.service.claim_facts import facts, subject
from server.service.clock import Clock
from server.service.quota import QuotaCalendar
from server.service.transactions import LostRace, run_in_transaction
from server.service.unit_of_work import UnitOfWork

_K = TypeVar("_K")
# Queued claims decided per transaction of the opening allocation: about 0.15 s of the writer on
# this machine, which a write that queued behind a step (and shares its group commit) waits out.
OPENING_CHUNK = 250
# What the opening allocation decides of a queued claim.
ALLOCATED_COLUMNS = (
    "decision", "reasons", "granted_quantity", "granted_measure", "proration_rate", "certificate_remaining",
    "decided_at", "level_remaining", "aggregate_remaining", "offer_expires_at",
)
# What a cutoff batch decides of a pending claim.
BATCH_COLUMNS = (*ALLOCATED_COLUMNS, "batch_cutoff")
# Pending claims decided per step of a cutoff batch (with the rest of the last one's instant).
BATCH_CHUNK = 500
FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.timezone.utc)


def locked_levels(uow: UnitOfWork, year: int) -> list[LevelRow]:
    """The year's levels, locked, with any allotment folded back first (server/service/allotments.py):
    a batch charges the level rows themselves, by their exact balances."""
    rows = uow.quota.levels(year, lock=True)
    escrowing = [row for row in rows if row.escrowed]
    for row in escrowing:
        uow.allotments.fold(row.tpl_number, row.quota_year)
    return uow.quota.levels(year, lock=True) if escrowing else rows


class OpeningPending(Exception):
    """The year's period has opened and its opening batch is not all decided yet."""

    def __init__(self, year: int):
        super().__init__(year)
        self.year = year


class Batches:
    def __init__(self, database: Database, calendar: QuotaCalendar, clock: Clock, nudge: Callable[[], None]):
        self.database = database
        self.calendar = calendar
        self.clock = clock
        self._nudge = nudge
        self.opened_years: set[int] = set()  # whose opening allocation is complete
        self._opening_runner = threading.Lock()
        self._batched: set[dt.datetime] = set()  # cutoffs whose batch is complete
        self._batch_runner = threading.Lock()

    def allocate_due_openings(self) -> bool:
        """Allocate the current year's opening batch if its period has opened (a timer calls this);
        True if this call did any of it."""
        now = self.clock.now()
        year = self.calendar.year_of(now)
        if year in self.opened_years or now < self.calendar.opening_final(year):
            return False
        if not self._opening_runner.acquire(blocking=False):
            return False  # a claim of that year is running it
        try:
            return self._run_opening_steps(year)
        finally:
            self._opening_runner.release()

    def period_opened(self, uow: UnitOfWork, year: int, tpl_number: str, now: dt.datetime) -> bool:
        """Whether the year's period has opened, decided alike by every replica whatever its clock: it
        has once its opening allocation exists (and then nothing of the year is decided before that
        batch is: those claims came first, 19 CFR 132.12); before anybody began it, by this replica's
        clock (the batch is due when any review of it is over: QuotaCalendar.opening_final). A claim
        that would wait for the opening share-locks its level first and looks again: the opening locks
        the year's levels before it sums the queue, so the claim is either in that sum or sees the
        opening (README, "Invariants")."""
        if year in self.opened_years:
            return True
        opening = uow.quota.opening(year)
        if opening is None:
            if now >= self.calendar.opening_final(year):
                raise OpeningPending(year)
            uow.quota.hold_level(tpl_number, year)
            opening = uow.quota.opening(year)
            if opening is None:
                return False
        if opening.completed_at is None:
            raise OpeningPending(year)
        self.opened_years.add(year)
        return True

    def run_opening(self, year: int) -> bool:
        """Run the year's opening allocation to its end, one short transaction per step: first the
        rates, then the queue a chunk at a time. Other writes go between the steps, and a step that
        fails (a caller's deadline, a restart) leaves the steps before it done, for whoever comes
        next to carry on. True if this call did any of it."""
        # One thread of this process runs it (the timer, or a claim): two would only take turns at the
        # writer. A claim that arrives meanwhile waits as long as a write waits for the database, then
        # is told to retry (it must not hold a serving thread for the whole batch).
        left = deadline.remaining()
        wait = self.database.admission.wait if left is None else max(0.0, min(left, self.database.admission.wait))
        if not self._opening_runner.acquire(timeout=wait):
            if left is not None and left <= wait:
                raise deadline.exceeded_error()
            raise DomainError(
                "OPENING_ALLOCATION_IN_PROGRESS",
                f"the {year} opening batch is being allocated and comes first; retry with backoff",
                ErrorKind.UNAVAILABLE,
                metadata={"quota_year": str(year)},
            )
        try:
            return self._run_opening_steps(year)
        finally:
            self._opening_runner.release()

    def _run_opening_steps(self, year: int) -> bool:
        return self._run_steps(lambda uow: self._opening_step(uow, year), year, self.opened_years, "opening allocation")

    def _run_steps(self, step: Callable[[UnitOfWork], tuple[bool, bool]], key: _K, completed: set[_K], what: str) -> bool:
        """Run a batch's steps, one transaction each, until one says the batch is complete (then `key`
        joins `completed`); a step another replica took first is looked at again. True if this call
        did any of it."""
        worked = False
        while key not in completed:
            try:
                # A step another replica took first (a lost race, or its begin row's key) is looked at again.
                did, finished = run_in_transaction(self.database, step, between=lambda error: isinstance(error, IntegrityError))
            except (LostRace, IntegrityError):
                raise DomainError("CONTENTION", f"the {what} kept being interrupted; retry", ErrorKind.UNAVAILABLE) from None
            worked = worked or did
            if finished:
                completed.add(key)
        if worked:
            self._nudge()
        return worked

    def _opening_step(self, uow: UnitOfWork, year: int) -> tuple[bool, bool]:
        """One step of the opening allocation; (did something, the allocation is complete)."""
        now = self.clock.now()
        opening = uow.quota.opening(year, lock=True)
        if opening is not None and opening.completed_at is not None:
            return False, True
        if opening is None:
            # The rates: one per TPL, from what the whole batch asks and the levels' room at the opening
            # (summed by the database: this step holds the writer too).
            rows = locked_levels(uow, year)  # first: claims queuing now hold them (period_opened)
            demand = uow.claims.queued_demand(year)
            rates = opening_rates(
                {tpl: Fraction(measure) for tpl, measure in demand.items()},
                {r.tpl_number: r.limit - r.charged for r in rows},
                {r.tpl_number: r.aggregate for r in rows},
            )
            uow.quota.begin_opening(year, now, rates)
            completed = not demand
        else:
            chunk, held = uow.claims.queued(year, limit=OPENING_CHUNK)
            self._decide_queued(uow, year, chunk, held, opening, now)
            completed = len(chunk) < OPENING_CHUNK
        if completed:
            self._hold_for_pending(uow, year, now)
            uow.quota.complete_opening(year, now)
        uow.commit()
        return True, completed

    def _hold_for_pending(self, uow: UnitOfWork, year: int, now: dt.datetime) -> None:
        """As the opening completes, the levels of claims pending since the review began (lines presented
        after the window while the batch was under review) go on hold, with their aggregate ceilings:
        those claims come first, so later ones wait with them for the next cutoff batch. The year's
        levels are already locked by this step (locked_levels); a pending claim of the review either
        committed before the opening began or saw it (period_opened)."""
        tpls = set(uow.claims.pending_tpls(year))
        if not tpls:
            return
        rows = {row.tpl_number: row for row in uow.quota.levels(year)}
        aggregates = {aggregate for tpl in tpls if tpl in rows and (aggregate := rows[tpl].aggregate)}
        for tpl in sorted((tpls | aggregates) & rows.keys()):
            uow.quota.put_on_hold(tpl, year, now)

    def _decide_queued(
        self, uow: UnitOfWork, year: int, queued: list[ClaimRecord], held: dict[tuple[str, str], tuple[Decimal, Decimal]],
        opening: Opening, now: dt.datetime,
    ) -> None:
        """Decide queued claims at the opening's rates, in queue order, exactly as deciding them one
        after another would (server/service/allocation_writer.py writes them). Decided as of the
        opening (decided_at, the ledger); logged as of now."""
        writer = AllocationWriter(uow, locked_levels(uow, year), opening.allocated_at, "ALLOCATION").knowing(held)
        offer_expires = self.calendar.offer_expires(year)
        for claim in queued:
            # No rate: its TPL had no claim queued when the rates were set (see decide_at_opening).
            rate = opening.rates.get(claim.tpl_number, Fraction(1))
            room = min(writer.room(level, year) for level in writer.levels_of(claim))
            decided = decide_at_opening(claim.claimed_quantity, Decimal(claim.conversion_factor), rate, room)
            writer.decide(
                claim, decided.grant, decision=decided.decision.value, reasons=decided.reasons,
                proration_rate=rate_text(rate) if rate < 1 else "", decided_at=opening.allocated_at,
                offer_expires_at=offer_expires if decided.decision is Decision.PRORATED_OFFER else None,
            )
        stored = uow.claims.decide_queued(writer.decided, ALLOCATED_COLUMNS)
        writer.write(now, stored, [("ALLOCATION", subject(r), facts(r)) for r in writer.decided])

    # -- the daily cutoff batch ------------------------------------------------------------------------

    def run_due_batch(self) -> bool:
        """Run the batch of the latest daily cutoff that has passed, if it is not complete and claims wait
        for it or a level is on hold (its end may lift the hold); a timer calls this. True if this call
        did any of it."""
        now = self.clock.now()
        cutoff = self.calendar.last_cutoff(now)
        if cutoff in self._batched:
            return False
        with UnitOfWork(self.database, write=False) as uow:
            batch = uow.quota.batch(cutoff)
            waiting = uow.claims.any_pending(cutoff, self._not_final(uow, now))
            if batch is None and not waiting and not any(r.held_since for r in uow.quota.all_levels()):
                return False  # nothing waits for it, no hold to lift (a claim pending later starts it at the next check)
        if batch is not None and batch.completed_at is not None:
            self._batched.add(cutoff)
            return False
        if not self._batch_runner.acquire(blocking=False):
            return False
        try:
            return self._run_steps(lambda uow: self._batch_step(uow, cutoff), cutoff, self._batched, "cutoff batch")
        finally:
            self._batch_runner.release()

    def _batch_step(self, uow: UnitOfWork, cutoff: dt.datetime) -> tuple[bool, bool]:
        """One step of a cutoff's batch; (did something, the batch is complete). The first step only
        records when the batch began: claims recorded after that wait for the next cutoff."""
        now = self.clock.now()
        batch = uow.quota.batch(cutoff, lock=True)
        if batch is not None and batch.completed_at is not None:
            return False, True
        if batch is None:
            uow.quota.begin_batch(cutoff, now)
            uow.commit()
            return True, False
        chunk = uow.claims.pending(cutoff, batch.started_at, BATCH_CHUNK, self._not_final(uow, now))
        for year in sorted({c.quota_year for c in chunk}):
            self._decide_pending(uow, [c for c in chunk if c.quota_year == year], year, cutoff, now)
        completed = len(chunk) < BATCH_CHUNK
        if completed:
            self._lift_holds(uow)
        uow.quota.advance_batch(cutoff, len(chunk), now if completed else None)
        uow.commit()
        return True, completed

    def _not_final(self, uow: UnitOfWork, now: dt.datetime) -> int:
        """The year whose opening batch is under review and not allocated yet (NO_YEAR if none): its
        pending claims, presented during the review, come after the whole batch, so no cutoff batch
        decides them before it (a program's review delay; QuotaCalendar.opening_final). Without a
        review no claim of a year is pending before its opening completes: nothing is left out."""
        year = self.calendar.year_of(now)
        if year in self.opened_years or not self.calendar.rule().review_business_days:
            return NO_YEAR
        opening = uow.quota.opening(year)
        return NO_YEAR if opening is not None and opening.completed_at is not None else year

    def _decide_pending(self, uow: UnitOfWork, pending: list[ClaimRecord], year: int, cutoff: dt.datetime, now: dt.datetime) -> None:
        """Decide one year's pending claims in presentation-time order against the levels as they stand
        (locked): server/domain/batch.py decides, server/service/allocation_writer.py writes."""
        writer = AllocationWriter(uow, locked_levels(uow, year), cutoff, "BATCH")
        room = {tpl: writer.room(tpl, y) for tpl, y in writer.rows if y == year}
        aggregate_of = {tpl: row.aggregate for (tpl, y), row in writer.rows.items() if y == year}
        decisions = decide_batch(
            [PendingClaim(c.claim_id, c.tpl_number, c.presentation_time, c.claimed_quantity, Decimal(c.conversion_factor)) for c in pending],
            room, aggregate_of,
        )
        offer_expires = self.calendar.offer_expires_after(cutoff)
        for claim, decided in zip(pending, decisions):
            decision, reasons = decided_in_batch(decided, claim.tpl_number)
            writer.decide(
                claim, decided.grant, decision=decision.value, reasons=reasons, decided_at=cutoff, batch_cutoff=cutoff,
                proration_rate=rate_text(decided.rate) if decided.outcome is BatchOutcome.OFFERED else "",  # a cut is not prorated
                offer_expires_at=offer_expires if decision is Decision.PRORATED_OFFER else None,
            )
        stored = uow.claims.decide_pending(writer.decided, BATCH_COLUMNS)
        writer.write(now, stored, [("ALLOCATION", subject(r), facts(r)) for r in writer.decided])

    def _lift_holds(self, uow: UnitOfWork) -> None:
        """At the end of a batch, levels on hold open again if no claim waits any more and they are back
        within their critical share (a reversal or a lapsed offer returned quantity). Each level is
        locked first; a claim that saw the hold share-locked it, so it is committed (and seen pending
        here) or sees the level open."""
        held = [row for row in uow.quota.all_levels() if row.held_since is not None]
        for year in sorted({row.quota_year for row in held}):
            uow.quota.levels(year, lock=True)
        if not held or uow.claims.any_pending(FAR_FUTURE):
            return
        for row in held:
            uow.quota.lift_hold(row.tpl_number, row.quota_year, critical_cap(row.limit, self.calendar.critical_share))
