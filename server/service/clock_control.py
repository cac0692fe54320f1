"""Driving a simulated clock (ClockService): read it, set it, advance it; never backwards."""
from __future__ import annotations

import datetime as dt

from server.domain.errors import DomainError, ErrorKind, Finding
from server.service.clock import ClockBackwards, SimulatedClock

# Far enough for any test of quota years and one-year windows; a typo of a century is refused.
MAX_ADVANCE = dt.timedelta(days=3 * 366)


class ClockControl:
    def __init__(self, clock: SimulatedClock):
        self.clock = clock

    def now(self) -> dt.datetime:
        return self.clock.now()

    def set(self, at: dt.datetime | None) -> dt.datetime:
        if at is None:
            raise _invalid("FIELD_REQUIRED", "now", "is required")
        if at - self.clock.now() > MAX_ADVANCE:
            raise _invalid("CLOCK_JUMP_TOO_LARGE", "now", f"is more than {MAX_ADVANCE.days} days ahead of the clock")
        try:
            return self.clock.set(at)
        except ClockBackwards as exc:
            raise _backwards(str(exc)) from None

    def advance(self, by: dt.timedelta | None) -> dt.datetime:
        if by is None:
            raise _invalid("FIELD_REQUIRED", "by", "is required")
        if by < dt.timedelta(0):
            raise _invalid("DURATION_NEGATIVE", "by", "must be zero or more: the clock never runs backwards")
        if by > MAX_ADVANCE:
            raise _invalid("CLOCK_JUMP_TOO_LARGE", "by", f"is more than {MAX_ADVANCE.days} days")
        return self.clock.advance(by)


def _invalid(code: str, field: str, description: str) -> DomainError:
    return DomainError(code, f"{field} {description}", ErrorKind.INVALID, [Finding(code, field, description)])


def _backwards(message: str) -> DomainError:
    return DomainError("CLOCK_BACKWARDS", message, ErrorKind.PRECONDITION)
