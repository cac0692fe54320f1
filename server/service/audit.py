"""Walking the audit chain."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from server.adapters.database import Database
from server.adapters.orm import AuditHeadRow
from server.domain.audit import first_broken_link
from server.service.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class AuditVerification:
    records: int
    first_broken: int | None  # seq of the first record that does not verify

    @property
    def intact(self) -> bool:
        return self.first_broken is None


def verify_audit_log(database: Database) -> AuditVerification:
    with UnitOfWork(database, write=False) as uow:
        broken, checked = first_broken_link(uow.audit.records())
        # The tip must name the last record: a truncated tail breaks this link too.
        tip_seq = uow.session.scalar(select(AuditHeadRow.seq).where(AuditHeadRow.id == 1))
    if broken is None and tip_seq != checked:
        broken = checked + 1 if tip_seq > checked else tip_seq + 1
    return AuditVerification(checked, broken)
