"""Run a unit of work as one transaction, and run it again when the database asks for that.

PostgreSQL runs at READ COMMITTED (see README, "Isolation and locking"): charging is done by
atomic conditional updates and read-then-write decisions lock the row they read (SELECT ... FOR
UPDATE), so concurrent replicas wait for each other instead of failing. Two things can still make
a transaction fail harmlessly, and both are retried here, never reported as lost data:

- serialization failures (40001) and deadlocks (40P01): the database rolled the transaction back
  and guarantees nothing of it was kept;
- a unique-key race (23505) between two transactions inserting the same key: the loser runs again
  and now sees the winner's row (a retried message then replays, a second CREATE is refused);
- a statement prepared by this process found deallocated (26000): prepared again on the next attempt.

A third is the service's own: a conditional write that matched fewer rows than it should
(`LostRace`: another transaction changed the row since it was read); the unit runs again and reads
what is there now. A caller may name more (`between`): anything it can act on before the next
attempt, e.g. refilling an allotment or running a quota opening first. This is the one retry
policy of every unit of work: the same attempt budget and backoff for all of them.

The work function must therefore be safe to run again: it reads what it needs inside the
transaction and does nothing outside it (no sending, no counters) before `uow.commit()`.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from server.adapters.database import Database
from server.service.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

T = TypeVar("T")

SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
UNIQUE_VIOLATION = "23505"
# A statement this process prepared was deallocated under it (server/adapters/prepared.py): prepared
# again on the next attempt.
STATEMENT_DEALLOCATED = "26000"
RETRIED_SQLSTATES = frozenset({SERIALIZATION_FAILURE, DEADLOCK_DETECTED, STATEMENT_DEALLOCATED})


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a database error, whatever the driver (psycopg: .sqlstate, others: .pgcode)."""
    original = getattr(error, "orig", error)
    return getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)


def is_retryable(error: BaseException, *, unique_races: bool) -> bool:
    if not isinstance(error, DBAPIError):
        return False
    state = sqlstate(error)
    return state in RETRIED_SQLSTATES or (unique_races and state == UNIQUE_VIOLATION)


class LostRace(Exception):
    """A conditional write matched fewer rows than it should: another transaction got there first."""


def run_in_transaction(
    database: Database,
    work: Callable[[UnitOfWork], T],
    *,
    write: bool = True,
    retries: int = 8,
    unique_races: bool = True,
    between: Callable[[Exception], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`work(uow)` in a fresh unit of work, retried with jittered backoff on the failures above;
    `between(error)` says whether another exception is retried too (it may act first). After the
    last attempt the last failure is raised."""
    attempt = 0
    while True:
        try:
            with UnitOfWork(database, write=write) as uow:
                return work(uow)
        except Exception as error:
            if attempt >= retries:
                raise
            retry = isinstance(error, LostRace) or is_retryable(error, unique_races=unique_races)
            if between is not None:
                retry = between(error) or retry
            if not retry:
                raise
            attempt += 1
            log.info("transaction retried (attempt %d): %s", attempt, sqlstate(error) or type(error).__name__)
            # Jitter, so that transactions that collided do not collide again in lockstep.
            sleep(random.uniform(0, 0.002 * 2**min(attempt, 6)))
