"""Writing what a batch decided of waiting claims (the opening's queued claims, a cutoff's pending ones).

A batch step decides a chunk of claims that reserved their whole certificate quantity while they
waited. What each is granted is charged to its levels; what it is not granted goes back to its
certificate. Everything is written in one driver call per table, each conditional: the claims only
while they still wait (a reversal meanwhile makes the step start again), the levels by the same
conditional update as any claim (never past their limit).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

from server.adapters.claim_repository import LedgerEntry, LevelRow
from server.domain.quota import Grant
from server.domain.records import ClaimRecord
from server.service.transactions import LostRace
from server.service.unit_of_work import UnitOfWork


class AllocationWriter:
    """Collects a step's decisions against the levels read (locked) at its start, then writes them."""

    def __init__(self, uow: UnitOfWork, levels: list[LevelRow], at: dt.datetime, ledger_kind: str):
        self.uow = uow
        self.rows = {(row.tpl_number, row.quota_year): row for row in levels}
        self.charged = {key: row.charged for key, row in self.rows.items()}
        self.at = at  # the instant the decisions are as of (the ledger's time stamp)
        self.ledger_kind = ledger_kind
        self.decided: list[ClaimRecord] = []
        self.ledger: list[LedgerEntry] = []
        self.audit: list[tuple[str, str, dict[str, object]]] = []
        self._held: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}  # certificate -> (quantity, used) so far
        self._returns: list[tuple[str, str, Decimal, int]] = []

    def knowing(self, held: dict[tuple[str, str], tuple[Decimal, Decimal]]) -> "AllocationWriter":
        """Certificates' (quantity, used quantity) already read (and locked) with the step's claims."""
        self._held.update(held)
        return self

    def levels_of(self, claim: ClaimRecord) -> tuple[str, ...]:
        """The levels a claim charges: its TPL, then any aggregate ceiling."""
        member = self.rows[(claim.tpl_number, claim.quota_year)]
        aggregate = member.aggregate if member.aggregate and (member.aggregate, claim.quota_year) in self.rows else None
        return (member.tpl_number, *((aggregate,) if aggregate else ()))

    def room(self, tpl: str, year: int) -> Decimal:
        row = self.rows[(tpl, year)]
        return row.limit - self.charged[(tpl, year)]

    def decide(self, claim: ClaimRecord, grant: Grant, **values: object) -> ClaimRecord:
        """Record the claim's grant: the reservation it does not use goes back to the certificate, the
        grant is charged to its levels; `values` are the claim's other new columns."""
        key = (claim.issuing_country, claim.certificate_number)
        if key not in self._held:
            self._held[key] = self.uow.certificate_ledger.held(*key)
        quantity, used = self._held[key]
        unused = claim.claimed_quantity - grant.quantity
        if unused > used:
            raise LookupError(f"certificate {key[0]}/{key[1]} holds less than {unused} to release")
        if unused > 0:
            self._held[key] = (quantity, used - unused)
            self._returns.append((*key, unused, 0 if grant.quantity > 0 else 1))
        levels = self.levels_of(claim)
        if grant.measure > 0:
            for level in levels:
                self.charged[(level, claim.quota_year)] += grant.measure
                self.ledger.append(LedgerEntry(level, claim.quota_year, self.at, grant.measure, claim.claim_id, self.ledger_kind))
        record = dataclasses.replace(
            claim,
            granted_quantity=grant.quantity,
            granted_measure=grant.measure,
            certificate_remaining=quantity - self._held[key][1],
            level_remaining=self.room(levels[0], claim.quota_year),
            aggregate_remaining=self.room(levels[1], claim.quota_year) if len(levels) > 1 else None,
            **values,  # type: ignore[arg-type]  # the caller names ClaimRecord fields
        )
        self.decided.append(record)
        return record

    def write(self, now: dt.datetime, store: int, audit: list[tuple[str, str, dict[str, object]]]) -> None:
        """Write the step: `store` is how many claims the caller's conditional UPDATE stored (it must be
        all of them); the certificates' returns, the ledger, the log entries (as of `now`), the levels."""
        if store != len(self.decided):
            raise LostRace  # one was reversed or decided meanwhile: take the step again
        self.uow.certificate_ledger.give_back_many(self._returns)
        self.uow.quota.record_many(self.ledger)
        self.uow.audit.append_many(now, audit)
        for (level, year), row in self.rows.items():
            delta = self.charged[(level, year)] - row.charged
            if delta and self.uow.quota.charge(level, year, delta) is None:
                raise LostRace
