"""Reading reference-data files (JSON) into the domain's ReferenceData."""
from __future__ import annotations

import datetime as dt
import json
import pathlib
from decimal import Decimal
from typing import Any

from server.domain.certificate import normalize_htsus
from server.domain.conversion import CATEGORY_UNITS, STATISTICAL_LINE_DIGITS, Category, ConversionTable
from server.domain.quantity import check_storable
from server.domain.reference import EntryTypes, OpeningRule, Partner, ReferenceData, TplDefinition

PACKAGED = pathlib.Path(__file__).resolve().parent.parent / "reference_data" / "usmca-mx.json"


def parse_reference_data(document: dict[str, Any]) -> ReferenceData:
    partners = {
        p["country"]: Partner(
            country=p["country"],
            name=p["name"],
            certificate_number_pattern=p["certificate_number_pattern"],
            ecert_effective_date=dt.date.fromisoformat(p["ecert_effective_date"]),
        )
        for p in document["partners"]
    }
    tpls = {}
    for t in document["tpls"]:
        first, last = t["years"]
        tpls[t["tpl_number"]] = TplDefinition(
            tpl_number=t["tpl_number"],
            label=t["label"],
            description=t["description"],
            partner=t["partner"],
            measure_unit=t["measure_unit"],
            allowed_units=tuple(t["allowed_units"]),
            htsus_chapters=tuple(t.get("htsus_chapters", ())),
            fileable=t.get("fileable", True),
            aggregate=t.get("aggregate"),
            annual_limits={year: _limit(t["annual_limit"]) for year in range(first, last + 1)},
        )
    return ReferenceData(
        version=document["version"], source=document["source"], tpls=tpls, partners=partners,
        entry_types=_entry_types(document.get("entry_types", USMCA_ENTRY_TYPES_BEFORE_2026_2)),
        opening=_opening(document.get("opening", {})),
    )


def _opening(document: dict[str, Any]) -> OpeningRule:
    """{"date": "first-business-day" | "january-1", "window_ends": "HH:MM" | null, "before_opening":
    "refused" | "at-opening", "review_business_days": 0..10}; documents without it (before
    usmca-mx-2026.4) open as the USMCA TPL bulletins say: first business day, a window to noon, earlier
    lines refused; without a review delay unless one is given."""
    date = document.get("date", "first-business-day")
    if date not in ("first-business-day", "january-1"):
        raise ValueError(f"opening.date must be first-business-day or january-1, not {date!r}")
    before = document.get("before_opening", "refused")
    if before not in ("refused", "at-opening"):
        raise ValueError(f"opening.before_opening must be refused or at-opening, not {before!r}")
    ends = document.get("window_ends", "12:00")
    review = document.get("review_business_days", 0)
    if type(review) is not int or not 0 <= review <= MAX_REVIEW_BUSINESS_DAYS:
        raise ValueError(f"opening.review_business_days must be a whole number from 0 to {MAX_REVIEW_BUSINESS_DAYS}, not {review!r}")
    return OpeningRule(
        date == "first-business-day", None if ends is None else dt.time.fromisoformat(ends), before == "refused", review,
    )


# Longer than any review a bulletin describes (three business days, QB 16-128): a larger figure is a typo.
MAX_REVIEW_BUSINESS_DAYS = 10


# TPL documents before version usmca-mx-2026.2 had no entry types; they were all USMCA Mexico tables,
# whose quota bulletins list these (QB 22-111, QB 24-111).
USMCA_ENTRY_TYPES_BEFORE_2026_2 = {"quota": ["02", "06", "07", "12", "23", "32", "38", "52"], "without_arrival": ["32", "38"]}


def _entry_types(document: dict[str, Any]) -> EntryTypes:
    quota, without_arrival = frozenset(document["quota"]), frozenset(document["without_arrival"])
    if not quota or not without_arrival <= quota:
        raise ValueError("entry_types: quota must be non-empty and include every type without arrival")
    return EntryTypes(quota, without_arrival)


def _limit(value: object) -> Decimal:
    """A level's annual limit: not negative, and storable exactly (see quantity.check_storable)."""
    limit = Decimal(str(value))
    if not limit.is_finite() or limit < 0:
        raise ValueError(f"annual limit {value!r} is not a non-negative number")
    check_storable(limit)
    return limit


def load_reference_data(path: str | pathlib.Path | None = None) -> ReferenceData:
    return parse_reference_data(json.loads(pathlib.Path(path or PACKAGED).read_text(encoding="utf-8")))


def parse_conversion_table(document: dict[str, Any]) -> ConversionTable:
    """A conversion table: textile categories (unit, SME factor or none yet) and the category of each
    10-digit HTSUS statistical line. A line must name exactly one known category; a heading-level
    mapping (the old `htsus_prefixes`) is refused, since a heading holds several categories."""
    if "htsus_prefixes" in document:
        raise ValueError("htsus_prefixes is not accepted: map each 10-digit statistical line to its category (statistical_lines)")
    categories = {code: _category(code, c) for code, c in document["categories"].items()}
    lines: dict[str, str] = {}
    for entry in document["statistical_lines"]:
        number, code = entry
        line = normalize_htsus(str(number))
        if len(line) != STATISTICAL_LINE_DIGITS or not line.isdigit():
            raise ValueError(f"statistical line {number!r} is not a 10-digit HTSUS number")
        if code not in categories:
            raise ValueError(f"statistical line {number} names unknown category {code!r}")
        if line in lines:
            raise ValueError(f"statistical line {number} is listed twice (categories {lines[line]} and {code})")
        lines[line] = code
    return ConversionTable(version=document["version"], source=document["source"], categories=categories, lines=lines)


def _category(code: str, c: dict[str, Any]) -> Category:
    if not (len(code) == 3 and code.isdigit()):
        raise ValueError(f"category {code!r} is not a 3-digit textile category number")
    if c["unit"] not in CATEGORY_UNITS:
        raise ValueError(f"category {code} unit {c['unit']!r} is not one of {', '.join(sorted(CATEGORY_UNITS))}")
    factor = None if c["factor"] is None else Decimal(str(c["factor"]))
    if factor is not None and (not factor.is_finite() or factor <= 0):
        raise ValueError(f"category {code} has a factor that is not positive")
    return Category(code=code, description=c["description"], unit=c["unit"], factor=factor)


PACKAGED_CONVERSION = PACKAGED.parent / "sme-conversion.json"
