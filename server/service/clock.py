"""Time and identifiers come from here so that tests can fix them."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)


class FixedClock:
    """A settable clock for tests."""

    def __init__(self, at: dt.datetime):
        self.at = at

    def now(self) -> dt.datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += dt.timedelta(**delta)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"
