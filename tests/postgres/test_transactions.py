"""run_in_transaction against a real PostgreSQL: a real deadlock is retried to success; a failure
that never clears is given up on after the retry budget, not looped on forever."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from server.adapters.database import Database
from server.service.transactions import run_in_transaction
from server.service.unit_of_work import UnitOfWork

pytestmark = pytest.mark.postgres


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    with database.write_engine.begin() as connection:
        connection.execute(text("CREATE TABLE scratch (id int PRIMARY KEY, v int NOT NULL)"))
        connection.execute(text("INSERT INTO scratch VALUES (1, 0), (2, 0)"))
    yield database
    database.dispose()


def test_a_deadlock_is_retried_and_both_transactions_land(database: Database):
    attempts: Counter[int] = Counter()
    both_hold_one = threading.Barrier(2)
    errors: list[BaseException] = []

    def cross(first: int, second: int) -> None:
        def work(uow: UnitOfWork) -> None:
            uow.session.execute(text("UPDATE scratch SET v = v + 1 WHERE id = :i"), {"i": first})
            attempts[first] += 1
            if attempts[first] == 1:
                both_hold_one.wait(10)  # each holds one row and now asks for the other's: a deadlock
            uow.session.execute(text("UPDATE scratch SET v = v + 1 WHERE id = :i"), {"i": second})
            uow.commit()

        try:
            run_in_transaction(database, work)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=cross, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert sum(attempts.values()) == 3  # one of the two ran twice: the deadlock happened and was retried
    with database.read_engine.connect() as connection:
        assert dict(connection.execute(text("SELECT id, v FROM scratch")).all()) == {1: 2, 2: 2}


def test_retries_are_bounded(database: Database):
    runs = 0

    def always_conflicts(uow: UnitOfWork) -> None:
        nonlocal runs
        runs += 1
        uow.session.execute(text("INSERT INTO scratch VALUES (1, 0)"))  # the key exists: 23505 every time

    with pytest.raises(IntegrityError):
        run_in_transaction(database, always_conflicts, retries=3, sleep=lambda _: None)
    assert runs == 4
