"""Converting a quantity in the goods' unit to the level's measure (SME or kg).

CBP charges a TPL in square meter equivalents by the textile category of the goods, and the
category is printed beside each 10-digit HTSUS statistical line (the number in parentheses), not
per heading: heading 6110 holds knit shirts (categories 338/339) and sweaters (345), so a heading
cannot choose the factor. The table here is that correspondence (10-digit line -> category) plus
each category's unit and SME factor. Both are reference data with a version and a source (a wrong
factor once closed a real TPL early), so every conversion names the table version and the category
it used, and a line the table does not know is refused, never guessed from its heading.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import NoReturn

from server.domain.errors import DomainError, ErrorKind

# A square metre of fabric is one square metre equivalent by definition; a level kept in kilograms
# takes kilograms as they are. Neither needs a category.
IDENTITY_UNITS = {("M2", "SME"), ("KG", "KG")}

# The goods' units a category may be counted in (the HTSUS unit of its statistical lines):
# dozens, dozen pairs (hosiery, gloves), kilograms, number, square metres.
CATEGORY_UNITS = frozenset({"DOZ", "DPR", "KG", "NO", "M2"})

STATISTICAL_LINE_DIGITS = 10

# Why a conversion was refused (ErrorInfo metadata "cause"; the reason stays CONVERSION_FACTOR_MISSING).
NOT_A_STATISTICAL_LINE = "NOT_A_STATISTICAL_LINE"
NO_CATEGORY_FOR_LINE = "NO_CATEGORY_FOR_LINE"
NO_FACTOR_FOR_CATEGORY = "NO_FACTOR_FOR_CATEGORY"
UNIT_NOT_THE_CATEGORY_UNIT = "UNIT_NOT_THE_CATEGORY_UNIT"
MEASURE_NOT_SME = "MEASURE_NOT_SME"


@dataclass(frozen=True)
class Category:
    code: str  # the 3-digit textile category number ("338")
    description: str
    unit: str  # the goods' unit the factor converts from (one of CATEGORY_UNITS)
    factor: Decimal | None  # SME per unit; None while no factor is on file for the category


@dataclass(frozen=True)
class ConversionTable:
    version: str
    source: str
    categories: Mapping[str, Category]
    lines: Mapping[str, str]  # 10-digit HTSUS statistical line (digits only) -> category code

    def category_for(self, htsus: str) -> Category | None:
        """The category beside this exact 10-digit statistical line; None for any other number."""
        if len(htsus) != STATISTICAL_LINE_DIGITS:
            return None
        code = self.lines.get(htsus)
        return self.categories.get(code) if code is not None else None


@dataclass(frozen=True)
class Conversion:
    measure: Decimal
    factor: Decimal
    category: str  # "" for an identity conversion
    version: str


def convert(table: ConversionTable, quantity: Decimal, unit: str, htsus: str, measure_unit: str) -> Conversion:
    """The measure of `quantity` goods of the 10-digit line `htsus`, by the factor of its category."""
    if (unit, measure_unit) in IDENTITY_UNITS:
        return Conversion(quantity, Decimal(1), "", table.version)
    category = table.category_for(htsus)
    if measure_unit != "SME":
        _refuse(table, htsus, unit, MEASURE_NOT_SME, f"a level kept in {measure_unit} takes only {measure_unit}")
    if len(htsus) != STATISTICAL_LINE_DIGITS or not htsus.isdigit():
        _refuse(table, htsus, unit, NOT_A_STATISTICAL_LINE,
                "the category is chosen by the full 10-digit statistical line, not by a heading or subheading")
    if category is None:
        _refuse(table, htsus, unit, NO_CATEGORY_FOR_LINE, "the table has no textile category for this statistical line")
    if category.unit != unit:
        _refuse(table, htsus, unit, UNIT_NOT_THE_CATEGORY_UNIT,
                f"category {category.code} is counted in {category.unit}", category.code)
    if category.factor is None:
        _refuse(table, htsus, unit, NO_FACTOR_FOR_CATEGORY, f"no SME factor is on file for category {category.code}",
                category.code)
    return Conversion(quantity * category.factor, category.factor, category.code, table.version)


def _refuse(table: ConversionTable, htsus: str, unit: str, cause: str, detail: str, category: str = "") -> NoReturn:
    metadata = {"factor_version": table.version, "htsus_number": htsus, "unit": unit, "cause": cause}
    if category:
        metadata["category"] = category
    raise DomainError(
        "CONVERSION_FACTOR_MISSING",
        f"no SME conversion for HTSUS {htsus} in {unit} in factor table {table.version}: {detail}",
        ErrorKind.PRECONDITION,
        metadata=metadata,
    )


def units_for_measure(measure: Decimal, factor: Decimal) -> Decimal:
    """The goods' quantity a measure corresponds to, rounded down to six places (never more)."""
    return (measure / factor).quantize(Decimal("0.000001"), rounding="ROUND_DOWN")
