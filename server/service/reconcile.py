"""`ecert audit reconcile`: every stored running total against the records that justify it."""
from __future__ import annotations

from dataclasses import dataclass

from server.adapters.database import Database
from server.adapters.ledger_totals import LedgerTotals
from server.domain.reconciliation import Drift, certificate_drifts, level_drifts, line_drifts
from server.service.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Reconciliation:
    levels: int
    certificates: int
    drifts: list[Drift]

    @property
    def balanced(self) -> bool:
        return not self.drifts


def reconcile_ledger(database: Database) -> Reconciliation:
    """Read in one transaction (one snapshot on PostgreSQL: run it while claims flow and it still
    compares totals and records of the same instant)."""
    with UnitOfWork(database, write=False, snapshot=True) as uow:
        totals = LedgerTotals(uow)
        levels, certificates = totals.levels(), totals.certificates()
        drifts = level_drifts(levels, totals.ledger_sums(), totals.granted_by_tpl())
        drifts += certificate_drifts(certificates, totals.held_by_certificate())
        drifts += line_drifts(totals.lines_held_twice())
    return Reconciliation(len(levels), len(certificates), drifts)
