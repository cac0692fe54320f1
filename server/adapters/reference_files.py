"""Reading reference-data files (JSON) into the domain's ReferenceData."""
from __future__ import annotations

import datetime as dt
import json
import pathlib
from decimal import Decimal
from typing import Any

from server.domain.conversion import Category, ConversionTable
from server.domain.quantity import check_storable
from server.domain.reference import EntryTypes, Partner, ReferenceData, TplDefinition

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
    )


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
    categories = {
        code: Category(code=code, description=c["description"], unit=c["unit"], factor=Decimal(c["factor"]))
        for code, c in document["categories"].items()
    }
    prefixes = dict(document["htsus_prefixes"])
    unknown = sorted(set(prefixes.values()) - set(categories))
    if unknown:
        raise ValueError(f"HTSUS prefixes name unknown categories: {', '.join(unknown)}")
    for code, category in categories.items():
        if category.factor <= 0:
            raise ValueError(f"category {code} has a factor that is not positive")
    return ConversionTable(version=document["version"], source=document["source"], categories=categories, htsus_prefixes=prefixes)


PACKAGED_CONVERSION = PACKAGED.parent / "sme-factors-illustrative.json"
