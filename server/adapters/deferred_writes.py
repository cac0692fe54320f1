"""Writes held until the commit and sent with it, in one round trip (PostgreSQL).

A claim's transaction ends with writes whose only outcomes are one row written or an error: its quota
ledger row, the claim's row, its transparency-log entry. Each was a round trip of its own, then the
COMMIT another; in the service a round trip costs about 0.1 ms of CPU whatever the statement (the
libpq call, the socket and the thread's wake-up), about as much as SQLite's whole execution of it.
A unit of work that holds writes (server/service/unit_of_work.py) keeps such statements here
(`Prepared.defer`), and its commit sends them with the COMMIT in one libpq pipeline
(server/adapters/pipeline.py).

Order is kept: before any other statement runs on the connection what is held is sent first: with a
Prepared statement run on libpq, in the same pipeline (one round trip; a claim's entry row goes with
its certificate's charge); with anything else (SQLAlchemy's own execution, reads run together), in a
pipeline of its own. A held write's error is raised by whatever sent it (the commit, or that next
statement, which then did not run), wrapped as SQLAlchemy wraps psycopg's
errors (IntegrityError for a unique key, OperationalError for a lock timeout, ...), so that callers
and the retry policy see what they saw when the write ran at once. On SQLite nothing is held.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from server.adapters import pipeline

if TYPE_CHECKING:
    from server.adapters.prepared import Prepared

# Where a connection's held writes are, while a unit of work holds them (removed when it ends).
_HELD_KEY = "ecert.held_writes"


def start_holding(connection: Connection) -> None:
    """From now on `Prepared.defer` holds writes on this connection (psycopg only)."""
    if connection.dialect.driver == "psycopg":
        connection.info[_HELD_KEY] = []


def stop_holding(connection: Connection) -> None:
    """Forget what is held (the unit of work ends: committed, or rolled back and never sent)."""
    connection.info.pop(_HELD_KEY, None)


def held_writes(connection: Connection) -> list[tuple[Prepared, list[Any]]] | None:
    """The list a write joins to be held for the commit; None when this connection holds none (run it now)."""
    held: list[tuple[Prepared, list[Any]]] | None = connection.info.get(_HELD_KEY)
    return held


def send_held(connection: Connection) -> None:
    """Send what is held now (another statement is about to run on the connection)."""
    held = connection.info.get(_HELD_KEY)
    if held:
        _send(connection, held, commit=False)


def send_held_with(connection: Connection, statement: Prepared, name: bytes, parameters: Any) -> Any:
    """Send what is held and then `statement` (prepared on the connection as `name`, its parameters
    dumped) in one round trip; the statement's own result, for the caller to read or raise as if it
    ran alone. A held write's error is raised here (the statement was then not run)."""
    held = connection.info.get(_HELD_KEY)
    return _send(connection, held or [], commit=False, then=(statement, name, parameters))


def commit_held(connection: Connection) -> bool:
    """Send what is held with a COMMIT, in one round trip; True if this committed, False if nothing
    was held (the caller commits as usual)."""
    held = connection.info.get(_HELD_KEY)
    if not held:
        return False
    _send(connection, held, commit=True)
    return True


def _send(
    connection: Connection, held: list[tuple[Prepared, list[Any]]], *, commit: bool, then: tuple[Prepared, bytes, Any] | None = None,
) -> Any:
    writes = list(held)
    held.clear()  # whatever happens next, nothing is sent twice
    psycopg: Any = connection.dialect.loaded_dbapi
    pgconn = connection.connection.driver_connection.pgconn  # type: ignore[union-attr]  # a checked-out psycopg connection
    named = [(statement, *statement.on_libpq(connection, parameters), parameters) for statement, parameters in writes]
    queries = [(name, statement.dumped(transformer, parameters)) for statement, transformer, name, parameters in named]
    if then is not None:
        queries.append((then[1], then[2]))
    try:
        results = pipeline.run(pgconn, psycopg.pq, queries, commit=commit)
    except psycopg.Error as error:
        first = named[0][0].sql if named else then[0].sql if then is not None else "COMMIT"
        raise DBAPIError.instance("COMMIT" if commit else first, None, error, psycopg.Error, dialect=connection.dialect) from error
    failed = pipeline.first_failure(results[: len(named)], psycopg.pq)
    if failed is None and commit:
        failed = pipeline.first_failure(results, psycopg.pq)
    if failed is not None:
        index, result = failed
        refused = psycopg.errors.error_from_result(result)
        if isinstance(refused, psycopg.errors.InvalidSqlStatementName):
            from server.adapters.prepared import forget_prepared  # (prepared.py imports this module)

            forget_prepared(connection.connection.info, None)  # prepared again when the unit runs again
        sql = named[index][0].sql if index < len(named) else "COMMIT"
        raise DBAPIError.instance(sql, None, refused, psycopg.Error, dialect=connection.dialect) from refused
    return results[-1] if then is not None else None
