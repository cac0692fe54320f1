"""Unit of work: one short transaction that rolls back unless the use case commits it."""
from __future__ import annotations

from types import TracebackType

from sqlalchemy.orm import Session

from server.adapters.database import Database, translate_pool_timeout
from server.adapters.repositories import CertificateRepository, TransmissionRepository


class UnitOfWork:
    session: Session
    transmissions: TransmissionRepository
    certificates: CertificateRepository

    def __init__(self, database: Database, *, write: bool):
        self._database = database
        self._write = write

    def __enter__(self) -> "UnitOfWork":
        with translate_pool_timeout():
            self.session = self._database.session(write=self._write)
            self.session.connection()  # take the connection (and, for SQLite writes, the write lock) now
        self.transmissions = TransmissionRepository(self.session)
        self.certificates = CertificateRepository(self.session)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        self.session.commit()
