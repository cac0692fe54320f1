"""Time and identifiers come from here so that tests can fix them."""
from __future__ import annotations

import datetime as dt
import threading
import time
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


class ClockBackwards(ValueError):
    """A simulated clock asked to run backwards."""


class SimulatedClock:
    """A clock a test harness drives (`ecert serve --simulated-clock START`): it starts at `start`, runs
    on in real time, and can be set or advanced, never moved back (what it stamped would go out of
    order). One per process: a harness sets each replica it runs."""

    simulated = True

    def __init__(self, start: dt.datetime):
        if start.tzinfo is None:
            raise ValueError("a simulated clock starts at an instant with a time zone")
        self._lock = threading.Lock()
        self._base = start.astimezone(dt.timezone.utc)
        self._since = time.monotonic()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._base + dt.timedelta(seconds=time.monotonic() - self._since)

    def set(self, at: dt.datetime) -> dt.datetime:
        with self._lock:
            current = self._base + dt.timedelta(seconds=time.monotonic() - self._since)
            if at < current:
                raise ClockBackwards(f"the clock is at {current.isoformat()}; it never runs backwards")
            self._base, self._since = at.astimezone(dt.timezone.utc), time.monotonic()
            return self._base

    def advance(self, by: dt.timedelta) -> dt.datetime:
        if by < dt.timedelta(0):
            raise ClockBackwards("a clock advances by a duration of zero or more")
        with self._lock:
            self._base += by
            return self._base + dt.timedelta(seconds=time.monotonic() - self._since)


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
