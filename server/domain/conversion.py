"""Converting a quantity in the goods' unit to the level's measure (SME or kg).

The factors are reference data with a version and a source (a wrong factor once closed a real TPL
early), so every conversion names the table version and the category it used.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from server.domain.errors import DomainError, ErrorKind

# A square metre of fabric is one square metre equivalent by definition.
IDENTITY_UNITS = {("M2", "SME"), ("KG", "KG")}


@dataclass(frozen=True)
class Category:
    code: str
    description: str
    unit: str  # the goods' unit the factor converts from
    factor: Decimal  # measure units per unit


@dataclass(frozen=True)
class ConversionTable:
    version: str
    source: str
    categories: dict[str, Category]
    htsus_prefixes: dict[str, str]  # HTSUS prefix (2-10 digits) -> category code

    def category_for(self, htsus: str) -> Category | None:
        """The category of the longest HTSUS prefix that matches."""
        for length in range(len(htsus), 1, -1):
            code = self.htsus_prefixes.get(htsus[:length])
            if code is not None:
                return self.categories.get(code)
        return None


@dataclass(frozen=True)
class Conversion:
    measure: Decimal
    factor: Decimal
    category: str  # "" for an identity conversion
    version: str


def convert(table: ConversionTable, quantity: Decimal, unit: str, htsus: str, measure_unit: str) -> Conversion:
    if (unit, measure_unit) in IDENTITY_UNITS:
        return Conversion(quantity, Decimal(1), "", table.version)
    category = table.category_for(htsus)
    if category is None or category.unit != unit or measure_unit != "SME":
        raise DomainError(
            "CONVERSION_FACTOR_MISSING",
            f"no {measure_unit} conversion for HTSUS {htsus} in {unit} in factor table {table.version}",
            ErrorKind.PRECONDITION,
            metadata={"factor_version": table.version, "htsus_number": htsus, "unit": unit},
        )
    return Conversion(quantity * category.factor, category.factor, category.code, table.version)


def units_for_measure(measure: Decimal, factor: Decimal) -> Decimal:
    """The goods' quantity a measure corresponds to, rounded down to six places (never more)."""
    return (measure / factor).quantize(Decimal("0.000001"), rounding="ROUND_DOWN")
