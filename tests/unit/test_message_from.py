"""server/api/converters.message_from: a message's fields read off the same-named attributes of a domain
object, quantities and instants written for the wire, the rest given by name."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import pytest

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from server.api.converters import activity_to_proto, message_from, timestamp
from server.domain.records import ActivityEntry

UTC = dt.timezone.utc


def test_every_field_is_read_by_its_name_and_written_for_the_wire():
    entry = ActivityEntry("MX26-1", 10, 2, "9823.53.01", 2026, Decimal("1200.50"), Decimal("0E-6"), "DOZ", "12-345678900")
    assert activity_to_proto(entry) == tpb.ActivityReportEntry(
        certificate_number="MX26-1", condition=10, version=2, tpl_number="9823.53.01", quota_year=2026,
        quantity="1200.5", remaining_quantity="0", unit="DOZ", importer_of_record="12-345678900",
    )


def test_an_instant_becomes_a_timestamp_and_a_differing_field_is_taken_as_given():
    @dataclass
    class Use:
        entry_number: str
        line_number: int
        importer_of_record: str
        decided_at: dt.datetime

    at = dt.datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)
    message = message_from(mpb.CertificateUse, Use("ABC-1234567-8", 1, "12-345678900", at), granted_quantity="5", reversed=True)
    assert message.decided_at == timestamp(at) and message.granted_quantity == "5" and message.reversed
    assert (message.entry_number, message.line_number) == ("ABC-1234567-8", 1)


def test_a_field_the_source_lacks_is_an_error_not_a_default():
    @dataclass
    class Partial:
        certificate_number: str

    with pytest.raises(AttributeError):
        message_from(tpb.ActivityReportEntry, Partial("MX26-1"))
