"""Writes a unit of work holds for its commit (server/adapters/deferred_writes.py), on a real PostgreSQL:
sent with the COMMIT in one round trip, in order before any other statement, raised as SQLAlchemy
raises them, and never sent by a unit that did not commit."""
from __future__ import annotations

import pytest
from sqlalchemy import bindparam, create_engine, insert, select
from sqlalchemy.exc import IntegrityError

from server.adapters.database import Database
from server.adapters.orm import ClaimRow
from server.adapters.prepared import Prepared
from server.service.transactions import sqlstate
from server.service.unit_of_work import UnitOfWork
from tests.integration.test_prepared_statements import claim_values

pytestmark = pytest.mark.postgres
claims = ClaimRow.__table__


@pytest.fixture
def database(postgres_url):  # type: ignore[no-untyped-def]
    db = Database(postgres_url, pool_size=1)  # one connection: whatever a unit leaves behind, the next one meets
    yield db
    db.dispose()


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
