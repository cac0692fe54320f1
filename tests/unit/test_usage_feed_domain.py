"""The utilization feed's pure parts (server/domain/usage.py): cursors, and what a claim entry says."""
from __future__ import annotations

import datetime as dt

import pytest

from contract.log_entry import entry
from server.domain.usage import CertificateRef, parse_certificate, parse_cursor, usage_event

AT = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.timezone.utc)
DECISION = entry(AT, "DECISION", "entry:B76-0000001-5/1#0", {
    "claim_id": "C-1", "decision": "PREFERENTIAL", "certificate": "MX/MX26-00000001@2", "granted": "100 DOZ", "tpl": "9823.53.01/2026",
})
OLD_REVERSAL = entry(AT, "REVERSAL", "entry:B76-0000001-5/1#0", {"claim_id": "C-1", "kind": "CANCELED", "returned_quantity": "1E+2"})


def event(log_entry, **kwargs):  # type: ignore[no-untyped-def]
    data = log_entry.encode()
    return usage_event(7, log_entry.leaf_hash, data, log_entry, **kwargs)


@pytest.mark.parametrize(("text", "index"), [("", -1), ("0", 0), ("41", 41)])
def test_a_cursor_is_a_log_index(text, index):
    assert parse_cursor(text) == index


@pytest.mark.parametrize("text", ["-1", "abc", " 4", "4.0", "1" * 19, "٣"])
def test_anything_else_is_not_a_cursor(text):
    with pytest.raises(ValueError):
        parse_cursor(text)


def test_a_decision_names_its_certificate_quantity_and_position():
    made = event(DECISION, countries=frozenset({"MX"}))
    assert made is not None
    assert (made.cursor, made.kind, made.entry_number, made.line_number, made.revision) == ("7", "DECISION", "B76-0000001-5", 1, 0)
    assert (made.certificate, made.decision, made.granted_quantity, made.unit) == (CertificateRef("MX", "MX26-00000001", 2), "PREFERENTIAL", "100", "DOZ")
    assert made.leaf_hash == DECISION.leaf_hash and made.entry == DECISION.encode()


def test_another_countrys_entry_is_not_an_event():
    assert event(DECISION, countries=frozenset({"GT"})) is None
    assert event(DECISION, countries=None) is not None


def test_a_reversal_recorded_before_it_named_its_certificate_takes_the_claims():
    assert event(OLD_REVERSAL, countries=None) is None  # nobody's, unless the claim says whose
    made = event(OLD_REVERSAL, countries=frozenset({"MX"}), known=CertificateRef("MX", "MX26-00000001", 2), known_unit="DOZ")
    assert made is not None and (made.decision, made.returned_quantity, made.unit) == ("", "100", "DOZ")


def test_receipts_are_not_usage():
    receipt = entry(AT, "RECEIPT", "receipt:R-1", {"certificate_number": "MX26-00000001"})
    assert event(receipt, countries=None) is None
    assert parse_certificate("MX26-00000001") is None
