"""The sums that reconciliation compares with the stored running totals, computed by the database."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select, type_coerce

from server.adapters.orm import MICRO, CertificateRow, ClaimRow, QuotaAllotmentRow, QuotaLedgerRow, QuotaLevelRow
from server.adapters.prepared import PreparedRepository, Statements
from server.domain.records import WAITING
from server.domain.reconciliation import CertificateBalance, CertificateKey, LevelBalance, LevelKey

_live = ClaimRow.reversed_at.is_(None)
_held = case((ClaimRow.decision.in_(WAITING), ClaimRow.claimed_quantity), else_=ClaimRow.granted_quantity)
# Micro-unit integers are summed as integers (exact on both engines) and scaled once here.
def _sum(column: Any) -> Any:
    return type_coerce(func.coalesce(func.sum(column), 0), ClaimRow.claimed_quantity.type.impl)


def _units(micro: object) -> Decimal:
    return (Decimal(int(micro or 0)) / MICRO).normalize()  # type: ignore[call-overload]  # micro: the summed column's int, Decimal or None


class LedgerTotals(PreparedRepository):
    statements = Statements()

    def levels(self) -> list[LevelBalance]:
        def allotments(column: Any) -> Any:
            return (
                select(func.coalesce(func.sum(column), 0))
                .where(QuotaAllotmentRow.tpl_number == QuotaLevelRow.tpl_number, QuotaAllotmentRow.quota_year == QuotaLevelRow.quota_year)
                .scalar_subquery()
            )

        exact = QuotaLevelRow.charged.type
        rows = self.session.execute(select(
            QuotaLevelRow.tpl_number, QuotaLevelRow.quota_year, QuotaLevelRow.limit,
            # The charged total: the level row's own, plus what its allotments charged and did not fold back yet.
            type_coerce(QuotaLevelRow.charged + allotments(QuotaAllotmentRow.used), exact), QuotaLevelRow.aggregate,
            QuotaLevelRow.escrowed, type_coerce(allotments(QuotaAllotmentRow.room), exact), type_coerce(allotments(QuotaAllotmentRow.used), exact),
        ))
        return [LevelBalance(*row) for row in rows]

    def ledger_sums(self) -> dict[LevelKey, Decimal]:
        rows = self.session.execute(
            select(QuotaLedgerRow.tpl_number, QuotaLedgerRow.quota_year, _sum(QuotaLedgerRow.delta))
            .group_by(QuotaLedgerRow.tpl_number, QuotaLedgerRow.quota_year)
        )
        return {(tpl, year): _units(total) for tpl, year, total in rows}

    def granted_by_tpl(self) -> dict[LevelKey, Decimal]:
        rows = self.session.execute(
            select(ClaimRow.tpl_number, ClaimRow.quota_year, _sum(ClaimRow.granted_measure))
            .where(_live).group_by(ClaimRow.tpl_number, ClaimRow.quota_year)
        )
        return {(tpl, year): _units(total) for tpl, year, total in rows}

    def certificates(self) -> list[CertificateBalance]:
        rows = self.session.execute(select(
            CertificateRow.issuing_country, CertificateRow.certificate_number, CertificateRow.quantity,
            CertificateRow.used_quantity, CertificateRow.matched_entries,
        ))
        return [CertificateBalance(*row) for row in rows]

    def held_by_certificate(self) -> dict[CertificateKey, tuple[Decimal, int]]:
        holding = (_live, _held > 0)
        rows = self.session.execute(
            select(ClaimRow.issuing_country, ClaimRow.certificate_number, _sum(_held), func.count())
            .where(*holding).group_by(ClaimRow.issuing_country, ClaimRow.certificate_number)
        )
        return {(country, number): (_units(total), int(count)) for country, number, total, count in rows}

    def lines_held_twice(self) -> dict[tuple[str, int], int]:
        count = func.count()
        rows = self.session.execute(
            select(ClaimRow.entry_number, ClaimRow.line_number, count)
            .where(_live, _held > 0).group_by(ClaimRow.entry_number, ClaimRow.line_number).having(count > 1)
        )
        return {(entry, line): int(n) for entry, line, n in rows}
