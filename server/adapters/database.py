"""Engines and sessions.

SQLite (the embedded default): WAL, synchronous=FULL (an acknowledged answer survives a crash),
and every write transaction funnelled through ONE connection opened with BEGIN IMMEDIATE. Several
writer connections would sleep and retry on SQLite's file lock and give long tail latencies; one
writer connection queues them in the pool instead. Reads use a separate pool and never block.

PostgreSQL: one pool for reads and writes; correctness under concurrency comes from atomic
conditional updates and row locks, not from the pool (README, "Isolation and locking"). The pool hands
out the connection used last (LIFO), so the connections in use stay warm (their prepared statements,
server/adapters/prepared.py) and the rest sit idle; a connection is checked with a round trip (a
ping) only when it sat idle longer than PING_AFTER_IDLE, not on every checkout: under load the ping
was one more round trip per transaction. A connection the driver knows is broken or closed is replaced
at checkout whatever its idle time.

Both: at most `max_transactions` transactions run at once (server/adapters/admission.py).
"""
from __future__ import annotations

import pathlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from server.adapters import deferred_writes
from server.adapters.admission import Admission
from server.adapters.group_commit import GroupCommitter
from server.adapters.prepared import forget_prepared
from server.domain.errors import DomainError, ErrorKind

# SQLite: the writer copies the write-ahead log into the database file once the log holds this many
# pages (SQLite's default is 1,000). A batch step of the opening allocation rewrites about 1,200 pages
# (its claims, their ledger rows and log entries land all over the random-keyed indexes), so by the
# default every step's commit also ran a checkpoint; with a larger log, pages that consecutive steps
# rewrite are copied once. Measured: a 50,000-claim opening allocation in process, 14.3/14.2 s before,
# 12.6/12.2 s after (README, "Benchmarks"). The log file grows to about 32 MiB before it is reused.
WAL_CHECKPOINT_PAGES = 8000

MIGRATIONS = pathlib.Path(__file__).resolve().parent.parent / "migrations"
# pg_advisory_xact_lock key held while migrating, so that replicas starting together migrate once.
MIGRATION_LOCK_KEY = 0x6563657274  # "ecert"


# Seconds a pooled PostgreSQL connection may sit idle and still be handed out without a ping.
PING_AFTER_IDLE = 2.0
_CHECKED_IN = "ecert.checked_in"


def _postgresql_engine(url: str, *, pool_size: int, timeout: float) -> Engine:
    engine = create_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=timeout, pool_use_lifo=True)

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record):  # type: ignore[no-untyped-def]  # a SQLAlchemy pool event listener: its arguments are untyped
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]  # a SQLAlchemy pool event listener: its arguments are untyped
        # DisconnectionError: the pool discards this connection and hands out (or opens) another.
        if dbapi_connection.closed or getattr(dbapi_connection, "broken", False):
            raise DisconnectionError("the connection was closed")
        since = record.info.get(_CHECKED_IN)
        if since is not None and time.monotonic() - since > PING_AFTER_IDLE:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except engine.dialect.loaded_dbapi.Error as error:
                raise DisconnectionError(f"the connection failed its ping: {error}") from error

    # psycopg's own rollback deallocates every prepared statement (prepared.py, forget_prepared).
    @event.listens_for(engine, "rollback")
    def _rolling_back(connection):  # type: ignore[no-untyped-def]  # a SQLAlchemy event listener: its arguments are untyped
        if not connection.invalidated and not connection.closed:
            forget_prepared(connection.info, connection.connection.driver_connection)

    @event.listens_for(engine, "reset")
    def _resetting(dbapi_connection, record, _state):  # type: ignore[no-untyped-def]  # a SQLAlchemy pool event listener: its arguments are untyped
        forget_prepared(record.info, dbapi_connection)

    @event.listens_for(engine, "before_cursor_execute")
    def _held_writes_first(connection, _cursor, _statement, _parameters, _context, _executemany):  # type: ignore[no-untyped-def]  # a SQLAlchemy event listener: its arguments are untyped
        deferred_writes.send_held(connection)  # writes a unit of work held for its commit keep their order

    return engine


