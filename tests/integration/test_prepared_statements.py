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
from server.adapters.prepared import Prepared
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
