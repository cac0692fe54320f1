"""Codes are read as ASCII: Unicode digits that \\d and str.isdigit() accept are refused."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from server.domain.certificate import HTSUS_PATTERN, IMPORTER_OF_RECORD_PATTERNS, parse_iso_date
from server.domain.quantity import parse_quantity
from server.domain.reference import Partner

ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))
DEVANAGARI = str.maketrans("0123456789", "".join(chr(0x0966 + d) for d in range(10)))


@pytest.mark.parametrize("digits", [ARABIC_INDIC, DEVANAGARI])
def test_non_ascii_digits_are_not_codes(digits):
    assert HTSUS_PATTERN.fullmatch("6109.10.0012") and not HTSUS_PATTERN.fullmatch("6109.10.0012".translate(digits))
    for ascii_number in ("12-345678900", "123456-12345", "123-45-6789"):
        assert any(p.fullmatch(ascii_number) for p in IMPORTER_OF_RECORD_PATTERNS)
        assert not any(p.fullmatch(ascii_number.translate(digits)) for p in IMPORTER_OF_RECORD_PATTERNS)
    assert parse_quantity("1200.5") == Decimal("1200.5")
    with pytest.raises(ValueError):
        parse_quantity("1200.5".translate(digits))
    with pytest.raises(ValueError):
        parse_iso_date("2026-02-20".translate(digits))


def test_a_configured_certificate_number_pattern_with_backslash_d_means_ascii_digits():
    partner = Partner("MX", "Mexico", r"MX\d{2}-\d{8}", dt.date(2021, 10, 5))
    assert partner.certificate_number_ok("MX26-00000001")
    assert not partner.certificate_number_ok("MX26-00000001".translate(ARABIC_INDIC))
