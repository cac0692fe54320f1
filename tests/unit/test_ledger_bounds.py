"""What the ledger can store and when: precision and magnitude of quantities, the supported dates, and
instants that lie in the future (issue 12, findings 2 and 5). Pure domain; the same refusals through
the API are in tests/integration/test_ledger_invariants.py."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from server.domain.conversion import Category, ConversionTable, convert
from server.domain.entry import FUTURE_TOLERANCE, future_findings, validate_entry_line
from server.domain.quantity import MAX_STORED, storable_code
from tests.unit.test_claim_rules import ENTRY_TYPES, T0, draft

SWEATERS = ConversionTable("v1", "s", {"345": Category("345", "sweaters", "DOZ", Decimal("20.1"))}, {"6110200010": "345"})


@pytest.mark.parametrize(("quantity", "code"), [
    ("1000000000000", "QUANTITY_TOO_LARGE"),  # 10^12: its micro-units plus a balance could overflow 64 bits
    ("1.0000001", "QUANTITY_TOO_PRECISE"),
    ("abc", "QUANTITY_MALFORMED"),
])
def test_quantities_outside_what_is_stored_are_refused_with_their_own_reason(quantity: str, code: str):
    line, findings = validate_entry_line(draft(quantity=quantity), ENTRY_TYPES)
    assert line is None and [(f.code, f.field) for f in findings] == [(code, "line.quantity")]


def test_the_largest_and_the_finest_stored_quantities_are_accepted():
    for quantity in ("999999999999.999999", "0.000001"):
        line, findings = validate_entry_line(draft(quantity=quantity), ENTRY_TYPES)
        assert line is not None and findings == []


@pytest.mark.parametrize(("quantity", "code"), [
    ("0.000001", "QUANTITY_TOO_PRECISE"),  # 0.0000201 SME: seven places
    ("999999999999", "QUANTITY_TOO_LARGE"),  # 2.01 x 10^13 SME
    ("0.00001", None),  # 0.000201 SME
    ("49751243781", None),  # 999,999,999,998.1 SME: just under
])
def test_a_measure_is_checked_after_conversion(quantity: str, code: str | None):
    # Issue 12, finding 5: 0.000001 DOZ of a good whose factor is 20.1, or 999999999999 DOZ, ended INTERNAL.
    measure = convert(SWEATERS, Decimal(quantity), "DOZ", "6110200010", "SME").measure
    assert storable_code(measure) == code
    assert (code is None) == (abs(measure) < MAX_STORED and measure == measure.quantize(Decimal("0.000001")))


@pytest.mark.parametrize("date", ["9999-12-31", "1993-12-31", "0001-01-01"])
def test_dates_outside_the_supported_range_are_refused(date: str):
    line, findings = validate_entry_line(draft(date_of_importation=date), ENTRY_TYPES)
    assert line is None and [(f.code, f.field) for f in findings] == [("DATE_OUT_OF_RANGE", "line.date_of_importation")]


def test_instants_later_than_the_clock_allows_are_refused_field_by_field():
    # Issue 12, finding 2: a claim presented 25 days in the future was accepted and ranked by that time.
    now = T0 + dt.timedelta(hours=2)
    line, _ = validate_entry_line(draft(paid_at=now + dt.timedelta(days=25), arrived_at=now + FUTURE_TOLERANCE + dt.timedelta(seconds=1)), ENTRY_TYPES)
    assert line is not None
    found = future_findings(line, now, now.date())
    assert [(f.code, f.field) for f in found] == [("INSTANT_IN_FUTURE", "line.arrived_at"), ("INSTANT_IN_FUTURE", "line.paid_at")]
    within, _ = validate_entry_line(draft(paid_at=now + FUTURE_TOLERANCE), ENTRY_TYPES)
    assert within is not None and future_findings(within, now, now.date()) == []


def test_a_post_importation_claim_for_goods_not_yet_entered_is_refused():
    # Issue 12, finding 2: a FilePostImportationClaim for a future date of importation was charged.
    today = T0.date()
    tomorrow, _ = validate_entry_line(draft(date_of_importation=(today + dt.timedelta(days=1)).isoformat()), ENTRY_TYPES)
    assert tomorrow is not None
    now = T0 + dt.timedelta(hours=2)
    assert [(f.code, f.field) for f in future_findings(tomorrow, now, today, post_importation=True)] == [
        ("DATE_IN_FUTURE", "line.date_of_importation")
    ]
    today_line, _ = validate_entry_line(draft(date_of_importation=today.isoformat()), ENTRY_TYPES)
    assert today_line is not None and future_findings(today_line, now, today, post_importation=True) == []
    # An ordinary claim may name a later date (it waits for its period's opening); see test_claim_rules.
    assert future_findings(tomorrow, now, today) == []
