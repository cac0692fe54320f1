"""Entry summary lines claiming a TPL: entry numbers, required elements, presentation time."""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, fields
from decimal import Decimal

from contract.canonical import canonical_json

# The entry number's format and check digit are the wire contract's; the claim rules are here. Named again
# for the use cases, which read them with the rest of an entry's rules.
from contract.entry_number import ENTRY_NUMBER_PATTERN
from contract.entry_number import canonical_entry_number as canonical_entry_number
from server.domain.certificate import HTSUS_PATTERN, normalize_htsus, parse_iso_date
from server.domain.errors import Finding
from server.domain.quantity import QuantityTooLarge, QuantityTooPrecise, parse_quantity
from server.domain.reference import EntryTypes

# CBP's listed filer-code patterns (ACE CATAIR Appendix E): every mix of letters and digits except
# an all-digit code of 000.
FILER_CODE_PATTERN = re.compile(r"[0-9A-Z]{3}")
TPL_SPI = "S+"
ENTRY_TYPE_PATTERN = re.compile(r"[0-9]{2}")


# Dates of importation this service decides: from the first NAFTA TPL year to a year whose period,
# post-importation window and the day after it are all representable.
FIRST_DATE = dt.date(1994, 1, 1)
LAST_DATE = dt.date(9997, 12, 31)
# How far in the future an instant of a claim may lie: it is meant to absorb differences between the
# clocks of customs' own systems, not to let a claim reserve a place in the queue ahead of time.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class EntryLineDraft:
    """An entry summary line exactly as received; instants already decoded (None when absent)."""

    entry_number: str = ""
    line_number: int = 0
    filer_code: str = ""
    importer_of_record: str = ""
    entry_type: str = ""
    country_of_origin: str = ""
    htsus_number: str = ""
    tpl_number: str = ""
    spi: str = ""
    certificate_number: str = ""
    quantity: str = ""
    unit: str = ""
    date_of_importation: str = ""
    filed_at: dt.datetime | None = None
    arrived_at: dt.datetime | None = None
    paid_at: dt.datetime | None = None


@dataclass(frozen=True)
class EntryLine:
    entry_number: str  # canonical XXX-NNNNNNN-C
    line_number: int
    filer_code: str
    importer_of_record: str
    entry_type: str
    country_of_origin: str
    htsus_number: str  # digits only
    tpl_number: str
    spi: str
    certificate_number: str
    quantity: Decimal
    unit: str
    date_of_importation: dt.date
    filed_at: dt.datetime
    arrived_at: dt.datetime | None
    paid_at: dt.datetime
    arrival_counts: bool = True  # False for a withdrawal from warehouse: it has no arrival time

    def presentation_time(self) -> dt.datetime:
        """Priority (19 CFR 132.11; QB 16-128): the latest of filing, arrival (not for warehouse
        withdrawals) and the payment of estimated duties."""
        times = [self.filed_at, self.paid_at]
        if self.arrival_counts and self.arrived_at is not None:
            times.append(self.arrived_at)
        return max(times)


