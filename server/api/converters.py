"""Protobuf messages <-> domain objects. No rules here: text passes through as transmitted."""
from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from contract.messages import ACTION_NAMES, OUTCOME_TO_PROTO, SEVERITY_TO_PROTO, draft_from_proto, draft_to_proto
from contract.receipt import Receipt
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import transmission_pb2 as tpb
from server.domain.certificate import Certificate, draft_of
from server.domain.errors import DomainError, ErrorKind, Finding
from server.domain.quantity import format_quantity
from server.domain.records import ActivityEntry, StoredVersion
from server.domain.transmission import Action, CertificateStatus, Envelope

ACTION_FROM_PROTO = {value: Action(name) for value, name in ACTION_NAMES.items()}
ACTION_TO_PROTO = {name: value for value, name in ACTION_NAMES.items()}
STATUS_TO_PROTO = {
    CertificateStatus.ACTIVE: cpb.CERTIFICATE_STATUS_ACTIVE,
    CertificateStatus.CANCELED: cpb.CERTIFICATE_STATUS_CANCELED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def timestamp(at: dt.datetime) -> Timestamp:
    """An aware instant as a Timestamp, by exact integer arithmetic (Timestamp.FromDatetime does the
    same through calendar.timegm at several times the cost, and answers carry two or three of them)."""
    since = at - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def instant_from(stamp: Timestamp, field: str) -> dt.datetime:
    """A Timestamp as a UTC datetime; one outside years 1-9999 (or with bad nanos) is the caller's error."""
    try:
        return stamp.ToDatetime(tzinfo=dt.timezone.utc)
    except (ValueError, OverflowError):
        raise DomainError(
            "TIMESTAMP_OUT_OF_RANGE", f"{field} is not a valid instant", ErrorKind.INVALID,
            [Finding("TIMESTAMP_OUT_OF_RANGE", field, "must be an instant between the years 1 and 9999")],
        ) from None


M = TypeVar("M", bound=Message)


def message_from(kind: type[M], source: object, **differing: Any) -> M:
    """A `kind` message whose every field is the same-named attribute of `source`, written for the wire
    (a quantity as its canonical text, an instant as a Timestamp), but for the fields given in `differing`:
    those named or typed otherwise in the domain. A field the source lacks is an AttributeError, never a
    silent default."""
    values = {name: _wire(getattr(source, name)) for name in _field_names(kind) if name not in differing}
    return kind(**values, **differing)


@functools.cache
def _field_names(kind: type[Message]) -> tuple[str, ...]:
    return tuple(f.name for f in kind.DESCRIPTOR.fields)


def _wire(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_quantity(value)
    if isinstance(value, dt.datetime):
        return timestamp(value)
    return value


def envelope_from_proto(message: tpb.SignedEnvelope) -> Envelope:
    return Envelope(
        message_id=message.message_id,
        sender=message.sender,
        sent_at_seconds=message.sent_at.seconds,
        sent_at_nanos=message.sent_at.nanos,
        action=ACTION_FROM_PROTO.get(message.action),
        replaces_version=message.replaces_version,
        key_id=message.key_id,
        signature=message.signature,
        certificate=draft_from_proto(message.certificate),
    )


def certificate_to_proto(c: Certificate) -> cpb.Certificate:
    return draft_to_proto(draft_of(c))


def issue_to_proto(finding: Finding, prefix: str = "") -> tpb.TransmissionIssue:
    return tpb.TransmissionIssue(
        code=finding.code,
        field=prefix + finding.field,
        description=finding.description,
        severity=SEVERITY_TO_PROTO[finding.severity],
    )


def receipt_to_proto(r: Receipt) -> tpb.Receipt:
    # Receipt issues keep the domain's field paths: they are part of what customs signed.
    return message_from(
        tpb.Receipt, r,
        digest_sha256=r.digest,
        outcome=OUTCOME_TO_PROTO[r.outcome],
        issues=[issue_to_proto(f) for f in r.issues],
        action=ACTION_TO_PROTO.get(r.action, tpb.TRANSMISSION_ACTION_UNSPECIFIED),
    )


def stored_to_proto(s: StoredVersion) -> cpb.StoredCertificate:
    return message_from(
        cpb.StoredCertificate, s,
        certificate=certificate_to_proto(s.certificate),
        status=STATUS_TO_PROTO[s.status],
        digest_sha256=s.digest,
    )


def activity_to_proto(e: ActivityEntry) -> tpb.ActivityReportEntry:
    return message_from(tpb.ActivityReportEntry, e)
