"""Group commit on SQLite's single writer connection.

With synchronous=FULL every COMMIT waits for an fsync (about 4 ms on this kind of machine: most of a
claim's time). Here the write units of work that queue for the writer share one physical transaction:
each runs inside its own SAVEPOINT (so a failing one is rolled back alone), and the transaction is
committed, once, by whichever unit finds nobody else waiting (or when a batch reaches its size cap).
A unit only returns from its commit after that physical COMMIT succeeded, so nothing is answered
before it is durable; if the COMMIT fails, every unit of the batch gets the error and none answers.
Units run one at a time, in the order they asked for the writer (server/adapters/fair_lock.py),
exactly as without grouping.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, RootTransaction

from server.adapters.fair_lock import FairLock

MAX_BATCH = 64
# One unit at a time holds the writer, so one name serves. Issued on the driver's connection: through
# SQLAlchemy's savepoint machinery these three statements cost more CPU than the rest of a claim's SQL.
_SAVEPOINT, _RELEASE, _ROLLBACK_TO = "SAVEPOINT unit", "RELEASE SAVEPOINT unit", "ROLLBACK TO SAVEPOINT unit"


@dataclass
class Batch:
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def wait(self) -> None:
        self.done.wait()
        if self.error is not None:
            raise self.error


class GroupCommitter:
    def __init__(self, engine: Engine, *, timeout: float, max_batch: int = MAX_BATCH):
        self._engine = engine
        self._timeout = timeout
        self._max_batch = max_batch
        self._writer = FairLock()  # who uses the connection now; handed over in the order asked
        self._members = 0
        self._batch = Batch()
        self._connection: Connection | None = None
        self._transaction: RootTransaction | None = None

    def begin(self) -> Connection:
        """Wait for the writer; then the shared transaction's connection, inside this unit's savepoint."""
        if not self._writer.acquire(timeout=self._timeout):
            from sqlalchemy.exc import TimeoutError as PoolTimeout

            raise PoolTimeout("the writer connection stayed busy")
        try:
            if self._connection is None:
                self._connection = self._engine.connect()
            if self._transaction is None:
                self._transaction = self._connection.begin()  # BEGIN IMMEDIATE (see database.py)
            _driver_execute(self._connection, _SAVEPOINT)
            return self._connection
        except BaseException:
            self._abandon()
            self._writer.release()
            raise

    def release(self, connection: Connection) -> None:
        """The unit's work is kept (it becomes durable with the batch's COMMIT)."""
        _driver_execute(connection, _RELEASE)

    def end(self, *, committed: bool) -> Batch | None:
        """Give the writer back (undoing the unit's work unless it was released); the batch to wait
        for if it was."""
        try:
            if not committed and self._connection is not None:
                try:
                    _driver_execute(self._connection, _ROLLBACK_TO)
                    _driver_execute(self._connection, _RELEASE)
                except Exception:
                    self._abandon()
                    raise
            batch = None
            if committed:
                self._members += 1
                batch = self._batch
            nobody_waiting = self._writer.waiting == 0
            if self._members and (nobody_waiting or self._members >= self._max_batch):
                self._flush()
            elif not self._members and nobody_waiting:
                self._close()
            return batch
        finally:
            self._writer.release()

    def _flush(self) -> None:
        batch, self._batch, self._members = self._batch, Batch(), 0
        try:
            assert self._transaction is not None
            self._transaction.commit()
        except BaseException as error:  # the batch is lost as a whole: every member must hear it
            batch.error = error
            self._close(broken=True)
        else:
            self._close()
        finally:
            batch.done.set()

    def _abandon(self) -> None:
        """The connection is in an unknown state: fail the batch so far and start afresh."""
        batch, self._batch, self._members = self._batch, Batch(), 0
        batch.error = RuntimeError("the shared write transaction was abandoned")
        self._close(broken=True)
        batch.done.set()

    def _close(self, broken: bool = False) -> None:
        """Return the connection to the pool between batches (others, e.g. migrations, may need it)."""
        transaction, connection = self._transaction, self._connection
        self._transaction = self._connection = None
        if transaction is not None and transaction.is_active:
            try:
                transaction.rollback()
            except Exception:
                broken = True
        if connection is not None:
            if broken:
                connection.invalidate()
            connection.close()


def _driver_execute(connection: Connection, sql: str) -> None:
    connection.connection.driver_connection.execute(sql)  # type: ignore[union-attr]  # a checked-out connection has its driver connection
