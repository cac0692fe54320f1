"""Transmissions: the signed envelope a partner sends and the rules for applying it to a certificate."""
from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property

from contract.canonical import envelope_bytes
from contract.certificate import CertificateDraft
from contract.constants import MESSAGE_ID_PATTERN
from contract.receipt import Outcome
from contract.signing import sha256
from server.domain.certificate import Certificate
from server.domain.errors import DomainError, ErrorKind, Finding, Severity


class Action(enum.Enum):
    CREATE = "CREATE"
    REPLACE = "REPLACE"
    CANCEL = "CANCEL"


class CertificateStatus(enum.Enum):
    ACTIVE = "ACTIVE"
    CANCELED = "CANCELED"


@dataclass(frozen=True)
class Envelope:
    message_id: str
    sender: str
    sent_at_seconds: int
    sent_at_nanos: int
    action: Action | None  # None: the sender left it unspecified
    replaces_version: int
    key_id: str
    signature: bytes
    certificate: CertificateDraft

    @property
    def sent_at(self) -> dt.datetime:
        try:
            return dt.datetime.fromtimestamp(self.sent_at_seconds, dt.timezone.utc) + dt.timedelta(
                microseconds=self.sent_at_nanos // 1000
            )
        except (OverflowError, ValueError, OSError):  # a Timestamp outside years 1..9999
            finding = Finding("SENT_AT_OUT_OF_RANGE", "sent_at", "must be an instant between the years 1 and 9999")
            raise DomainError(finding.code, "sent_at is out of range", ErrorKind.INVALID, [finding]) from None

    def signed_bytes(self) -> bytes:
        return self._signed_bytes

    def digest(self) -> bytes:
        return self._digest

    # Computed once per envelope: verifying, digesting and storing it all need the same bytes.
    @cached_property
    def _signed_bytes(self) -> bytes:
        return envelope_bytes(
            message_id=self.message_id,
            sender=self.sender,
            sent_at_seconds=self.sent_at_seconds,
            sent_at_nanos=self.sent_at_nanos,
            action=self.action.value if self.action else "UNSPECIFIED",
            replaces_version=self.replaces_version,
            key_id=self.key_id,
            certificate=self.certificate,
        )

    @cached_property
    def _digest(self) -> bytes:
        return sha256(self._signed_bytes)


@dataclass(frozen=True)
class CertificateHead:
    """The latest state of a certificate on file."""

    issuing_country: str
    certificate_number: str
    version: int
    status: CertificateStatus
    tpl_number: str
    quota_year: int
    unit: str
    quantity: Decimal
    used_quantity: Decimal

    @property
    def remaining_quantity(self) -> Decimal:
        return self.quantity - self.used_quantity


@dataclass(frozen=True)
class Transition:
    """What an accepted transmission does: the version it makes and the status that version has."""

    version: int
    status: CertificateStatus


# Earliest sent_at a valid protobuf Timestamp may hold is year 1; anything before 2000 is a broken clock.
_EARLIEST_SENT_AT = 946684800


def check_envelope(
    envelope: Envelope, received_at: dt.datetime, max_skew: dt.timedelta, max_age: dt.timedelta
) -> list[Finding]:
    """Rules on the envelope's own fields (the certificate is checked separately).

    sent_at is bounded tightly on the future side (no sender's clock runs more than `max_skew` ahead of
    customs') and loosely on the past side: an envelope a relay acknowledged and held through an outage
    arrives late but genuine, so it may be up to `max_age` old. Replays are refused by the message id
    (unique forever per sender), not by sent_at; the signing key must still have been valid at sent_at
    (the trust store's check)."""
    findings: list[Finding] = []
    if not envelope.message_id:
        findings.append(Finding("MESSAGE_ID_MISSING", "message_id", "is required"))
    elif not MESSAGE_ID_PATTERN.fullmatch(envelope.message_id):
        findings.append(Finding("MESSAGE_ID_MALFORMED", "message_id", "1-128 characters of A-Z a-z 0-9 . _ : -"))
    if not envelope.sender:
        findings.append(Finding("SENDER_MISSING", "sender", "is required"))
    if envelope.action is None:
        findings.append(Finding("ACTION_MISSING", "action", "must be CREATE, REPLACE or CANCEL"))
    elif envelope.action is Action.CREATE and envelope.replaces_version != 0:
        findings.append(Finding("REPLACES_VERSION_UNEXPECTED", "replaces_version", "must be 0 for CREATE"))
    elif envelope.action is not Action.CREATE and envelope.replaces_version < 1:
        findings.append(Finding("REPLACES_VERSION_MISSING", "replaces_version", "must name the version superseded"))
    if envelope.sent_at_seconds < _EARLIEST_SENT_AT:
        findings.append(Finding("SENT_AT_MISSING", "sent_at", "the sender's timestamp is required"))
    elif envelope.sent_at - received_at > max_skew:
        findings.append(
            Finding(
                "SENDER_CLOCK_SKEW",
                "sent_at",
                f"is ahead of customs' clock by more than {int(max_skew.total_seconds())} s",
            )
        )
    elif received_at - envelope.sent_at > max_age:
        findings.append(
            Finding(
                "SENDER_CLOCK_SKEW",
                "sent_at",
                f"is more than {int(max_age.total_seconds())} s before customs' clock",
            )
        )
    return findings


