"""Group commit on SQLite: shared COMMITs keep each unit's outcome its own, in order, and durable."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import text

from server.adapters.database import Database
from server.service.audit import verify_audit_log
from server.service.clock import FixedClock
from server.service.log import LogUseCases
from server.service.unit_of_work import UnitOfWork

AT = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)


@pytest.fixture
def database(tmp_path):  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'group.db'}")
    db.upgrade()
    assert db.group_commit is not None
    yield db
    db.dispose()


def subjects(database: Database) -> list[str]:
    with database.read_engine.connect() as connection:
        return [row[0] for row in connection.execute(text("SELECT subject FROM log_entries ORDER BY id"))]


def log_verifies(database: Database) -> bool:
    """The sequencer integrates what was committed, in commit order, without a gap; the log verifies."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    log = LogUseCases(database, key=Ed25519PrivateKey.generate(), origin="test.example/log", clock=FixedClock(AT))
    log.integrate()
    with database.read_engine.connect() as connection:
        indices = [row[0] for row in connection.execute(text("SELECT log_index FROM log_entries ORDER BY id"))]
    return indices == list(range(len(indices))) and verify_audit_log(database, log.verifier).intact


def test_concurrent_units_keep_their_own_outcomes_and_order(database):
    def unit(n: int) -> None:
        try:
            with UnitOfWork(database, write=True) as uow:
                uow.audit.append(AT, "DECISION", f"unit-{n}", {"n": n})
                if n % 5 == 0:
                    raise RuntimeError("this unit fails after writing")  # its savepoint alone is undone
                uow.commit()
        except RuntimeError:
            pass

    threads = [threading.Thread(target=unit, args=(n,)) for n in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = subjects(database)
    assert set(stored) == {f"unit-{n}" for n in range(60) if n % 5} and len(stored) == 48
    assert log_verifies(database)  # the log is in commit order, no gaps


def batch_of_two(database: Database, second_unit) -> dict[str, BaseException | None]:  # type: ignore[no-untyped-def]
    """A first unit that appends and commits only once a second unit waits for the writer (so that
    the two share one batch), then `second_unit(uow)` inside the second; what each raised, if anything."""
    first_inside = threading.Event()
    release_first = threading.Event()
    outcomes: dict[str, BaseException | None] = {}

    def first() -> None:
        try:
            with UnitOfWork(database, write=True) as uow:
                uow.audit.append(AT, "DECISION", "first", {})
                first_inside.set()
                release_first.wait(10)
                uow.commit()
            outcomes["first"] = None
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            outcomes["first"] = error

    def second() -> None:
        try:
            with UnitOfWork(database, write=True) as uow:
                second_unit(uow)
            outcomes["second"] = None
        except BaseException as error:  # noqa: BLE001
            outcomes["second"] = error

    one = threading.Thread(target=first)
    one.start()
    assert first_inside.wait(10)
    two = threading.Thread(target=second)
    two.start()
    for _ in range(100):  # the second unit queues for the writer, so the first will not commit alone
        if database.group_commit._writer.waiting == 1:  # noqa: SLF001
            break
        time.sleep(0.02)
    release_first.set()
    one.join(10)
    two.join(10)
    return outcomes


def assert_the_writer_recovers(database: Database) -> None:
    with UnitOfWork(database, write=True) as uow:
        uow.audit.append(AT, "DECISION", "after", {})
        uow.commit()
    assert subjects(database) == ["after"]
    assert log_verifies(database)


def test_a_failed_group_commit_fails_every_unit_in_it(database):
    """The second unit breaks a deferred foreign key: COMMIT (not its savepoint) fails, and so does the
    first unit, which had released its savepoint but is not durable: neither is answered as stored."""

    def breaks_a_deferred_foreign_key(uow: UnitOfWork) -> None:
        uow.session.execute(text("PRAGMA defer_foreign_keys = ON"))
        uow.session.execute(text(
            "INSERT INTO certificate_versions VALUES ('MX', 'N', 1, 'ACTIVE', 't', 'h', 'g', 1, 'DOZ', 'i',"
            " 'e', 'a', 't', 'p', 'a', 't', 2026, '2026-01-01', '2026-12-31', 'inv', 999)"))
        uow.commit()

    outcomes = batch_of_two(database, breaks_a_deferred_foreign_key)
    assert outcomes["first"] is not None and outcomes["second"] is not None
    assert "FOREIGN KEY" in str(outcomes["first"]).upper()
    assert subjects(database) == []
    assert_the_writer_recovers(database)


def test_a_unit_whose_savepoint_cannot_be_undone_fails_its_whole_batch(database):
    """The second unit destroys its own savepoint, then fails: undoing it is impossible, the shared
    transaction is in doubt, so it is abandoned: the first unit (released, waiting for the batch's
    COMMIT) hears an error too and nothing of either is stored."""

    def loses_its_savepoint(uow: UnitOfWork) -> None:
        uow.audit.append(AT, "DECISION", "second", {})
        uow.connection.exec_driver_sql("RELEASE SAVEPOINT unit")
        raise RuntimeError("fails after its savepoint is gone")

    outcomes = batch_of_two(database, loses_its_savepoint)
    assert "abandoned" in str(outcomes["first"])
    assert isinstance(outcomes["second"], Exception)
    assert subjects(database) == []
    assert_the_writer_recovers(database)