def validate_entry_line(draft: EntryLineDraft, entry_types: EntryTypes) -> tuple[EntryLine | None, list[Finding]]:
    findings: list[Finding] = []

    def error(code: str, name: str, description: str) -> None:
        findings.append(Finding(code, f"line.{name}", description))

    texts = {
        "entry_number": draft.entry_number,
        "filer_code": draft.filer_code,
        "importer_of_record": draft.importer_of_record,
        "entry_type": draft.entry_type,
        "country_of_origin": draft.country_of_origin,
        "htsus_number": draft.htsus_number,
        "tpl_number": draft.tpl_number,
        "spi": draft.spi,
        "certificate_number": draft.certificate_number,
        "quantity": draft.quantity,
        "unit": draft.unit,
        "date_of_importation": draft.date_of_importation,
    }
    for name, value in texts.items():
        if not value:
            error("FIELD_REQUIRED", name, "is required")
        elif len(value) > 64:
            error("FIELD_TOO_LONG", name, "is longer than 64 characters")

    entry_number = canonical_entry_number(draft.entry_number) if draft.entry_number else None
    if draft.entry_number and len(draft.entry_number) <= 64 and entry_number is None:
        if ENTRY_NUMBER_PATTERN.fullmatch(draft.entry_number):
            error("ENTRY_NUMBER_CHECK_DIGIT", "entry_number", "the check digit does not match (ACE CATAIR Appendix E)")
        else:
            error("ENTRY_NUMBER_MALFORMED", "entry_number", "must be XXX-NNNNNNN-C")
    if draft.filer_code and not FILER_CODE_PATTERN.fullmatch(draft.filer_code):
        error("FILER_CODE_MALFORMED", "filer_code", "must be 3 letters or digits")
    elif entry_number and draft.filer_code and entry_number[:3] != draft.filer_code:
        error("FILER_CODE_MISMATCH", "filer_code", "is not the entry number's filer code")
    if not 1 <= draft.line_number <= 9999:
        error("LINE_NUMBER_OUT_OF_RANGE", "line_number", "must be from 1 to 9999")
    if draft.entry_type and len(draft.entry_type) <= 64 and not ENTRY_TYPE_PATTERN.fullmatch(draft.entry_type):
        error("ENTRY_TYPE_MALFORMED", "entry_type", "must be a two-digit entry type code")
    elif draft.entry_type and draft.entry_type not in entry_types.quota:
        error("ENTRY_TYPE_NOT_QUOTA", "entry_type",
              f"a TPL claim rides on a quota entry type: {', '.join(sorted(entry_types.quota))}")
    if draft.spi and draft.spi != TPL_SPI:
        error("SPI_NOT_TPL", "spi", f"a USMCA TPL claim carries special program indicator {TPL_SPI}")
    if draft.htsus_number and not HTSUS_PATTERN.fullmatch(draft.htsus_number):
        error("HTSUS_NUMBER_MALFORMED", "htsus_number", "must be 6 to 10 digits (dots allowed between groups)")
    if draft.country_of_origin and not re.fullmatch(r"[A-Z]{2}", draft.country_of_origin):
        error("COUNTRY_MALFORMED", "country_of_origin", "must be an ISO 3166-1 alpha-2 code")

    quantity: Decimal | None = None
    if draft.quantity and len(draft.quantity) <= 64:
        try:
            quantity = parse_quantity(draft.quantity)
        except QuantityTooLarge as exc:
            error("QUANTITY_TOO_LARGE", "quantity", str(exc))
        except QuantityTooPrecise as exc:
            error("QUANTITY_TOO_PRECISE", "quantity", f"{exc}: quantities are stored with six")
        except ValueError as exc:
            error("QUANTITY_MALFORMED", "quantity", f"must be a plain decimal number: {exc}")
        else:
            if quantity <= 0:
                error("QUANTITY_NOT_POSITIVE", "quantity", "must be greater than zero")

    imported: dt.date | None = None
    if draft.date_of_importation and len(draft.date_of_importation) <= 64:
        try:
            imported = parse_iso_date(draft.date_of_importation)
        except ValueError:
            error("DATE_MALFORMED", "date_of_importation", "must be a calendar date YYYY-MM-DD")
        else:
            if not FIRST_DATE <= imported <= LAST_DATE:
                error("DATE_OUT_OF_RANGE", "date_of_importation", f"must be from {FIRST_DATE} to {LAST_DATE}")
    if draft.filed_at is None:
        error("FIELD_REQUIRED", "filed_at", "the filing time is required")
    if draft.arrived_at is None and draft.entry_type and draft.entry_type not in entry_types.without_arrival:
        error("FIELD_REQUIRED", "arrived_at", "the arrival time is required except for warehouse withdrawals")
    if draft.paid_at is None:
        # Without estimated duties paid (or a statement date) an entry summary is not presented for
        # quota at all (19 CFR 132.11): it has no place in the order.
        error("FIELD_REQUIRED", "paid_at", "the payment of estimated duties (or the statement date) is required for quota")

    if findings:
        return None, findings
    assert entry_number and quantity is not None and imported and draft.filed_at and draft.paid_at
    return (
        EntryLine(
            entry_number=entry_number,
            line_number=draft.line_number,
            filer_code=draft.filer_code,
            importer_of_record=draft.importer_of_record,
            entry_type=draft.entry_type,
            country_of_origin=draft.country_of_origin,
            htsus_number=normalize_htsus(draft.htsus_number),
            tpl_number=draft.tpl_number,
            spi=draft.spi,
            certificate_number=draft.certificate_number,
            quantity=quantity,
            unit=draft.unit,
            date_of_importation=imported,
            filed_at=draft.filed_at,
            arrived_at=draft.arrived_at,
            paid_at=draft.paid_at,
            arrival_counts=draft.entry_type not in entry_types.without_arrival,
        ),
        [],
    )


def future_findings(line: EntryLine, now: dt.datetime, today: dt.date, *, post_importation: bool = False) -> list[Finding]:
    """A claim's instants may not lie after now (plus FUTURE_TOLERANCE): a claim is ranked by when it
    was presented, which cannot be later than when it reaches customs. A post-importation claim is for
    goods already entered: its date of importation may not be after customs' date `today`. (A claim's
    date of importation may otherwise lie ahead, e.g. a claim queued in December for the January
    opening: whether a period has opened is never read from the request.)"""
    findings = []
    latest = now + FUTURE_TOLERANCE
    for name in ("filed_at", "arrived_at", "paid_at"):
        at = getattr(line, name)
        if at is not None and at > latest:
            findings.append(Finding("INSTANT_IN_FUTURE", f"line.{name}", f"is later than customs' clock ({now.isoformat()}) allows"))
    if post_importation and line.date_of_importation > today:
        findings.append(Finding("DATE_IN_FUTURE", "line.date_of_importation", f"a post-importation claim's goods were entered by {today.isoformat()}"))
    return findings


def line_digest(draft: EntryLineDraft) -> str:
    """Identifies a request's content: the same line sent again has the same digest."""
    # Every field is a scalar: read them directly (asdict deep-copies, a tenth of a claim's CPU).
    values = {name: getattr(draft, name) for name in _DRAFT_FIELDS}
    content = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in values.items()}
    return hashlib.sha256(canonical_json(content)).hexdigest()


_DRAFT_FIELDS = tuple(f.name for f in fields(EntryLineDraft))
