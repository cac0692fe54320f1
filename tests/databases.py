"""Where the tests' databases come from: a fresh SQLite file, or a fresh PostgreSQL database.

PostgreSQL is the server named by ECERT_TEST_POSTGRES_URL (`.ci/run` starts a throwaway one). Each
test gets its own database, cloned from a template migrated once per session, and dropped after.
Without a server the PostgreSQL tests are skipped with a reason, except where ECERT_REQUIRE_POSTGRES
is set (CI): there they fail, so that CI can never pass while silently skipping them.
"""
from __future__ import annotations

import os
import uuid
from collections import Counter

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

URL_VARIABLE = "ECERT_TEST_POSTGRES_URL"
REQUIRE_VARIABLE = "ECERT_REQUIRE_POSTGRES"
ENGINES = ("sqlite", "postgres")


def configured_url() -> str | None:
    raw = os.environ.get(URL_VARIABLE, "").strip()
    if not raw:
        return None
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def unavailable(reason: str) -> None:
    """Skip (a laptop without PostgreSQL) or fail (CI must run these tests)."""
    if os.environ.get(REQUIRE_VARIABLE):
        pytest.fail(f"{reason}, and {REQUIRE_VARIABLE} is set", pytrace=False)
    pytest.skip(f"{reason}: set {URL_VARIABLE} (or run .ci/run, which starts a throwaway cluster)")


class PostgresServer:
    """Creates and drops databases on one server, through an autocommit admin connection."""

    def __init__(self, url: str):
        self.url = make_url(url)
        self.admin: Engine = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=2)
        self.prefix = f"ecert_t{uuid.uuid4().hex[:8]}"

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def new_name(self) -> str:
        return f"{self.prefix}_{uuid.uuid4().hex[:10]}"

    def create(self, *, template: str | None = None) -> str:
        name = self.new_name()
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        return name

    def drop(self, name: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        # Leftovers of an interrupted run carry this session's prefix; drop them too.
        with self.admin.connect() as connection:
            names = connection.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": self.prefix + "%"}
            ).scalars().all()
        for name in names:
            self.drop(name)
        self.admin.dispose()


def connect_or_skip() -> PostgresServer:
    url = configured_url()
    if url is None:
        unavailable("no PostgreSQL server configured")
    assert url is not None
    server = PostgresServer(url)
    try:
        with server.admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not available"
        server.admin.dispose()
        unavailable(f"PostgreSQL at {URL_VARIABLE} is not reachable ({type(exc).__name__})")
    return server


# -- how many tests ran on each engine (printed at the end of the run) --------------------------------

_engine_of: dict[str, str] = {}
_passed: Counter[str] = Counter()


def engine_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("database_url") in ENGINES:
        return str(callspec.params["database_url"])
    if item.get_closest_marker("postgres"):
        return "postgres"
    if item.get_closest_marker("sqlite"):
        return "sqlite"
    return None


def record_collection(items: list[pytest.Item]) -> None:
    for item in items:
        engine = engine_of(item)
        if engine:
            _engine_of[item.nodeid] = engine


def record_report(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and report.nodeid in _engine_of:
        _passed[_engine_of[report.nodeid]] += 1


def summary_line() -> str:
    return "database tests passed: " + ", ".join(f"{_passed[e]} on {e}" for e in ENGINES)
