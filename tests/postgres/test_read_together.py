"""Reads run together (server/adapters/prepared.py, read_together) on a real PostgreSQL: one libpq
pipeline, one round trip; the answers those of each read run alone; held writes sent first; a read's
error raised as SQLAlchemy raises it, the connection and its prepared statements fine afterwards."""
from __future__ import annotations

import pathlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Integer, bindparam, insert, literal_column, select
from sqlalchemy.exc import DataError, DBAPIError

from server.adapters.database import Database
from server.adapters.orm import ClaimRow
from server.adapters.prepared import Prepared, Read, Statements, read_together
from server.service.unit_of_work import UnitOfWork
from tests.integration.test_prepared_statements import claim_values

pytestmark = pytest.mark.postgres
claims = ClaimRow.__table__


def ids(rows: list[tuple[Any, ...]]) -> list[str]:
    return [row[0] for row in rows]


# Kept for the module: a statement is prepared once per connection (per Prepared object).
STATEMENTS = Statements(
    by_line=select(claims.c.claim_id).where(claims.c.line_number == bindparam("line")).order_by(claims.c.claim_id),
    by_year=select(claims.c.claim_id).where(claims.c.quota_year == bindparam("year")).order_by(claims.c.claim_id),
    divided=select((literal_column("10") / bindparam("d", type_=Integer())).label("q")),
)


def reads(uow: UnitOfWork, *, divisor: int = 1) -> list[Read[Any]]:
    def statement(name: str) -> Prepared:
        return STATEMENTS.get(name, uow.connection.dialect)

    return [
        Read(uow.connection, statement("by_line"), {"line": 1}, ids),
        Read(uow.connection, statement("divided"), {"d": divisor}, lambda rows: int(rows[0][0])),
        Read(uow.connection, statement("by_year"), {"year": 2026}, ids),
        Read(uow.connection, statement("by_year"), {"year": 1999}, ids),
    ]


@contextmanager
def traced(uow: UnitOfWork, path: pathlib.Path) -> Iterator[list[str]]:
    """The messages the unit's connection sends meanwhile (libpq's trace), one line each."""
    pgconn: Any = uow.connection.connection.driver_connection.pgconn  # type: ignore[union-attr]
    sent: list[str] = []
    with path.open("w") as trace:
        pgconn.trace(trace.fileno())
        try:
            yield sent
        finally:
            pgconn.untrace()
    sent.extend(line.split("\t")[3] for line in path.read_text().splitlines() if line.split("\t")[1:2] == ["F"])


def stored(database: Database, *claim_ids: str) -> None:
    with UnitOfWork(database, write=True) as uow:
        insert_claim = Prepared(insert(claims), uow.connection.dialect, columns=[c.name for c in claims.columns])
        for n, claim_id in enumerate(claim_ids):
            insert_claim.execute(uow.connection, claim_values(claim_id, line_number=n + 1))
        uow.commit()


def test_reads_run_together_in_one_round_trip_and_answer_as_alone(database, tmp_path):
    stored(database, "A", "B", "C")
    with UnitOfWork(database, write=True) as uow:
        alone = [read.answer for read in reads(uow)]
        together = reads(uow)
        with traced(uow, tmp_path / "trace") as sent:
            uow.read_together(*together)
        assert [read.answer for read in together] == alone == [["A"], 10, ["A", "B", "C"], []]
    assert sent.count("Sync") == 1 and sent.count("Bind") == 4  # one round trip
    assert "Parse" not in sent  # each statement was prepared on the connection by its first run


def test_held_writes_are_sent_before_the_reads(database):
    with UnitOfWork(database, write=True) as uow:
        Prepared(insert(claims), uow.connection.dialect, columns=[c.name for c in claims.columns]).defer(uow.connection, claim_values("H"))
        assert len(uow.connection.info["ecert.held_writes"]) == 1
        together = reads(uow)
        uow.read_together(*together)
        assert together[0].answer == ["H"] and not uow.connection.info["ecert.held_writes"]


def test_a_failing_read_raises_its_error_and_the_connection_and_its_statements_serve_the_next_unit(database, tmp_path):
    stored(database, "A")
    with UnitOfWork(database, write=True) as uow:
        for read in reads(uow):
            read.answer  # noqa: B018 - prepared on the connection
    with pytest.raises(DataError) as raised:  # as the statement alone raises it (SQLAlchemy's wrapping)
        with UnitOfWork(database, write=True) as uow:
            uow.read_together(*reads(uow, divisor=0))
    assert getattr(raised.value.orig, "sqlstate", None) == "22012"  # division by zero
    with UnitOfWork(database, write=True) as uow:
        together = reads(uow)
        with traced(uow, tmp_path / "trace") as sent:
            uow.read_together(*together)
        assert [read.answer for read in together] == [["A"], 10, ["A"], []]
    assert "Parse" not in sent and sent.count("Sync") == 1  # still prepared, one round trip


def test_a_statement_deallocated_behind_its_back_fails_the_unit_and_is_prepared_again(database):
    stored(database, "A")
    with UnitOfWork(database, write=True) as uow:
        for read in reads(uow):
            read.answer  # noqa: B018 - prepared on the connection
        uow.connection.connection.driver_connection.pgconn.exec_(b"DEALLOCATE ALL")  # type: ignore[union-attr]
    with pytest.raises(DBAPIError) as raised:
        with UnitOfWork(database, write=True) as uow:
            uow.read_together(*reads(uow))
    assert getattr(raised.value.orig, "sqlstate", None) == "26000"  # invalid statement name: the unit of work is run again
    with UnitOfWork(database, write=True) as uow:
        together = reads(uow)
        read_together(uow.connection, together)
        assert [read.answer for read in together] == [["A"], 10, ["A"], []]
