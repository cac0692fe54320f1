"""Exact decimal quantities: parsed from text, never through float."""
from __future__ import annotations

import decimal
from decimal import Decimal

# Enough for any shipment in any unit; larger numbers are typing errors, not trade.
MAX_DIGITS = 18
MAX_FRACTION_DIGITS = 6
# Every stored quantity and measure (claims, grants, certificates, levels) is an integer of
# micro-units in a signed 64-bit column: below 10^12 units with six places, so that the sum of any two
# (a charge added to a balance) still fits (2 x 10^18 < 2^63).
MAX_STORED = Decimal(10) ** (MAX_DIGITS - MAX_FRACTION_DIGITS)


class QuantityTooLarge(ValueError):
    """At or above MAX_STORED."""


class QuantityTooPrecise(ValueError):
    """More than MAX_FRACTION_DIGITS decimal places."""


def check_storable(value: Decimal) -> None:
    """Raise QuantityTooLarge or QuantityTooPrecise unless `value` can be stored exactly."""
    if abs(value) >= MAX_STORED:
        raise QuantityTooLarge(f"must be less than {MAX_STORED:f}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_FRACTION_DIGITS and value != value.quantize(Decimal(1).scaleb(-MAX_FRACTION_DIGITS)):
        raise QuantityTooPrecise(f"has more than {MAX_FRACTION_DIGITS} decimal places")


def storable_code(value: Decimal) -> str | None:
    """QUANTITY_TOO_LARGE, QUANTITY_TOO_PRECISE, or None if `value` can be stored exactly."""
    try:
        check_storable(value)
    except QuantityTooLarge:
        return "QUANTITY_TOO_LARGE"
    except QuantityTooPrecise:
        return "QUANTITY_TOO_PRECISE"
    return None


def parse_quantity(text: str) -> Decimal:
    """Parse a plain decimal string; raise ValueError on anything else (exponents, NaN, too long)."""
    if not isinstance(text, str) or not text or len(text) > 40:
        raise ValueError("not a decimal number")
    stripped = text.strip()
    if stripped != text or not all(c in "0123456789.-" for c in text):  # ASCII only: isdigit() takes any script
        raise ValueError("not a plain decimal number")
    try:
        value = Decimal(text)
    except decimal.InvalidOperation as exc:
        raise ValueError("not a decimal number") from exc
    if not value.is_finite():
        raise ValueError("not a finite number")
    sign, digits, exponent = value.as_tuple()
    fraction = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if fraction > MAX_FRACTION_DIGITS:
        raise QuantityTooPrecise(f"more than {MAX_FRACTION_DIGITS} decimal places")
    if len(digits) - fraction > MAX_DIGITS - MAX_FRACTION_DIGITS:
        raise QuantityTooLarge(f"must be less than {MAX_STORED:f}")
    return value


def format_quantity(value: Decimal) -> str:
    """Canonical text: no exponent, no trailing fractional zeros ("12.50" -> "12.5", "1E+3" -> "1000")."""
    normalized = value.normalize()
    text = format(normalized, "f")
    return "0" if text in ("-0", "") else text
