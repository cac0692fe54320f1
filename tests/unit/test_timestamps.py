"""Instants leave the service as protobuf Timestamps computed by integer arithmetic; they must be
exactly what protobuf's own FromDatetime gives, for every zone and the whole Timestamp range."""
from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from server.api.converters import timestamp

zones = st.builds(lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)), st.integers(-23 * 60 - 59, 23 * 60 + 59))


@given(st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31), timezones=zones))
def test_timestamp_equals_protobufs_own_conversion(at: dt.datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(at.astimezone(dt.timezone.utc))
    assert timestamp(at) == expected
