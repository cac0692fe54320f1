"""Statements compiled once for the engine's dialect and run on the driver's own cursor.

The claim path runs about a dozen small statements per claim. Through SQLAlchemy's execution
machinery (cache-key lookup, execution context, result objects) each cost more CPU than SQLite's own
work, and CPU, not the disk, bounded claims per second (README, "Benchmarks"). A `Prepared` statement
is still written as a Core statement on the mapped tables, so names and types have one source; it is
compiled once per dialect, and running it converts the parameters with the columns' own bind
processors, calls the DB-API cursor, and converts what comes back with the columns' result
processors: it writes and reads exactly what the ORM writes and reads, in the same transaction.

Driver errors are wrapped the way SQLAlchemy wraps them (IntegrityError, OperationalError, ...), so
callers and the retry policy see one kind of exception whichever path ran the statement.

On psycopg (PostgreSQL) the driver's own per-call work was the larger part of a claim's CPU: a new
cursor per statement, the %(name)s query converted to PostgreSQL's $1 form on every call, and a
statement sent unprepared five times on each pooled connection before psycopg prepares it. Here the
statement is rewritten to $n placeholders once, run on a raw cursor kept per connection, and prepared
on the server the first time a connection runs it: one parse and plan per connection and statement,
then only the statement's name and its parameters travel.

A single statement goes further: it is run on libpq directly (psycopg's PGconn: prepare once, then
exec_prepared), its parameters dumped and its rows loaded by a psycopg Transformer kept with the
connection, the same adapters a cursor uses: a cursor's execute adds psycopg's own machinery (its
prepared-statement manager, its query conversion, its generator-based waiting) to each round trip,
about 10 % of a claim's CPU on PostgreSQL (README, "Benchmarks": CPU per claim on PostgreSQL).
Parameters travel as text and the server types them from the statement's casts (SQLAlchemy writes
`$1::BIGINT`): text in, text out, as a raw cursor did. A batch (`execute_many`) still goes through a
cursor's executemany, which pipelines.

Reads that do not depend on each other can go together (`read_together`): on psycopg, in one libpq
pipeline (server/adapters/pipeline.py), one round trip for all; elsewhere each runs alone where its
answer is first used. Each `Read` says how its rows become its answer, so a repository keeps that.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from server.adapters import deferred_writes, pipeline

Processor = Callable[[Any], Any] | None
_T = TypeVar("_T")
# A pyformat placeholder, or an escaped percent sign, in SQL compiled for psycopg.
_PYFORMAT = re.compile(r"%\((?P<name>[^)]+)\)s|%%|%")
# Where a connection's raw cursors are kept: the pool's record of the connection (lives as long as it).
_CURSOR_KEY = "ecert.prepared_cursor"
# And its statements prepared on libpq directly, with the Transformer that adapts their values.
_DIRECT_KEY = "ecert.prepared_direct"
# Server-side names of those statements (psycopg's own are "_pg3_N"; these never collide with them).
_DIRECT_NAMES = itertools.count(1)


def forget_prepared(info: dict[str, Any], driver: Any) -> None:
    """Forget which statements are prepared on a connection: psycopg is about to roll it back itself,
    which deallocates every statement prepared on it (DEALLOCATE ALL) once it prepared one of its own,
    these too; or one was found deallocated (`driver` None). They are prepared again at their next
    run. (A unit of work's own rollback goes round psycopg and keeps them: database.py,
    rollback_keeping_statements.) Nothing to forget before a rollback when no transaction is open:
    psycopg then sends nothing."""
    pgconn = getattr(driver, "pgconn", None)
    if driver is None or (pgconn is not None and pgconn.transaction_status != 0):  # 0: PQTRANS_IDLE
        info.pop(_DIRECT_KEY, None)


class _Answered:
    """What a statement run on libpq directly answered, read the way a cursor is."""

    __slots__ = ("rowcount", "_rows")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int):
        self._rows = rows
        self.rowcount = rowcount

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


def _numbered(sql: str) -> tuple[str, tuple[str, ...]] | None:
    """SQL compiled for psycopg's pyformat, rewritten with $1, $2, ... (PostgreSQL's own placeholders,
    what psycopg would send) and the parameter names in number order; a name used twice keeps one
    number. None if the SQL holds anything else with a percent sign (then the statement takes the
    ordinary path)."""
    names: list[str] = []
    numbers: dict[str, int] = {}
    unexpected = False

    def replace(match: re.Match[str]) -> str:
        nonlocal unexpected
        name = match.group("name")
        if name is None:
            if match.group(0) == "%%":
                return "%"
            unexpected = True
            return match.group(0)
        if name not in numbers:
            names.append(name)
            numbers[name] = len(names)
        return f"${numbers[name]}"

    rewritten = _PYFORMAT.sub(replace, sql)
    if unexpected or "POSTCOMPILE" in sql:
        return None
    return rewritten, tuple(names)


class Prepared:
    """One statement for one dialect: SQL text, parameter order, and the value converters."""

    def __init__(self, statement: Executable, dialect: Dialect, *, columns: Sequence[str] | None = None):
        # `columns` names the columns of an INSERT without explicit values (the rest take their defaults).
        # Every statement here is a Core ClauseElement (select, insert, update), which compiles.
        compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(
            dialect=dialect, column_keys=list(columns) if columns is not None else None))
        self.sql = compiled.string
        self._dialect = dialect
        self._positional = compiled.positional
        self._names: tuple[str, ...] = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
        binds = compiled.binds
        self._bind: dict[str, Processor] = {
            name: binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in set(self._names)
        }
        self._order = tuple((name, self._bind[name]) for name in self._names)
        # Values the statement carries itself (a LIMIT 1 becomes a bound parameter on some dialects).
        self._fixed = {name: binds[name].effective_value for name in self._bind if not binds[name].required}
        returned = getattr(statement, "exported_columns", None) or ()
        self._result: tuple[Processor, ...] = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in returned
        )
        self._error_class = dialect.loaded_dbapi.Error
        # psycopg: the statement in $n form for a raw cursor, prepared on the server at its first run.
        self._raw: str | None = None
        if dialect.driver == "psycopg" and not self._positional:
            numbered = _numbered(self.sql)
            if numbered is not None:
                self._raw = numbered[0]
                self._order = tuple((name, self._bind[name]) for name in numbered[1])
                self._raw_cursor_class = dialect.loaded_dbapi.RawCursor
                self._direct_sql = self._raw.encode()
                self._text = (dialect.loaded_dbapi.adapt.PyFormat.TEXT,) * len(self._order)

    def parameters(self, values: dict[str, Any]) -> Any:
        # Plain loops: this runs a dozen times a claim, and a call per value showed in the profile.
        if self._fixed:
            values = {**self._fixed, **values}
        if self._positional or self._raw is not None:  # a positional name used twice is sent twice
            ordered = []
            for name, process in self._order:
                value = values[name]
                ordered.append(value if process is None or value is None else process(value))
            return ordered
        named = {}
        for name, process in self._bind.items():
            value = values[name]
            named[name] = value if process is None or value is None else process(value)
        return named

    def _convert(self, row: Sequence[Any]) -> tuple[Any, ...]:
        converted = []
        for process, value in zip(self._result, row):
            converted.append(value if process is None or value is None else process(value))
        return tuple(converted)

    def _run(self, connection: Connection, values: dict[str, Any]):  # type: ignore[no-untyped-def]  # returns the driver's untyped cursor
        parameters = self.parameters(values)
        if self._raw is not None:
            answered = self._run_direct(connection, parameters)
            if answered is not None:
                return answered
            cursor = self._raw_cursor(connection)
            try:
                cursor.execute(self._raw, parameters, prepare=True)
            except self._error_class as error:
                raise DBAPIError.instance(self.sql, parameters, error, self._error_class, dialect=self._dialect) from error
            return cursor
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]  # a checked-out connection has its driver connection
        try:
            cursor.execute(self.sql, parameters)
        except self._error_class as error:
            cursor.close()
            raise DBAPIError.instance(self.sql, parameters, error, self._error_class, dialect=self._dialect) from error
        return cursor

    def _run_direct(self, connection: Connection, parameters: list[Any]) -> _Answered | None:
        """Run the statement on libpq directly (see the module's docstring); None where the connection
        is in a state this does not handle (a pipeline): the caller then uses a cursor."""
        driver: Any = connection.connection.driver_connection
        pgconn = driver.pgconn
        if pgconn.pipeline_status != 0:
            deferred_writes.send_held(connection)  # writes held for the commit go first, in order
            return None
        transformer, name = self.on_libpq(connection, parameters)
        dumped = self.dumped(transformer, parameters)
        if deferred_writes.held_writes(connection):
            # Writes held for the commit go first, in order, in the same round trip.
            result = deferred_writes.send_held_with(connection, self, name, dumped)
        else:
            result = pgconn.exec_prepared(name, dumped)
        result = self._check(result, parameters, connection)
        rows = self._loaded(transformer, result)
        return _Answered(rows, result.command_tuples if result.command_tuples is not None else len(rows))

    def _loaded(self, transformer: Any, result: Any) -> list[tuple[Any, ...]]:
        """The rows of a result libpq gave (none for a statement that returns none), as a cursor gives them."""
        if result.status != self._dialect.loaded_dbapi.pq.ExecStatus.TUPLES_OK:
            return []
        transformer.set_pgresult(result)
        rows: list[tuple[Any, ...]] = transformer.load_rows(0, result.ntuples, tuple)
        return rows

    def on_libpq(self, connection: Connection, parameters: list[Any]) -> tuple[Any, bytes]:
        """(the connection's Transformer, this statement's name on it), prepared there first if it was
        not yet (psycopg only; server/adapters/deferred_writes.py sends such statements in a pipeline)."""
        record = connection.connection
        driver: Any = record.driver_connection
        kept: tuple[Any, dict[Prepared, bytes], Any] | None = record.info.get(_DIRECT_KEY)
        if kept is None or kept[0] is not driver:
            kept = (driver, {}, self._dialect.loaded_dbapi.adapt.Transformer(driver))
            record.info[_DIRECT_KEY] = kept
        _, names, transformer = kept
        name = names.get(self)
        if name is None:
            name = f"ecert_{next(_DIRECT_NAMES)}".encode()
            self._check(driver.pgconn.prepare(name, self._direct_sql), parameters)
            names[self] = name
        return transformer, name

    def dumped(self, transformer: Any, parameters: list[Any]) -> Any:
        """The parameters as libpq sends them (text), for a statement run on libpq."""
        return transformer.dump_sequence(parameters, self._text)

    def _check(self, result: Any, parameters: list[Any], connection: Connection | None = None) -> Any:
        """The result, or the error it carries raised as SQLAlchemy wraps psycopg's."""
        psycopg = self._dialect.loaded_dbapi
        if result.status in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
            return result
        error = psycopg.errors.error_from_result(result)
        if isinstance(error, psycopg.errors.InvalidSqlStatementName) and connection is not None:
            # Deallocated behind this module's back: prepared again at the next run (the unit of work
            # is retried, server/service/transactions.py).
            forget_prepared(connection.connection.info, None)
        raise DBAPIError.instance(self.sql, parameters, error, self._error_class, dialect=self._dialect) from error

    def _raw_cursor(self, connection: Connection):  # type: ignore[no-untyped-def]  # returns the driver's untyped cursor
        """This statement's raw cursor on this connection, made on first use and kept with it: a
        cursor that runs the same query again keeps its adaptation state (psycopg rebuilds it when
        the query changes). A transaction's statements run one after the other on its connection and
        each reads its results before the next runs."""
        record = connection.connection
        driver = record.driver_connection
        cursors: tuple[Any, dict[Prepared, Any]] | None = record.info.get(_CURSOR_KEY)
        if cursors is None or cursors[0] is not driver:
            cursors = (driver, {})
            record.info[_CURSOR_KEY] = cursors
        kept = cursors[1].get(self)
        if kept is None or kept.closed:
            kept = cursors[1][self] = self._raw_cursor_class(driver)
        return kept

    def _done(self, cursor: Any) -> None:
        if self._raw is None:  # a raw cursor stays with its connection for the next run
            cursor.close()

    def execute(self, connection: Connection, values: dict[str, Any] | None = None) -> int:
        """Run a statement that returns no rows; the number of rows it changed."""
        cursor = self._run(connection, values or {})
        count: int = cursor.rowcount
        self._done(cursor)
        return count

    def execute_many(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> int:
        """Run a statement that returns no rows once per set of values, in one driver call; the number
        of rows changed in all (both drivers sum the executions' counts)."""
        if not rows:
            return 0
        parameters = [self.parameters(values) for values in rows]
        raw = self._raw is not None
        if raw:
            deferred_writes.send_held(connection)
        cursor = self._raw_cursor(connection) if raw else connection.connection.driver_connection.cursor()  # type: ignore[union-attr]  # see above
        try:
            cursor.executemany(self._raw if raw else self.sql, parameters)
            count: int = cursor.rowcount
        except self._error_class as error:
            raise DBAPIError.instance(self.sql, parameters[0], error, self._error_class, dialect=self._dialect) from error
        finally:
            self._done(cursor)
        return count

    def defer(self, connection: Connection, values: dict[str, Any]) -> None:
        """Run a write whose only possible outcomes are one row written or an error, now or, where the
        unit of work holds writes for its commit (PostgreSQL), with the COMMIT in one round trip
        (server/adapters/deferred_writes.py). Its error, if any, is then raised by the commit."""
        held = deferred_writes.held_writes(connection) if self._raw is not None else None
        if held is None:
            self.execute(connection, values)
        else:
            held.append((self, self.parameters(values)))

    def all(self, connection: Connection, values: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self._run(connection, values or {})
        try:
            return [self._convert(row) for row in cursor.fetchall()]
        except self._error_class as error:
            raise DBAPIError.instance(self.sql, None, error, self._error_class, dialect=self._dialect) from error
        finally:
            self._done(cursor)

    def first(self, connection: Connection, values: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The first row, or None (an UPDATE ... RETURNING that matched nothing)."""
        rows = self.all(connection, values)
        return rows[0] if rows else None


class Read(Generic[_T]):
    """A read that may run with others (`read_together`): a statement, its values on a connection, and
    what its rows answer. Not run together, it runs alone when its answer is first asked for."""

    __slots__ = ("connection", "statement", "values", "_make", "_answer", "_done")

    def __init__(self, connection: Connection, statement: Prepared, values: dict[str, Any], answer: Callable[[list[tuple[Any, ...]]], _T]):
        self.connection = connection
        self.statement = statement
        self.values = values
        self._make = answer
        self._done = False

    @property
    def answer(self) -> _T:
        if not self._done:
            self.answered(self.statement.all(self.connection, self.values))
        return self._answer

    def answered(self, rows: list[tuple[Any, ...]]) -> _T:
        self._answer = self._make(rows)
        self._done = True
        return self._answer


def read_together(connection: Connection, reads: Sequence[Read[Any]]) -> None:
    """Reads that do not depend on each other, on psycopg run now, in this order, in one libpq pipeline:
    one round trip for all (writes held for the commit are sent first, in order: deferred_writes.py).
    Elsewhere (SQLite), or in a state this does not handle, nothing is run here: each read runs alone
    when its answer is first asked for, where it would have run without this. The first read that
    fails raises its error as it would alone (the reads after it are not run); the transaction is
    then failed, as after any failed statement."""
    driver: Any = connection.connection.driver_connection
    pgconn = getattr(driver, "pgconn", None)
    if len(reads) < 2 or pgconn is None or any(read.statement._raw is None for read in reads):
        return
    deferred_writes.send_held(connection)
    if pgconn.pipeline_status != 0:
        return
    sent = []
    for read in reads:
        parameters = read.statement.parameters(read.values)
        transformer, name = read.statement.on_libpq(connection, parameters)  # prepared first where it was not yet
        sent.append((read.statement, transformer, name, parameters))
    psycopg: Any = connection.dialect.loaded_dbapi
    try:
        results = pipeline.run(pgconn, psycopg.pq, [(name, statement.dumped(transformer, parameters)) for statement, transformer, name, parameters in sent])
    except psycopg.Error as error:
        raise DBAPIError.instance(reads[0].statement.sql, None, error, psycopg.Error, dialect=connection.dialect) from error
    failed = pipeline.first_failure(results, psycopg.pq)
    if failed is not None:
        statement, _, _, parameters = sent[failed[0]]
        statement._check(failed[1], parameters, connection)  # raises it
    for read, (statement, transformer, _, _), result in zip(reads, sent, results):
        try:
            rows = [statement._convert(row) for row in statement._loaded(transformer, result)]
        except statement._error_class as error:
            raise DBAPIError.instance(statement.sql, None, error, statement._error_class, dialect=connection.dialect) from error
        read.answered(rows)


class Statements:
    """Every Prepared statement of a repository, compiled on first use for the connection's dialect."""

    def __init__(self, **statements: Executable | tuple[Executable, Sequence[str]]):
        self._statements = statements
        self._compiled: dict[tuple[str, str], Prepared] = {}

    def get(self, name: str, dialect: Dialect, build: Callable[[], Executable] | None = None) -> Prepared:
        """`build` makes a statement not declared up front (one per shape, e.g. per set of updated columns)."""
        key = (dialect.name, name)
        prepared = self._compiled.get(key)
        if prepared is None:
            source = self._statements[name] if build is None else build()
            statement, columns = source if isinstance(source, tuple) else (source, None)
            prepared = Prepared(statement, dialect, columns=columns)
            self._compiled[key] = prepared
        return prepared


class Transaction(Protocol):
    """What a repository works in: one transaction's connection, and a session on it for ORM work."""

    connection: Connection

    @property
    def session(self) -> Session: ...


class PreparedRepository:
    """A repository whose hot statements are Prepared, run on the transaction's connection; anything
    else goes through the transaction's session (made only when first needed)."""

    statements: Statements

    def __init__(self, transaction: Transaction):
        self._transaction = transaction
        self.connection = transaction.connection

    @property
    def session(self) -> Session:
        return self._transaction.session

    def _first(self, statement: str, values: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        return self.statements.get(statement, self.connection.dialect).first(self.connection, values)

    def _all(self, statement: str, values: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.statements.get(statement, self.connection.dialect).all(self.connection, values)

    def _execute(self, statement: str, values: dict[str, Any] | None = None) -> int:
        return self.statements.get(statement, self.connection.dialect).execute(self.connection, values)

    def _read(self, statement: str, values: dict[str, Any], answer: Callable[[list[tuple[Any, ...]]], _T]) -> Read[_T]:
        """A read that may run with others (read_together); `answer` makes its rows the answer."""
        return Read(self.connection, self.statements.get(statement, self.connection.dialect), values, answer)

    def _defer(self, statement: str, values: dict[str, Any]) -> None:
        """A write of one row (or an error), sent now or with the unit of work's commit (Prepared.defer)."""
        self.statements.get(statement, self.connection.dialect).defer(self.connection, values)

    def _execute_many(self, statement: str, rows: Sequence[dict[str, Any]]) -> int:
        return self.statements.get(statement, self.connection.dialect).execute_many(self.connection, rows)