def begin_on_driver(connection: Connection, *, snapshot: bool, statement_timeout_ms: int | None) -> bool:
    """PostgreSQL (psycopg): open the transaction now, in one round trip with what a unit of work sets
    in it: "BEGIN[ ISOLATION LEVEL REPEATABLE READ, READ ONLY][; SELECT set_config('statement_timeout',
    ms, true)]", sent as one message on libpq's connection. psycopg sees the transaction open and sends
    no BEGIN of its own; it would have sent BEGIN and then each setting, a round trip apiece. False
    (nothing open, nothing set) when this cannot be done here: the caller then does it the ordinary way."""
    if connection.dialect.driver != "psycopg" or connection.invalidated or connection.closed:
        return False
    driver: Any = connection.connection.driver_connection
    pgconn = getattr(driver, "pgconn", None)
    if pgconn is None or pgconn.pipeline_status != 0 or driver.autocommit:
        return False
    if driver.isolation_level is not None or driver.read_only is not None or driver.deferrable is not None:
        return False  # psycopg's own BEGIN would say more than BEGIN
    pq = connection.dialect.loaded_dbapi.pq  # psycopg's libpq wrapper, as the dialect loaded it

    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    sql = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY" if snapshot else "BEGIN"
    if statement_timeout_ms is not None:
        sql += f"; SELECT set_config('statement_timeout', '{int(statement_timeout_ms)}', true)"
    try:
        result = pgconn.exec_(sql.encode())
    except Exception:  # noqa: BLE001 - the ordinary path meets the same failure and reports it
        return False
    if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK) and pgconn.transaction_status == pq.TransactionStatus.INTRANS:
        return True
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        try:
            pgconn.exec_(b"ROLLBACK")
        except Exception:  # noqa: BLE001 - as above
            pass
    return False


def rollback_keeping_statements(connection: Connection) -> None:
    """PostgreSQL (psycopg): end the connection's transaction with a ROLLBACK sent on libpq's own
    connection, then let SQLAlchemy finish (psycopg finds no transaction left and sends nothing).
    Same ROLLBACK, same round trip; what it spares is psycopg's reaction to its own rollback(): it
    forgets every statement prepared on the connection (DEALLOCATE ALL, another round trip), so the
    next transactions prepared all of theirs again. Statements prepared on a session survive a
    ROLLBACK in PostgreSQL, and units of work run no DDL. Anything unusual (not in a transaction,
    a pipeline, an invalidated connection, the ROLLBACK failing): nothing is done here and SQLAlchemy's
    rollback does it all."""
    if connection.dialect.driver != "psycopg" or connection.invalidated or connection.closed:
        return
    driver = connection.connection.driver_connection
    pgconn = getattr(driver, "pgconn", None)
    if pgconn is None or pgconn.pipeline_status != 0:
        return
    pq = connection.dialect.loaded_dbapi.pq

    if pgconn.transaction_status not in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
        return
    try:
        pgconn.exec_(b"ROLLBACK")
    except Exception:  # noqa: BLE001 - the ordinary rollback below reports and handles it
        return


def _write_ahead_log(cursor: Any, timeout: float) -> None:
    """Put the file in WAL mode (it stays so). Two processes opening a fresh file together may both hold
    a shared lock and want the exclusive one to switch: SQLite then refuses one of them at once ("database
    is locked", no busy wait, as waiting could deadlock). That one tries again until the other has
    switched the file, or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() in ("wal", "memory"):
                return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("database is locked: could not switch it to WAL mode")
        time.sleep(0.05)


def _sqlite_engine(url: str, *, writer: bool, pool_size: int, timeout: float) -> Engine:
    engine = create_engine(
        url,
        pool_size=1 if writer else pool_size,
        max_overflow=0,
        pool_timeout=timeout,
        connect_args={"check_same_thread": False, "timeout": timeout},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):  # type: ignore[no-untyped-def]  # a SQLAlchemy pool event listener: its arguments are untyped
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _write_ahead_log(cursor, timeout)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        if writer:
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _begin(connection):  # type: ignore[no-untyped-def]  # a SQLAlchemy connection event listener: its argument is untyped
        # On the driver: through exec_driver_sql this was a quarter of a one-read call's database CPU.
        connection.connection.driver_connection.execute(begin)

    return engine


class Database:
    """The engines of one database and the sessions a unit of work opens on them."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 16,
        timeout: float = 10.0,
        max_transactions: int | None = None,
        admission_wait: float = 1.0,
        group_commit: bool = True,
    ):
        self.url = url
        self.admission = Admission(max_transactions or pool_size, admission_wait)
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                pathlib.Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = _sqlite_engine(url, writer=True, pool_size=pool_size, timeout=timeout)
            self.read_engine = _sqlite_engine(url, writer=False, pool_size=pool_size, timeout=timeout)
        else:
            self.write_engine = _postgresql_engine(url, pool_size=pool_size, timeout=timeout)
            self.read_engine = self.write_engine
        # SQLite only: write units of work queued for the single writer share one fsync (group_commit.py).
        self.group_commit = (
            GroupCommitter(self.write_engine, timeout=timeout) if group_commit and self.dialect == "sqlite" else None
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def connect(self, *, write: bool) -> Connection:
        return (self.write_engine if write else self.read_engine).connect()

    def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.write_engine.begin() as connection:
            if self.dialect == "postgresql":
                # Replicas starting together: one migrates, the others wait here, then find the schema at head.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


@contextmanager
def translate_pool_timeout() -> Iterator[None]:
    """A full connection pool means the service is saturated: tell the caller to back off."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    try:
        yield
    except PoolTimeout as exc:
        raise DomainError(
            "DATABASE_BUSY", "too many transactions in flight; retry with backoff", ErrorKind.EXHAUSTED
        ) from exc
