"""Allotments: room carved from an open level for one serving process (escrow), rows <-> balances.

Every change is a conditional update on the rows it changes, so the level row's `charged + escrowed`
never passes its limit (a constraint besides) and an allotment's room never goes below zero. Locks are
always taken level row first, then its allotment rows (carving, folding); a claim charging its own
allotment locks only that row.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import bindparam, insert, select, update

from server.adapters.orm import ExactQuantity, QuotaAllotmentRow, QuotaLevelRow, table_of
from server.adapters.prepared import PreparedRepository, Statements

_allotments = table_of(QuotaAllotmentRow)
_levels = table_of(QuotaLevelRow)
_amount = bindparam("amount", type_=ExactQuantity())
_at = bindparam("at", type_=_allotments.c.touched_at.type)
_level_key = (_levels.c.tpl_number == bindparam("tpl"), _levels.c.quota_year == bindparam("year"))
_allotment_level = (_allotments.c.tpl_number == bindparam("tpl"), _allotments.c.quota_year == bindparam("year"))
_own = (*_allotment_level, _allotments.c.holder == bindparam("holder"))

STATEMENTS = Statements(
    # A claim's charge: only this process's row, only if its room covers it.
    charge=update(_allotments)
    .where(*_own, _allotments.c.room >= _amount)
    .values(room=_allotments.c.room - _amount, used=_allotments.c.used + _amount, touched_at=_at),
    # Carving: the level gives room only while open, and only within `cap` (its critical share).
    escrow=update(_levels)
    .where(*_level_key, _levels.c.held_since.is_(None),
           _levels.c.charged + _levels.c.escrowed + _amount <= bindparam("cap", type_=ExactQuantity()),
           _levels.c.charged + _levels.c.escrowed + _amount <= _levels.c.limit)
    .values(escrowed=_levels.c.escrowed + _amount),
    widen=update(_allotments).where(*_own).values(room=_allotments.c.room + _amount, touched_at=_at),
    open=(insert(_allotments), ("tpl_number", "quota_year", "holder", "room", "used", "touched_at")),
    # Folding: the level row first, then its allotments, each locked until the transaction ends.
    # FOR NO KEY UPDATE: claims charging an allotment insert ledger rows that reference the level (their
    # foreign key share-locks its key); a plain FOR UPDATE here would wait for them while they wait for it.
    lock_level=select(_levels.c.tpl_number).where(*_level_key).with_for_update(key_share=True),
    lock_allotments=select(_allotments.c.holder, _allotments.c.room, _allotments.c.used, _allotments.c.touched_at)
    .where(*_allotment_level).order_by(_allotments.c.holder).with_for_update(),
    empty=update(_allotments)
    .where(*_own, _allotments.c.room == bindparam("had_room", type_=ExactQuantity()),
           _allotments.c.used == bindparam("had_used", type_=ExactQuantity()))
    .values(room=0, used=0),
    fold=update(_levels)
    .where(*_level_key, _levels.c.escrowed >= bindparam("returned", type_=ExactQuantity()))
    .values(charged=_levels.c.charged + _amount, escrowed=_levels.c.escrowed - bindparam("returned", type_=ExactQuantity())),
    # What a process holds (the idle timer), and allotments nobody touched for a while (a stopped process).
    held=select(_allotments.c.tpl_number, _allotments.c.quota_year, _allotments.c.holder, _allotments.c.touched_at)
    .where((_allotments.c.room > 0) | (_allotments.c.used > 0)),
)


class AllotmentRepository(PreparedRepository):
    statements = STATEMENTS

    def charge(self, tpl_number: str, quota_year: int, holder: str, measure: Decimal, at: dt.datetime) -> bool:
        """Charge `measure` to this holder's allotment of the level; False if its room does not cover it."""
        return self._execute("charge", {"tpl": tpl_number, "year": quota_year, "holder": holder, "amount": measure, "at": at}) == 1

    def carve(self, tpl_number: str, quota_year: int, holder: str, measure: Decimal, cap: Decimal, at: dt.datetime) -> bool:
        """Move `measure` of the level's room into this holder's allotment, if the level is open and stays
        within `cap` and its limit; False (nothing written) if not."""
        key = {"tpl": tpl_number, "year": quota_year}
        if self._execute("escrow", {**key, "amount": measure, "cap": cap}) != 1:
            return False
        if self._execute("widen", {**key, "holder": holder, "amount": measure, "at": at}) == 0:
            self._execute("open", {"tpl_number": tpl_number, "quota_year": quota_year, "holder": holder,
                                   "room": measure, "used": Decimal(0), "touched_at": at})
        return True

    def fold(self, tpl_number: str, quota_year: int, holders: set[str] | None = None) -> int:
        """Fold allotments of the level back into it (all, or these holders'): what they charged joins
        the level's charged total, their room returns to it. How many allotments held anything."""
        key = {"tpl": tpl_number, "year": quota_year}
        if self._first("lock_level", key) is None:
            return 0
        folded = 0
        for holder, room, used, _ in self._all("lock_allotments", key):
            if (holders is not None and holder not in holders) or (room == 0 and used == 0):
                continue
            if self._execute("empty", {**key, "holder": holder, "had_room": room, "had_used": used}) != 1:
                raise LookupError(f"allotment {tpl_number}/{quota_year}/{holder} changed under its lock")
            if self._execute("fold", {**key, "amount": used, "returned": room + used}) != 1:
                raise LookupError(f"level {tpl_number}/{quota_year} escrows less than its allotments hold")
            folded += 1
        return folded

    def held(self) -> list[tuple[str, int, str, dt.datetime]]:
        """(TPL, year, holder, last touched) of every allotment that holds room or unfolded charges."""
        return [(tpl, year, holder, at) for tpl, year, holder, at in self._all("held")]
