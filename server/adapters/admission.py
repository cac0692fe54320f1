"""A bound on concurrent database transactions, with a short wait and a clear refusal beyond it.

Without it, a burst of calls queues on the connection pool for its full timeout, every caller waits
seconds, and the queue grows faster than it drains. With it, a call that cannot start a transaction
within `wait` seconds is told RESOURCE_EXHAUSTED (DATABASE_BUSY) at once and backs off.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from server.domain.errors import DomainError, ErrorKind


class Admission:
    def __init__(self, limit: int, wait: float):
        if limit < 1:
            raise ValueError("at least one transaction must be admitted")
        self.limit = limit
        self.wait = wait
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait):
            raise DomainError(
                "DATABASE_BUSY",
                "too many transactions in flight; retry with backoff",
                ErrorKind.EXHAUSTED,
                metadata={"max_transactions": str(self.limit)},
            )
        try:
            yield
        finally:
            self._slots.release()
