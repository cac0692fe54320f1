"""The caller's deadline, carried to the unit of work without threading it through every call.

The API layer sets it from the gRPC context for the duration of a call (server/api/limits.py).
A unit of work refuses to commit once it has passed, and on PostgreSQL bounds each statement by the
time left, so a call whose caller has given up leaves nothing behind: its transaction is rolled
back, never half-written (it is atomic anyway) and never committed after the caller stopped waiting.
"""
from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

from server.domain.errors import DomainError, ErrorKind

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("ecert_deadline", default=None)
# gRPC reports "no deadline" as an enormous time remaining; anything beyond a day counts as none.
NO_DEADLINE_BEYOND = 86_400.0


@contextmanager
def deadline_in(seconds: float | None) -> Iterator[None]:
    """Within this block, work must finish within `seconds` (None: no deadline)."""
    bounded = seconds is not None and seconds < NO_DEADLINE_BEYOND
    token = _deadline.set(time.monotonic() + seconds if bounded else None)  # type: ignore[operator]  # bounded implies seconds is not None
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


def exceeded_error() -> DomainError:
    return DomainError("DEADLINE_EXCEEDED", "the call's deadline passed; nothing was stored", ErrorKind.DEADLINE)


def check() -> None:
    left = remaining()
    if left is not None and left <= 0:
        raise exceeded_error()
