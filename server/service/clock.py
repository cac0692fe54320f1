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


class OffsetClock:
    """The system clock moved by a fixed offset: a test harness runs real service processes at another
    instant (an opening day, a lapsing window) and can make one replica's clock lag another's.
    Production leaves the offset at zero (ECERT_CLOCK_OFFSET_SECONDS)."""

    def __init__(self, offset: dt.timedelta):
        self.offset = offset

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.offset


def clock_with_offset(seconds: float) -> "SystemClock | OffsetClock":
    return OffsetClock(dt.timedelta(seconds=seconds)) if seconds else SystemClock()


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
