"""Writes a unit of work holds for its commit (server/adapters/deferred_writes.py), on a real PostgreSQL:
sent with the COMMIT in one round trip, in order before any other statement, raised as SQLAlchemy
raises them, and never sent by a unit that did not commit."""
from __future__ import annotations

import pathlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Integer, bindparam, create_engine, insert, literal_column, select, update
from sqlalchemy.exc import DataError, IntegrityError

from server.adapters.database import Database
from server.adapters.orm import ClaimRow
from server.adapters.prepared import Prepared
from server.service.transactions import sqlstate
from server.service.unit_of_work import UnitOfWork
from tests.integration.test_prepared_statements import claim_values

pytestmark = pytest.mark.postgres
claims = ClaimRow.__table__


def stored(database: Database) -> list[str]:
    """The committed claim ids, read on a connection of its own (the unit of work holds the pool's one)."""
    observer = create_engine(database.write_engine.url)
    try:
        with observer.connect() as connection:
            return [row[0] for row in connection.execute(select(claims.c.claim_id).order_by(claims.c.claim_id))]
    finally:
        observer.dispose()


def add(uow: UnitOfWork, claim_id: str, **changes: object) -> None:
    """A claim row written the way the claim path writes its own (Prepared.defer)."""
    Prepared(insert(claims), uow.connection.dialect, columns=[c.name for c in claims.columns]).defer(uow.connection, claim_values(claim_id, **changes))


def held(uow: UnitOfWork) -> int:
    return len(uow.connection.info.get("ecert.held_writes") or [])


def test_held_writes_go_with_the_commit(database):
    with UnitOfWork(database, write=True) as uow:
        add(uow, "A")
        add(uow, "B", line_number=2)
        assert held(uow) == 2 and stored(database) == []  # nothing sent yet
        uow.commit()
    assert stored(database) == ["A", "B"]


def test_a_statement_after_held_writes_sees_them_whichever_path_runs_it(database):
    read = Prepared(select(claims.c.claim_id).where(claims.c.quota_year == bindparam("year")).order_by(claims.c.claim_id),
                    database.write_engine.dialect)
    with UnitOfWork(database, write=True) as uow:
        add(uow, "A")
        assert read.all(uow.connection, {"year": 2026}) == [("A",)]  # a Prepared statement sends them first
        add(uow, "B", line_number=2)
        assert [r[0] for r in uow.connection.execute(select(claims.c.claim_id).order_by(claims.c.claim_id))] == ["A", "B"]  # so does SQLAlchemy
        assert held(uow) == 0
    assert stored(database) == []  # not committed: rolled back


def test_a_held_write_refused_by_a_unique_key_fails_the_commit_as_integrity_error_and_stores_nothing(database):
    with UnitOfWork(database, write=True) as uow:
        add(uow, "A")
        uow.commit()
    with pytest.raises(IntegrityError) as raised:
        with UnitOfWork(database, write=True) as uow:
            add(uow, "B", line_number=2)
            add(uow, "Z")  # the same entry line and revision as A
            uow.commit()
    assert sqlstate(raised.value) == "23505"  # what run_in_transaction retries on
    assert stored(database) == ["A"]  # B went with Z's transaction
    with UnitOfWork(database, write=True) as uow:  # the connection serves the next unit
        add(uow, "C", line_number=3)
        uow.commit()
    assert stored(database) == ["A", "C"]


def test_writes_held_by_a_unit_that_did_not_commit_are_never_sent(database):
    with pytest.raises(RuntimeError):
        with UnitOfWork(database, write=True) as uow:
            add(uow, "A")
            raise RuntimeError("the use case gave up")
    with UnitOfWork(database, write=True) as uow:  # the same connection: nothing of the last unit comes along
        add(uow, "B", line_number=2)
        uow.commit()
    assert stored(database) == ["B"]


def test_a_read_unit_holds_nothing(database):
    with UnitOfWork(database, write=False) as uow:
        assert uow.connection.info.get("ecert.held_writes") is None


def sent_by(uow: UnitOfWork, path: pathlib.Path, run: Callable[[], object]) -> list[str]:
    """The messages the unit's connection sends while `run` runs (libpq's trace), one line each."""
    pgconn: Any = uow.connection.connection.driver_connection.pgconn  # type: ignore[union-attr]
    with path.open("w") as trace:
        pgconn.trace(trace.fileno())
        try:
            run()
        finally:
            pgconn.untrace()
    return [line.split("\t")[3] for line in path.read_text().splitlines() if line.split("\t")[1:2] == ["F"]]


def test_held_writes_go_with_the_next_prepared_statement_in_one_round_trip(database, tmp_path):
    dialect = database.write_engine.dialect
    read = Prepared(select(claims.c.claim_id).where(claims.c.quota_year == bindparam("year")).order_by(claims.c.claim_id), dialect)
    write = Prepared(insert(claims), dialect, columns=[c.name for c in claims.columns])
    with UnitOfWork(database, write=True) as uow:
        write.execute(uow.connection, claim_values("A"))  # both prepared on the connection first
        read.all(uow.connection, {"year": 2026})
        write.defer(uow.connection, claim_values("B", line_number=2))
        assert held(uow) == 1
        answered: list[object] = []
        sent = sent_by(uow, tmp_path / "trace", lambda: answered.extend(read.all(uow.connection, {"year": 2026})))
        assert answered == [("A",), ("B",)] and held(uow) == 0
        uow.commit()
    assert sent.count("Bind") == 2 and sent.count("Sync") == 1 and "Parse" not in sent  # the held write and the read: one round trip
    assert stored(database) == ["A", "B"]


def test_a_held_write_refused_is_raised_by_the_next_statement_which_does_not_run(database):
    charge = Prepared(update(claims).where(claims.c.claim_id == bindparam("id")).values(granted_quantity=bindparam("q", type_=claims.c.granted_quantity.type))
                      .returning(claims.c.granted_quantity), database.write_engine.dialect)
    with UnitOfWork(database, write=True) as uow:
        add(uow, "A")
        uow.commit()
    with pytest.raises(IntegrityError) as raised:
        with UnitOfWork(database, write=True) as uow:
            add(uow, "Z")  # the same entry line and revision as A
            charge.first(uow.connection, {"id": "A", "q": Decimal(1)})
    assert sqlstate(raised.value) == "23505"  # what run_in_transaction retries on
    with UnitOfWork(database, write=True) as uow:  # the connection serves the next unit; A unchanged
        add(uow, "B", line_number=2)
        assert charge.first(uow.connection, {"id": "A", "q": Decimal(2)}) == (Decimal(2),)
    assert stored(database) == ["A"]


def test_the_next_statements_own_error_is_raised_as_alone_after_the_held_writes_it_carried(database):
    divide = Prepared(select((literal_column("10") / bindparam("d", type_=Integer())).label("q")), database.write_engine.dialect)
    with pytest.raises(DataError) as raised:
        with UnitOfWork(database, write=True) as uow:
            add(uow, "A")
            divide.all(uow.connection, {"d": 0})
    assert sqlstate(raised.value) == "22012"
    with UnitOfWork(database, write=True) as uow:
        add(uow, "B", line_number=2)
        assert divide.all(uow.connection, {"d": 2}) == [(5,)]
        uow.commit()
    assert stored(database) == ["B"]
