"""Engines and sessions.

SQLite (the embedded default): WAL, synchronous=FULL (an acknowledged answer survives a crash),
and every write transaction funnelled through ONE connection opened with BEGIN IMMEDIATE. Several
writer connections would sleep and retry on SQLite's file lock and give long tail latencies; one
writer connection queues them in the pool instead. Reads use a separate pool and never block.

PostgreSQL: one pool for reads and writes; correctness under concurrency comes from atomic
conditional updates and row locks, not from the pool (README, "Isolation and locking").

Both: at most `max_transactions` transactions run at once (server/adapters/admission.py).
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from server.adapters.admission import Admission
from server.adapters.group_commit import GroupCommitter
from server.domain.errors import DomainError, ErrorKind

MIGRATIONS = pathlib.Path(__file__).resolve().parent.parent / "migrations"
# pg_advisory_xact_lock key held while migrating, so that replicas starting together migrate once.
MIGRATION_LOCK_KEY = 0x6563657274  # "ecert"


def _sqlite_engine(url: str, *, writer: bool, pool_size: int, timeout: float) -> Engine:
    engine = create_engine(
        url,
        pool_size=1 if writer else pool_size,
        max_overflow=0,
        pool_timeout=timeout,
        connect_args={"check_same_thread": False, "timeout": timeout},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _begin(connection):  # type: ignore[no-untyped-def]
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
            self.write_engine = create_engine(
                url, pool_size=pool_size, max_overflow=0, pool_timeout=timeout, pool_pre_ping=True
            )
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
