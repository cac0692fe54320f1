"""Prepared statements (the claim path's driver-level statements) store and read exactly what the ORM
stores and reads, and fail the way SQLAlchemy fails, on both engines."""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.adapters.database import Database
from server.adapters.orm import ClaimRow, ExactQuantity
from server.adapters.prepared import Prepared, Read, read_together
from server.service.transactions import sqlstate

# A zone other than UTC: both paths must store the same UTC instant.
AT = dt.datetime(2026, 6, 15, 7, 30, 1, 250000, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
claims = ClaimRow.__table__


@pytest.fixture
def database(database_url, tmp_path):  # type: ignore[no-untyped-def]
    db = Database(database_url or f"sqlite:///{tmp_path / 'prepared.db'}")
    db.upgrade()
    yield db
    db.dispose()


def claim_values(claim_id: str, revision: int = 1, **changes: object) -> dict[str, object]:
    values: dict[str, object] = dict(
        claim_id=claim_id, entry_number="B76-0000001-4", line_number=1, revision=revision, request_digest="d" * 64,
        filer_code="B76", importer_of_record="12-345678900", issuing_country="MX", certificate_number="MX26-00000001",
        certificate_version=2, tpl_number="9823.53.01", quota_year=2026, decision="PARTIAL", reasons='["LEVEL_FILLED"]',
        mismatches="[]", claimed_quantity=Decimal("12.5"), unit="DOZ", claimed_measure=Decimal("150.000001"),
        measure_unit="SME", conversion_factor="12.000000", factor_version="v1", granted_quantity=Decimal("10"),
        granted_measure=Decimal("120"), certificate_remaining=Decimal("0"), level_remaining=None, aggregate_remaining=None,
        presentation_time=AT, decided_at=AT + dt.timedelta(microseconds=1), post_importation=True, proration_rate="",
        reversed_at=None, reversal_kind=None, certificate_receipt_id="R-1", certificate_digest="ab" * 32, offer_expires_at=None,
        batch_cutoff=AT + dt.timedelta(hours=6),
    )
    values.update(changes)
    return values


def raw_rows(database: Database) -> list[dict[str, object]]:
    """The stored values as the driver returns them (no type conversion)."""
    with database.read_engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text("SELECT * FROM claims ORDER BY claim_id"))]


def test_a_row_written_by_either_path_is_stored_and_read_identically(database):
    columns = [c.name for c in claims.columns]
    with database.write_engine.begin() as connection:
        Prepared(insert(claims), connection.dialect, columns=columns).execute(connection, claim_values("A"))
        # Another line of the entry: a line holds one live claim (uq_claims_live_hold).
        connection.execute(insert(claims), claim_values("B", revision=2, line_number=2))
    stored_a, stored_b = raw_rows(database)
    differing = {name for name in columns if stored_a[name] != stored_b[name]}
    assert differing == {"claim_id", "revision", "line_number"}  # the same stored values, datetimes and micro-units included
    read = select(claims).where(claims.c.claim_id == bindparam("id"))
    with database.read_engine.connect() as connection:
        prepared = Prepared(read, connection.dialect).first(connection, {"id": "B"})
        through_core = connection.execute(read, {"id": "A"}).one()
    assert prepared is not None
    assert dict(zip(columns, prepared)) == claim_values("B", revision=2, line_number=2) | {"presentation_time": AT, "decided_at": AT + dt.timedelta(microseconds=1)}
    assert dict(zip(columns, prepared))["presentation_time"].tzinfo == dt.timezone.utc
    assert tuple(through_core)[4:] == prepared[4:]
    with Session(database.read_engine) as session:
        orm = session.get_one(ClaimRow, "A")
        assert (orm.claimed_measure, orm.presentation_time, orm.post_importation) == (Decimal("150.000001"), AT, True)


def test_returning_no_row_is_none_and_fixed_parameters_are_sent(database):
    amount = bindparam("amount", type_=ExactQuantity())
    charge = (
        update(claims).where(claims.c.claim_id == bindparam("id"), claims.c.granted_quantity + amount <= claims.c.claimed_quantity)
        .values(granted_quantity=claims.c.granted_quantity + amount).returning(claims.c.granted_quantity)
    )
    with database.write_engine.begin() as connection:
        connection.execute(insert(claims), claim_values("A"))
        statement = Prepared(charge, connection.dialect)
        assert statement.first(connection, {"id": "A", "amount": Decimal("2.5")}) == (Decimal("12.5"),)
        assert statement.first(connection, {"id": "A", "amount": Decimal("0.000001")}) is None  # would exceed: no row
        limited = Prepared(select(claims.c.claim_id).where(claims.c.quota_year == bindparam("year")).limit(1), connection.dialect)
        assert limited.all(connection, {"year": 2026}) == [("A",)]