def plan_transition(
    action: Action, replaces_version: int, certificate: Certificate | None, head: CertificateHead | None
) -> Transition:
    """Decide what an accepted transmission does to the certificate on file, or why it cannot."""
    if action is Action.CREATE:
        if head is not None:
            raise DomainError(
                "CERTIFICATE_ALREADY_EXISTS",
                "a certificate with this number is already on file; use REPLACE",
                ErrorKind.PRECONDITION,
                metadata={"current_version": str(head.version)},
            )
        return Transition(1, CertificateStatus.ACTIVE)

    if head is None:
        raise DomainError("CERTIFICATE_NOT_FOUND", "no certificate with this number is on file", ErrorKind.NOT_FOUND)
    if head.status is CertificateStatus.CANCELED:
        raise DomainError("CERTIFICATE_CANCELED", "the certificate was canceled", ErrorKind.PRECONDITION)
    if replaces_version != head.version:
        raise DomainError(
            "STALE_VERSION",
            f"the transmission supersedes version {replaces_version}, the current version is {head.version}",
            ErrorKind.CONFLICT,
            metadata={"current_version": str(head.version), "replaces_version": str(replaces_version)},
        )
    if action is Action.CANCEL:
        if head.used_quantity > 0:
            raise DomainError(
                "CERTIFICATE_IN_USE",
                "entries have used this certificate; reverse them before canceling it",
                ErrorKind.PRECONDITION,
                metadata={"used_quantity": str(head.used_quantity)},
            )
        return Transition(head.version + 1, CertificateStatus.CANCELED)

    assert certificate is not None
    if head.used_quantity > 0:
        changed = [
            name
            for name, old, new in (
                ("tpl_number", head.tpl_number, certificate.tpl_number),
                ("quota_year", head.quota_year, certificate.quota_year),
                ("unit", head.unit, certificate.unit),
            )
            if old != new
        ]
        if changed:
            raise DomainError(
                "CERTIFICATE_IN_USE",
                "entries have used this certificate; its " + ", ".join(changed) + " cannot change",
                ErrorKind.PRECONDITION,
                [Finding("CERTIFICATE_IN_USE", f"certificate.{name}", "cannot change once used") for name in changed],
            )
        if certificate.quantity < head.used_quantity:
            raise DomainError(
                "QUANTITY_BELOW_USAGE",
                f"entries have already used {head.used_quantity} {head.unit}",
                ErrorKind.PRECONDITION,
                [Finding("QUANTITY_BELOW_USAGE", "certificate.quantity", "less than the quantity already used")],
                metadata={"used_quantity": str(head.used_quantity)},
            )
    return Transition(head.version + 1, CertificateStatus.ACTIVE)


def outcome_for(findings: list[Finding]) -> Outcome:
    """A receipt's outcome: rejected on any error, accepted with warnings on warnings only."""
    if any(f.severity is Severity.ERROR for f in findings):
        return Outcome.REJECTED
    return Outcome.ACCEPTED_WITH_WARNINGS if findings else Outcome.ACCEPTED
