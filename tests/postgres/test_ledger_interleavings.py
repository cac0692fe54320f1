"""The ledger's conditional writes under every interleaving of two database sessions (hypothesis).

Two PostgreSQL connections, each with its own open transaction, take turns running the very
statements the service runs (charge and release of a level and of a certificate, a new limit, marking
a claim reversed). A statement that needs a row the other session has changed and not yet committed
waits; here it waits `lock_timeout` and fails, which aborts its own transaction (the model discards
that session's changes: the service would retry it from fresh balances). After every step a third
connection reads what is committed: it must equal the model, and every bound must hold.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import Connection, create_engine, insert, text
from sqlalchemy.exc import DBAPIError

from server.adapters.claim_repository import CertificateLedger, ClaimRepository, LevelRow, QuotaRepository
from server.adapters.database import Database
from server.adapters.orm import CertificateRow, ClaimRow, QuotaLevelRow
from tests.databases import PostgresServer
from tests.factories import NOW
from tests.integration.test_prepared_statements import claim_values

pytestmark = pytest.mark.postgres

TPL, YEAR, CERTIFICATE = "9823.53.04", 2026, ("MX", "MX26-00000001")
LOCK_NOT_AVAILABLE = "55P03"
ROWS = {"level": ("limit", "charged"), "certificate": ("quantity", "used"), "claim": ("reversed",)}
amounts = st.sampled_from([Decimal(1), Decimal(7), Decimal("2.5"), Decimal(40), Decimal(100)])


@dataclass
class Books:
    """Committed balances (the model), and what one session changed in its open transaction."""

    limit: Decimal = Decimal(100)
    charged: Decimal = Decimal(0)
    quantity: Decimal = Decimal(60)
    used: Decimal = Decimal(0)
    reversed: bool = False
    touched: set[str] = field(default_factory=set)  # rows written: "level", "certificate", "claim"


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.create()
    url = postgres_server.url_of(name)
    database = Database(url)
    database.upgrade()
    database.dispose()
    yield url
    postgres_server.drop(name)


def test_two_sessions_never_break_a_bound_in_any_interleaving(database_url: str):
    engine = create_engine(database_url, pool_size=3)

    class Interleavings(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            with engine.begin() as c:
                for table in ("quota_ledger", "claims", "quota_levels", "certificates"):
                    c.execute(text(f"DELETE FROM {table}"))
                c.execute(insert(QuotaLevelRow.__table__).values(
                    tpl_number=TPL, quota_year=YEAR, label="TPL 4", measure_unit="SME", limit=Decimal(100), charged=Decimal(0)))
                c.execute(insert(CertificateRow.__table__).values(
                    issuing_country=CERTIFICATE[0], certificate_number=CERTIFICATE[1], current_version=1, status="ACTIVE",
                    tpl_number=TPL, quota_year=YEAR, unit="M2", importer_of_record="12-345678900", quantity=Decimal(60),
                    used_quantity=Decimal(0), matched_entries=0, updated_at=NOW))
                c.execute(insert(ClaimRow.__table__).values(**claim_values("C-1", tpl_number=TPL)))
            self.books = Books()
            self.sessions: list[Connection | None] = [None, None]
            self.pending: list[Books | None] = [None, None]

        def teardown(self) -> None:
            for connection in self.sessions:
                if connection is not None:
                    connection.rollback()
                    connection.close()

        # -- sessions ----------------------------------------------------------------------------

        def _session(self, s: int) -> tuple[Connection, Books]:
            if self.sessions[s] is None:
                connection = engine.connect()
                connection.execute(text("SET lock_timeout = '40ms'"))
                self.sessions[s] = connection
                self.pending[s] = Books(self.books.limit, self.books.charged, self.books.quantity, self.books.used, self.books.reversed)
            return self.sessions[s], self.pending[s]  # type: ignore[return-value]

        def _run(self, s: int, row: str, applies, statement):  # type: ignore[no-untyped-def]
            """Run a statement in session s. At READ COMMITTED it sees what is committed plus its own
            changes; an UPDATE whose condition holds on that row must lock it, so if the other session
            changed the row and has not committed, it waits, times out and aborts the transaction."""
            connection, books = self._session(s)
            if row not in books.touched:  # what others committed since this session began
                for name in ROWS[row]:
                    setattr(books, name, getattr(self.books, name))
            other = self.pending[1 - s]
            blocked = applies(books) and other is not None and row in other.touched
            repository = SimpleNamespace(connection=connection, session=None)
            try:
                statement(repository, books)
            except DBAPIError as error:
                assert blocked and getattr(error.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE, error
                self._end(s, commit=False)
                return
            assert not blocked, f"session {s} changed {row} while the other held it"

        def _end(self, s: int, *, commit: bool) -> None:
            connection, books = self.sessions[s], self.pending[s]
            if connection is None or books is None:
                return
            if commit:
                connection.commit()
                for row in books.touched:
                    for name in ROWS[row]:
                        setattr(self.books, name, getattr(books, name))
            else:
                connection.rollback()
            connection.close()
            self.sessions[s], self.pending[s] = None, None

        # -- the service's statements -------------------------------------------------------------

        @rule(s=st.integers(0, 1), amount=amounts)
        def charge_level(self, s: int, amount: Decimal) -> None:
            def run(repo, books: Books) -> None:  # type: ignore[no-untyped-def]
                remaining = QuotaRepository(repo).charge(TPL, YEAR, amount)
                fits = books.charged + amount <= books.limit
                assert (remaining is not None) == fits
                if fits:
                    books.charged += amount
                    books.touched.add("level")
                    assert remaining == books.limit - books.charged
            self._run(s, "level", lambda b: b.charged + amount <= b.limit, run)

        @rule(s=st.integers(0, 1), amount=amounts)
        def release_level(self, s: int, amount: Decimal) -> None:
            def run(repo, books: Books) -> None:  # type: ignore[no-untyped-def]
                remaining = QuotaRepository(repo).release(TPL, YEAR, amount)
                holds = books.charged >= amount
                assert (remaining is not None) == holds
                if holds:
                    books.charged -= amount
                    books.touched.add("level")
            self._run(s, "level", lambda b: b.charged >= amount, run)

        @rule(s=st.integers(0, 1), limit=st.sampled_from([Decimal(0), Decimal(10), Decimal(50), Decimal(100), Decimal(150)]))
        def set_limit(self, s: int, limit: Decimal) -> None:
            def run(repo, books: Books) -> None:  # type: ignore[no-untyped-def]
                charged = QuotaRepository(repo).set_level(LevelRow(TPL, YEAR, "TPL 4", "SME", limit, Decimal(0), None))
                fits = books.charged <= limit
                assert (charged is not None) == fits
                if fits:
                    books.limit = limit
                    books.touched.add("level")
            self._run(s, "level", lambda b: b.charged <= limit, run)

        @rule(s=st.integers(0, 1), amount=amounts)
        def charge_certificate(self, s: int, amount: Decimal) -> None:
            def run(repo, books: Books) -> None:  # type: ignore[no-untyped-def]
                remaining = CertificateLedger(repo).charge(*CERTIFICATE, amount, entries=1, version=1)
                assert (remaining is not None) == (books.used + amount <= books.quantity)
                if remaining is not None:
                    books.used += amount
                    books.touched.add("certificate")
            self._run(s, "certificate", lambda b: b.used + amount <= b.quantity, run)

        @rule(s=st.integers(0, 1), amount=amounts)
        def release_certificate(self, s: int, amount: Decimal) -> None:
            def run(repo, books: Books) -> None:  # type: ignore[no-untyped-def]
                remaining = CertificateLedger(repo).release(*CERTIFICATE, amount, entries=0)
                assert (remaining is not None) == (books.used >= amount)
                if remaining is not None:
                    books.used -= amount
                    books.touched.add("certificate")
            self._run(s, "certificate", lambda b: b.used >= amount, run)

        @rule(s=st.integers(0, 1))
        def mark_reversed(self, s: int) -> None:
            def run(repo, books: Books) -> None:  # type: ignore[no-untyped-def]
                read = SimpleNamespace(claim_id="C-1", decision="PARTIAL")  # as a reversal read it
                marked = ClaimRepository(repo).mark_reversed(read, NOW, "CANCELED")  # type: ignore[arg-type]
                assert (marked is not None) == (not books.reversed)  # a claim is reversed once
                if marked is not None:
                    books.reversed = True
                    books.touched.add("claim")
            self._run(s, "claim", lambda b: not b.reversed, run)

        @precondition(lambda self: self.sessions[0] is not None or self.sessions[1] is not None)
        @rule(s=st.integers(0, 1), commit=st.booleans())
        def end(self, s: int, commit: bool) -> None:
            self._end(s, commit=commit)

        @invariant()
        def committed_state_is_the_model_and_within_bounds(self) -> None:
            with engine.connect() as c:
                limit, charged = c.execute(text('SELECT "limit", charged FROM quota_usage WHERE tpl_number = :t'), {"t": TPL}).one()
                quantity, used = c.execute(text("SELECT quantity, used_quantity FROM certificates")).one()
                reversed_at = c.execute(text("SELECT reversed_at FROM claims WHERE claim_id = 'C-1'")).scalar_one()
            micro = Decimal(1_000_000)
            assert (Decimal(limit) / micro, Decimal(charged) / micro) == (self.books.limit, self.books.charged)
            assert (Decimal(quantity) / micro, Decimal(used) / micro) == (self.books.quantity, self.books.used)
            assert (reversed_at is not None) == self.books.reversed
            assert 0 <= charged <= limit and 0 <= used <= quantity

    Interleavings.TestCase.settings = settings(
        max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
    )
    try:
        Interleavings.TestCase().runTest()
    finally:
        engine.dispose()
