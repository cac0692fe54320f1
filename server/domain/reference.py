"""Reference data the rules depend on: TPLs and partners. Loaded from data files, never hard-coded."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class TplDefinition:
    """One tariff preference level, identified by its Chapter 98 number."""

    tpl_number: str  # "9823.53.01"
    label: str  # "TPL 1"
    description: str
    partner: str  # the exporting country whose goods it covers ("MX")
    measure_unit: str  # unit the level is counted in: "SME" or "KG"
    allowed_units: tuple[str, ...]  # units a certificate for this TPL may be issued in
    htsus_chapters: tuple[str, ...] = ()  # 2- or 4-digit prefixes of goods usually under it
    fileable: bool = True  # False for an aggregate ceiling claimed only through its members
    aggregate: str | None = None  # Chapter 98 number of the aggregate ceiling also charged
    annual_limits: dict[int, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class Partner:
    """A partner government transmitting certificates, with its own configuration."""

    country: str  # ISO 3166-1 alpha-2
    name: str
    certificate_number_pattern: str  # a full-match regular expression
    ecert_effective_date: dt.date  # entries before it need no eCERT transmission

    def certificate_number_ok(self, number: str) -> bool:
        # re.ASCII: a configured \d or \w means ASCII digits and letters only.
        return re.fullmatch(self.certificate_number_pattern, number, re.ASCII) is not None


@dataclass(frozen=True)
class EntryTypes:
    """The entry types a program's quota claims may ride on, and those of them that have no arrival
    time (withdrawals from warehouse): reference data of the program, not code."""

    quota: frozenset[str]
    without_arrival: frozenset[str]


@dataclass(frozen=True)
class OpeningRule:
    """How a program's periods open: on their first business day (else on 1 January), with an
    opening window to `window_ends` that day in customs' time zone (None: no window). USMCA TPLs:
    first business day, window to 12:00 noon Eastern (CBP quota bulletins, e.g. QB 24-111)."""

    first_business_day: bool = True
    window_ends: dt.time | None = dt.time(12)
    # Lines presented before the opening date: refused with no quota status (USMCA TPLs), or counted as
    # presented at the opening moment and decided with the opening batch.
    refuse_before_opening: bool = True
    # Business days of headquarters' review after the window closes before the opening batch is final
    # (QB 16-128: headquarters has three business days to review the opening batch). 0: allocated as the
    # window closes. Meanwhile the batch is not decided, and lines presented after the window wait,
    # PENDING, for the first cutoff batch after it.
    review_business_days: int = 0


@dataclass(frozen=True)
class ReferenceData:
    version: str
    source: str
    tpls: dict[str, TplDefinition]
    partners: dict[str, Partner]
    entry_types: EntryTypes
    opening: OpeningRule = OpeningRule()

    def tpl(self, tpl_number: str) -> TplDefinition | None:
        return self.tpls.get(tpl_number)

    def partner(self, country: str) -> Partner | None:
        return self.partners.get(country)
