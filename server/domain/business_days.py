"""Business days of the US federal government: not a Saturday, a Sunday or a federal holiday
(5 U.S.C. 6103, with the observed Friday or Monday when a holiday falls on a weekend), from the kept
`holidays` package rather than a hand-written list.

CBP opens each TPL quota period on its first business day (quota bulletins, e.g. QB 24-111: period
January 1 through December 31, 2024, "Opening Date: Tuesday, January 2, 2024"), and counts the days a
filer has to answer a prorated offer in business days (CSMS 16-000886: five business days).
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache

import holidays


@lru_cache(maxsize=64)
def _federal_holidays(year: int) -> frozenset[dt.date]:
    return frozenset(holidays.country_holidays("US", years=year).keys())


def is_business_day(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in _federal_holidays(day.year)


def first_business_day(year: int) -> dt.date:
    """The first business day of a year: 1 January is always a holiday (or its observance falls on
    the Friday before, and the year starts on a weekend), so this is 2 to 4 January."""
    day = dt.date(year, 1, 1)
    while not is_business_day(day):
        day += dt.timedelta(days=1)
    return day


def add_business_days(day: dt.date, count: int) -> dt.date:
    """The business day `count` business days after `day` (which need not be one itself)."""
    if count < 0:
        raise ValueError("count must not be negative")
    while count:
        day += dt.timedelta(days=1)
        if is_business_day(day):
            count -= 1
    return day
