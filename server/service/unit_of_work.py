"""Unit of work: one short transaction that rolls back unless the use case commits it.

Entering takes an admission slot (a bounded number of transactions run at once; beyond it the caller
is told DATABASE_BUSY), then a connection. Committing is refused once the caller's deadline passed.
"""
from __future__ import annotations

from contextlib import ExitStack
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from server.adapters.database import Database, translate_pool_timeout
from server.adapters.group_commit import Batch, GroupCommitter
from server.adapters.claim_repository import (
    AuditRepository,
    CertificateLedger,
    ClaimRepository,
    QuotaRepository,
    ReferenceRepository,
)
from server.adapters.repositories import CertificateRepository, TransmissionRepository
from server.service import deadline

QUERY_CANCELED = "57014"  # PostgreSQL: statement_timeout fired
STATEMENT_BOUND_BELOW = 60.0  # seconds: deadlines shorter than this bound each statement too


class UnitOfWork:
    session: Session
    transmissions: TransmissionRepository
    certificates: CertificateRepository
    certificate_ledger: CertificateLedger
    claims: ClaimRepository
    quota: QuotaRepository
    audit: AuditRepository
    references: ReferenceRepository

    def __init__(self, database: Database, *, write: bool):
        self._database = database
        self._write = write
        self._resources = ExitStack()

    def __enter__(self) -> "UnitOfWork":
        deadline.check()
        self._committed = False
        self._batch: Batch | None = None
        group = self._database.group_commit if self._write else None
        with ExitStack() as opening:
            opening.enter_context(self._database.admission.slot())
            with translate_pool_timeout():
                if group is not None:
                    self.session = group.begin()
                    opening.callback(self._leave_group, group)
                else:
                    self.session = self._database.session(write=self._write)
                    opening.callback(self.session.close)
                # Take the connection (and, for SQLite writes, the write lock) now.
                connection = self.session.connection()
            self._bound_by_deadline()
            self._resources = opening.pop_all()
        self.transmissions = TransmissionRepository(self.session)
        self.certificates = CertificateRepository(self.session, connection)
        self.certificate_ledger = CertificateLedger(self.session, connection)
        self.claims = ClaimRepository(self.session, connection)
        self.quota = QuotaRepository(self.session, connection)
        self.audit = AuditRepository(self.session, connection)
        self.references = ReferenceRepository(self.session, connection)
        return self

    def _bound_by_deadline(self) -> None:
        """On PostgreSQL no statement (a lock wait included) may outlive the caller's deadline."""
        left = deadline.remaining()
        if left is None or left > STATEMENT_BOUND_BELOW or self._database.is_sqlite:
            return  # long deadlines: the commit check suffices, spare the round trip
        milliseconds = max(1, int(left * 1000))
        self.session.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(milliseconds)})

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.session.rollback()
        finally:
            self._resources.close()
        if self._batch is not None:
            self._batch.wait()  # durable (the group's COMMIT succeeded) before anyone is answered
        if isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == QUERY_CANCELED:
            if deadline.remaining() is not None:
                raise deadline.exceeded_error() from exc

    def commit(self) -> None:
        deadline.check()  # the caller stopped waiting: do not store what it will never see answered
        self.session.commit()
        self._committed = True

    def _leave_group(self, group: GroupCommitter) -> None:
        self._batch = group.end(self.session, committed=self._committed)
