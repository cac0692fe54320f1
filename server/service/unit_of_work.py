"""Unit of work: one short transaction that rolls back unless the use case commits it.

Entering takes an admission slot (a bounded number of transactions run at once; beyond it the caller
is told DATABASE_BUSY), then a connection. Committing is refused once the caller's deadline passed.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from functools import cached_property
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, RootTransaction, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from server.adapters import deferred_writes
from server.adapters.allotment_repository import AllotmentRepository
from server.adapters.database import Database, begin_on_driver, rollback_keeping_statements, translate_pool_timeout
from server.adapters.group_commit import Batch, GroupCommitter
from server.adapters.claim_repository import (
    AuditRepository,
    CertificateLedger,
    ClaimRepository,
    QuotaRepository,
    ReferenceRepository,
)
from server.adapters.log_repository import LogRepository
from server.adapters.prepared import Read, Statements, read_together
from server.adapters.repositories import CertificateRepository, TransmissionRepository
from server.observability import tracing
from server.service import deadline

QUERY_CANCELED = "57014"  # PostgreSQL: statement_timeout fired

# The transparency-log entries that units of work of this call (thread) recorded and committed durably,
# for an answer that names its entry's leaf hash without reading it back (server/api/match_servicer.py).
# None: nobody collects. A unit that rolled back, or whose commit failed, adds nothing.
_committed_entries: ContextVar[list[Any] | None] = ContextVar("committed_log_entries", default=None)


@contextmanager
def collect_committed_entries() -> Iterator[list[Any]]:
    """Collect the log entries the units of work run inside this block commit (RecordedEntry objects)."""
    found: list[Any] = []
    token = _committed_entries.set(found)
    try:
        yield found
    finally:
        _committed_entries.reset(token)
_STATEMENT_TIMEOUT = Statements(set=text("SELECT set_config('statement_timeout', :ms, true)"))
STATEMENT_BOUND_BELOW = 60.0  # seconds: deadlines shorter than this bound each statement too


class UnitOfWork:
    """Repositories are made on first use; so is the ORM session, on the unit's connection and
    transaction: the claim and submit paths need only the connection (their statements are Prepared,
    server/adapters/prepared.py)."""

    connection: Connection

    def __init__(self, database: Database, *, write: bool, snapshot: bool = False):
        self._database = database
        self._write = write
        # One snapshot for every statement (PostgreSQL REPEATABLE READ, read only; an SQLite read
        # transaction already is one): for readers that compare several tables, e.g. reconciliation.
        self._snapshot = snapshot and not write
        self._resources = ExitStack()
        self._session: Session | None = None
        self._group: GroupCommitter | None = None
        self._transaction: RootTransaction | None = None

    def __enter__(self) -> "UnitOfWork":
        # A span around the whole unit when the process is traced: waiting for a slot, the statements, the commit.
        self._traced = tracing.open_span("db.transaction", {"db.system": self._database.dialect, "ecert.write": self._write})
        try:
            return self._enter()
        except BaseException as error:
            tracing.close_span(self._traced, error)
            raise

    def _enter(self) -> "UnitOfWork":
        deadline.check()
        self._committed = False
        self._batch: Batch | None = None
        self.recorded: list[Any] = []  # the log entries this unit recorded (AuditRepository)
        group = self._database.group_commit if self._write else None
        with ExitStack() as opening:
            opening.enter_context(self._database.admission.slot())
            with translate_pool_timeout():
                if group is not None:
                    self.connection = group.begin()  # the writer, inside this unit's own savepoint
                    self._group = group
                    opening.callback(self._leave_group, group)
                else:
                    # Take the connection (and, for SQLite writes, the write lock) now. No ORM session
                    # unless a query needs one: opening one cost more CPU than a small unit's statements.
                    self.connection = self._database.connect(write=self._write)
                    opening.callback(self.connection.close)
                    self._transaction = self.connection.begin()
                    opening.callback(self._close_session)
            if not self._database.is_sqlite:
                self._begin_postgresql()
                if self._write:
                    # Its last writes go with the COMMIT, in one round trip (server/adapters/deferred_writes.py).
                    deferred_writes.start_holding(self.connection)
            self._resources = opening.pop_all()
        return self

    @property
    def session(self) -> Session:
        if self._session is None:
            # On the shared writer: the session's commit releases a savepoint of its own, inside the unit's.
            # Otherwise it joins the unit's transaction, which the unit commits (or rolls back) itself.
            self._session = Session(
                bind=self.connection,
                expire_on_commit=False,
                join_transaction_mode="create_savepoint" if self._group is not None else "rollback_only",
            )
        return self._session

    # Each repository is made for this unit the first time it is asked for (cached_property calls the
    # class with the unit); the claim path needs five of the seven.
    transmissions: cached_property[TransmissionRepository] = cached_property(TransmissionRepository)
    certificates: cached_property[CertificateRepository] = cached_property(CertificateRepository)
    certificate_ledger: cached_property[CertificateLedger] = cached_property(CertificateLedger)
    claims: cached_property[ClaimRepository] = cached_property(ClaimRepository)
    quota: cached_property[QuotaRepository] = cached_property(QuotaRepository)
    audit: cached_property[AuditRepository] = cached_property(AuditRepository)
    references: cached_property[ReferenceRepository] = cached_property(ReferenceRepository)
    log: cached_property[LogRepository] = cached_property(LogRepository)
    allotments: cached_property[AllotmentRepository] = cached_property(AllotmentRepository)

    def _begin_postgresql(self) -> None:
        """The transaction's settings: a snapshot's isolation, and a bound on each statement (a lock
        wait included) so that none outlives the caller's deadline. Sent with the BEGIN, in one round
        trip (server/adapters/database.py, begin_on_driver), else one statement each."""
        left = deadline.remaining()
        # Long deadlines: the commit check suffices, spare the setting.
        milliseconds = None if left is None or left > STATEMENT_BOUND_BELOW else max(1, int(left * 1000))
        if begin_on_driver(self.connection, snapshot=self._snapshot, statement_timeout_ms=milliseconds):
            return
        if self._snapshot:
            self.connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if milliseconds is not None:
            _STATEMENT_TIMEOUT.get("set", self.connection.dialect).execute(self.connection, {"ms": str(milliseconds)})

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._exit(exc)
        except BaseException as error:
            tracing.close_span(self._traced, error, committed=self._committed)
            raise
        tracing.close_span(self._traced, exc, committed=self._committed)

    def _exit(self, exc: BaseException | None) -> None:
        try:
            deferred_writes.stop_holding(self.connection)  # committed, or never to be sent
            if self._transaction is not None and self._transaction.is_active and not self._database.is_sqlite:
                rollback_keeping_statements(self.connection)  # first: the session's rollback below would end it too
            if self._session is not None:
                self._session.rollback()
            if self._transaction is not None and self._transaction.is_active:
                self._transaction.rollback()
        finally:
            self._resources.close()
        if self._batch is not None:
            self._batch.wait()  # durable (the group's COMMIT succeeded) before anyone is answered
        collected = _committed_entries.get()
        if self._committed and collected is not None:
            collected.extend(self.recorded)
        if isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == QUERY_CANCELED:
            if deadline.remaining() is not None:
                raise deadline.exceeded_error() from exc

    def read_together(self, *reads: Read[Any]) -> None:
        """Reads that do not depend on each other: on PostgreSQL run now, in one round trip
        (server/adapters/prepared.py, read_together); on SQLite each runs when its answer is first used."""
        read_together(self.connection, reads)

    def commit(self) -> None:
        deadline.check()  # the caller stopped waiting: do not store what it will never see answered
        if self._session is not None:
            self._session.commit()  # flushes; on the shared writer it only releases the session's savepoint
        if self._group is not None:
            self._group.release(self.connection)
        if self._transaction is not None:
            # The held writes and the COMMIT in one round trip; then SQLAlchemy ends its transaction (the
            # driver, finding none open on the connection, sends nothing).
            deferred_writes.commit_held(self.connection)
            self._transaction.commit()
        self._committed = True

    def _close_session(self) -> None:
        if self._session is not None:
            self._session.close()

    def _leave_group(self, group: GroupCommitter) -> None:
        if self._session is not None:
            self._session.close()
        self._batch = group.end(committed=self._committed)
