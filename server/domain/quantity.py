"""Exact decimal quantities: parsed from text, never through float."""
from __future__ import annotations

import decimal
from decimal import Decimal

# Enough for any shipment in any unit; larger numbers are typing errors, not trade.
MAX_DIGITS = 18
MAX_FRACTION_DIGITS = 6


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
        raise ValueError(f"more than {MAX_FRACTION_DIGITS} decimal places")
    if len(digits) - fraction > MAX_DIGITS - MAX_FRACTION_DIGITS:
        raise ValueError("too large")
    return value


def format_quantity(value: Decimal) -> str:
    """Canonical text: no exponent, no trailing fractional zeros ("12.50" -> "12.5", "1E+3" -> "1000")."""
    normalized = value.normalize()
    text = format(normalized, "f")
    return "0" if text in ("-0", "") else text