def test_a_unique_violation_is_sqlalchemys_integrity_error_and_keeps_the_stored_row(database):
    columns = [c.name for c in claims.columns]
    with database.write_engine.begin() as connection:
        connection.execute(insert(claims), claim_values("A"))
    before = raw_rows(database)
    with pytest.raises(IntegrityError) as raised:
        with database.write_engine.begin() as connection:
            # Same entry, line and revision under another id: the unique constraint refuses it.
            Prepared(insert(claims), connection.dialect, columns=columns).execute(connection, claim_values("Z"))
    if database.dialect == "postgresql":
        assert sqlstate(raised.value) == "23505"  # what run_in_transaction retries on
    assert raw_rows(database) == before


def test_more_than_six_decimal_places_is_refused_before_reaching_the_database(database):
    columns = [c.name for c in claims.columns]
    with database.write_engine.begin() as connection:
        with pytest.raises(ValueError, match="six decimal places"):
            Prepared(insert(claims), connection.dialect, columns=columns).execute(
                connection, claim_values("A", claimed_quantity=Decimal("1.0000001"))
            )
    assert raw_rows(database) == []


def test_every_claim_record_field_is_a_column():
    from server.domain.records import ClaimRecord

    assert [f.name for f in dataclasses.fields(ClaimRecord)] == [c.name for c in claims.columns]


def test_pyformat_sql_is_numbered_once_per_name_and_anything_else_takes_the_ordinary_path():
    from server.adapters.prepared import _numbered

    sql = "UPDATE t SET a = %(amount)s WHERE b LIKE 'x%%' AND a + %(amount)s <= %(limit)s"
    assert _numbered(sql) == ("UPDATE t SET a = $1 WHERE b LIKE 'x%' AND a + $1 <= $2", ("amount", "limit"))
    assert _numbered("SELECT 5 % 2") is None
    assert _numbered("SELECT x FROM t WHERE y IN (__[POSTCOMPILE_ys])") is None


def _prepared_on_server(connection) -> set[str]:  # type: ignore[no-untyped-def]
    return {row[0] for row in connection.exec_driver_sql("SELECT statement FROM pg_prepared_statements")}


@pytest.mark.postgres
def test_postgresql_statements_are_prepared_once_per_connection_and_survive_a_unit_of_work_rolled_back(postgres_url):
    from server.service.unit_of_work import UnitOfWork

    database = Database(postgres_url, pool_size=1)
    database.upgrade()
    try:
        read = Prepared(select(claims.c.claim_id).where(claims.c.quota_year == bindparam("year")), database.write_engine.dialect)
        with UnitOfWork(database, write=True) as uow:
            uow.connection.execute(insert(claims), claim_values("A"))
            uow.commit()
        with UnitOfWork(database, write=False) as uow:
            assert read.all(uow.connection, {"year": 2026}) == [("A",)]  # prepared at its first run, not its sixth
            assert any("$1" in statement and "claims.quota_year" in statement for statement in _prepared_on_server(uow.connection))
        for write in (True, False):  # neither commits: both roll back
            with UnitOfWork(database, write=write) as uow:
                uow.connection.execute(insert(claims), claim_values("B", line_number=2))
                assert read.all(uow.connection, {"year": 2026}) == [("A",), ("B",)]
        with UnitOfWork(database, write=False) as uow:  # the same (only) connection: the statement is still prepared
            prepared = _prepared_on_server(uow.connection)
            assert any("claims.quota_year" in statement for statement in prepared)
            assert read.all(uow.connection, {"year": 2026}) == [("A",)]  # and nothing of the rolled-back units was kept
    finally:
        database.dispose()


@pytest.mark.postgres
def test_a_postgresql_connection_closed_while_pooled_is_replaced_at_checkout(postgres_url):
    database = Database(postgres_url, pool_size=1)
    try:
        with database.connect(write=True) as connection:
            first = connection.connection.driver_connection
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            connection.rollback()
            first.close()  # e.g. the server went away: the driver knows the connection is closed
        with database.connect(write=True) as connection:
            assert connection.connection.driver_connection is not first
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
    finally:
        database.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("snapshot", [False, True])
def test_a_postgresql_unit_of_work_opens_with_its_settings_in_force(postgres_url, snapshot):
    from server.service import deadline
    from server.service.unit_of_work import UnitOfWork

    database = Database(postgres_url, pool_size=1)
    try:
        with deadline.deadline_in(30.0):
            with UnitOfWork(database, write=False, snapshot=snapshot) as uow:
                timeout = uow.connection.exec_driver_sql("SHOW statement_timeout").scalar()
                isolation = uow.connection.exec_driver_sql("SHOW transaction_isolation").scalar()
                read_only = uow.connection.exec_driver_sql("SHOW transaction_read_only").scalar()
        assert timeout is not None and timeout.endswith("s") and 25 <= int(timeout.rstrip("ms")) / (1000 if timeout.endswith("ms") else 1) <= 30
        assert (isolation, read_only) == (("repeatable read", "on") if snapshot else ("read committed", "off"))
        with UnitOfWork(database, write=False) as uow:  # the setting was the transaction's only; no deadline now
            assert uow.connection.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
            assert uow.connection.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
    finally:
        database.dispose()


