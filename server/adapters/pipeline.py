"""Several statements sent to PostgreSQL in one libpq pipeline: one round trip for all of them.

In the service a round trip costs about 0.05-0.1 ms of the calling thread's CPU whatever the statement
(the libpq call, the socket, the thread's wake-up). Statements already prepared on the connection
(server/adapters/prepared.py, `Prepared.on_libpq`) are sent one after the other, then a Sync, and
their results read back in order. PostgreSQL runs them in order, in the open transaction, exactly as
if each had been sent alone; after the first that fails the rest are not run (PIPELINE_ABORTED) and
the transaction is left failed, as a failed statement sent alone leaves it.

Used for a unit of work's held writes with its COMMIT (server/adapters/deferred_writes.py) and for a
claim's independent reads (server/adapters/prepared.py, `read_together`).
"""
from __future__ import annotations

import select
from collections.abc import Sequence
from typing import Any


def _wait(fd: int, event: int) -> None:
    poller = select.poll()
    poller.register(fd, event)
    poller.poll()


def run(pgconn: Any, pq: Any, queries: Sequence[tuple[bytes, Any]], *, commit: bool = False) -> list[Any]:
    """Send each (prepared statement's name, its dumped parameters) and, if `commit`, a COMMIT, in one
    pipeline; each query's result (the COMMIT's last), in order: TUPLES_OK or COMMAND_OK, FATAL_ERROR
    for the first that failed, PIPELINE_ABORTED for those after it. Raises the driver's error if the
    connection itself failed; the connection leaves pipeline mode whatever happens."""
    status = pq.ExecStatus
    results: list[Any] = [None] * (len(queries) + (1 if commit else 0))
    pgconn.enter_pipeline_mode()
    try:
        for name, parameters in queries:
            pgconn.send_query_prepared(name, parameters)
        if commit:
            pgconn.send_query_params(b"COMMIT", None)
        pgconn.pipeline_sync()
        while pgconn.flush() == 1:
            _wait(pgconn.socket, select.POLLOUT)
        finished = 0  # queries whose results are all read: each one's end is a None
        while True:
            while pgconn.is_busy():
                _wait(pgconn.socket, select.POLLIN)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                finished += 1
            elif result.status == status.PIPELINE_SYNC:
                break
            elif finished < len(results) and results[finished] is None:
                results[finished] = result
    finally:
        if pgconn.pipeline_status != 0:
            try:
                pgconn.exit_pipeline_mode()
            except Exception:  # noqa: BLE001 - a broken connection: the error being raised is the one to report
                pass
    return results


def first_failure(results: Sequence[Any], pq: Any) -> tuple[int, Any] | None:
    """(index, result) of the query that failed, if one did."""
    for index, result in enumerate(results):
        if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
            return index, result
    return None