def test_bytes_and_nulls_round_trip_through_a_prepared_statement(database):
    """Log entries carry raw bytes (any octet, NUL and non-UTF-8 included) and NULL indices."""
    from server.adapters.orm import LogEntryRow

    entries = LogEntryRow.__table__
    data, leaf = bytes(range(256)) * 3, b"\x00\xff" * 16
    with database.write_engine.begin() as connection:
        stored = Prepared(insert(entries), connection.dialect, columns=("kind", "subject", "entry", "leaf_hash")).execute(
            connection, {"kind": "DECISION", "subject": "entry:x", "entry": data, "leaf_hash": leaf})
        assert stored == 1
        read = Prepared(select(entries.c.entry, entries.c.leaf_hash, entries.c.log_index).where(entries.c.subject == bindparam("s")),
                        connection.dialect)
        assert read.all(connection, {"s": "entry:x"}) == [(data, leaf, None)]
        assert read.all(connection, {"s": "nothing"}) == []


@pytest.mark.postgres
def test_a_failed_postgresql_statement_rolls_back_and_its_connection_serves_the_next_unit(postgres_url):
    from server.service.unit_of_work import UnitOfWork

    database = Database(postgres_url, pool_size=1)
    database.upgrade()
    columns = [c.name for c in claims.columns]
    try:
        add = Prepared(insert(claims), database.write_engine.dialect, columns=columns)
        read = Prepared(select(claims.c.claim_id).where(claims.c.quota_year == bindparam("year")), database.write_engine.dialect)
        with UnitOfWork(database, write=True) as uow:
            add.execute(uow.connection, claim_values("A"))
            uow.commit()
        with pytest.raises(IntegrityError):
            with UnitOfWork(database, write=True) as uow:
                add.execute(uow.connection, claim_values("B", line_number=2))
                add.execute(uow.connection, claim_values("Z"))  # the same line and revision as A
        with UnitOfWork(database, write=False) as uow:  # the one pooled connection, rolled back and usable
            assert read.all(uow.connection, {"year": 2026}) == [("A",)]
    finally:
        database.dispose()


@pytest.mark.postgres
def test_statements_deallocated_by_psycopgs_own_rollback_are_prepared_again(postgres_url):
    """psycopg's rollback (a pooled connection returned inside a transaction, or SQLAlchemy's own
    rollback) deallocates every statement prepared on the connection once psycopg prepared one of its
    own (DEALLOCATE ALL): ours are prepared again at their next run."""
    from server.service.unit_of_work import UnitOfWork

    def psycopg_prepares_one_of_its_own(connection) -> None:  # type: ignore[no-untyped-def]
        connection.connection.driver_connection.execute("SELECT 1", prepare=True)

    database = Database(postgres_url, pool_size=1)
    database.upgrade()
    try:
        read = Prepared(select(claims.c.claim_id).where(claims.c.quota_year == bindparam("year")), database.write_engine.dialect)
        with database.write_engine.connect() as connection:  # returned to the pool inside its transaction
            assert read.all(connection, {"year": 2026}) == []
            psycopg_prepares_one_of_its_own(connection)
            assert any("claims.quota_year" in s for s in _prepared_on_server(connection))
        with database.write_engine.connect() as connection:  # the same connection
            assert not any("claims.quota_year" in s for s in _prepared_on_server(connection))  # DEALLOCATE ALL
            assert read.all(connection, {"year": 2026}) == []
            psycopg_prepares_one_of_its_own(connection)
            connection.rollback()  # SQLAlchemy's rollback, through psycopg: deallocated again
            assert read.all(connection, {"year": 2026}) == []
        with UnitOfWork(database, write=False) as uow:
            assert read.all(uow.connection, {"year": 2026}) == []
    finally:
        database.dispose()


def test_reads_run_together_answer_as_each_alone_and_on_sqlite_each_runs_where_it_is_asked_for(database):
    columns = [c.name for c in claims.columns]
    with database.write_engine.begin() as connection:
        insert_claim = Prepared(insert(claims), connection.dialect, columns=columns)
        insert_claim.execute(connection, claim_values("A"))
        insert_claim.execute(connection, claim_values("B", line_number=2))
    by_line = select(claims.c.claim_id).where(claims.c.line_number == bindparam("line"))
    with database.write_engine.begin() as connection:
        prepared = Prepared(by_line, connection.dialect)
        reads = [Read(connection, prepared, {"line": line}, lambda rows: [row[0] for row in rows]) for line in (2, 1, 3)]
        read_together(connection, reads)
        if database.is_sqlite:  # nothing ran yet: a row written now is seen by the read asked for later
            insert_claim.execute(connection, claim_values("C", line_number=3))
            assert [read.answer for read in reads] == [["B"], ["A"], ["C"]]
        else:
            assert [read.answer for read in reads] == [["B"], ["A"], []]
