"""Plain Python values for the SDK's callers: dataclasses in and out, protobuf only on request.

A certificate's own fields stay text exactly as the partner transmits and signs them (the service,
not the SDK, judges them). What the service computes comes back typed: quantities as `Decimal`,
instants as timezone-aware `datetime`, codes as enums named after the proto values without their prefix.
"""
from __future__ import annotations

import datetime as dt
import enum
import hashlib
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from contract.certificate import CertificateDraft, PartyDraft
from contract.messages import certificate_values, draft_to_proto
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb


_WRAPPERS: dict[type, Any] = {}  # SDK enum class -> generated proto EnumTypeWrapper


class _ProtoEnum(enum.Enum):
    """An enum mirroring a proto enum: members are the proto names without the enum's prefix."""

    @classmethod
    def _wrapper(cls) -> Any:
        return _WRAPPERS[cls]

    @classmethod
    def _prefix(cls) -> str:
        return str(cls._wrapper().DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED"))

    @classmethod
    def from_proto(cls, number: int) -> Any:
        wrapper = cls._wrapper()
        name = wrapper.Name(number) if number in wrapper.values() else f"{cls._prefix()}UNSPECIFIED"
        return cls[name.removeprefix(cls._prefix())]

    @classmethod
    def parse(cls, text: str) -> Any:
        """From a user's spelling: 'accepted', 'ACCEPTED' or the proto's full name; KeyError otherwise."""
        return cls[text.strip().upper().replace("-", "_").removeprefix(cls._prefix())]

    def to_proto(self) -> int:
        return int(self._wrapper().Value(self._prefix() + self.name))


def _mirror(name: str, wrapper: Any) -> Any:
    prefix = wrapper.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
    members = [v.name.removeprefix(prefix) for v in wrapper.DESCRIPTOR.values]
    cls = _ProtoEnum(name, [(m, m) for m in members], module=__name__)
    _WRAPPERS[cls] = wrapper
    return cls


Action = _mirror("Action", tpb.TransmissionAction)
Outcome = _mirror("Outcome", tpb.TransmissionOutcome)
Severity = _mirror("Severity", tpb.Severity)
CertificateStatus = _mirror("CertificateStatus", cpb.CertificateStatus)
Condition = _mirror("Condition", tpb.CertificateCondition)  # MATCHED=10, UNMATCHED=11, CANCELED=12 on the wire
ClaimDecision = _mirror("ClaimDecision", mpb.ClaimDecision)
ReversalKind = _mirror("ReversalKind", mpb.ReversalKind)
QuotaState = _mirror("QuotaState", qpb.QuotaState)
QuotaEventKind = _mirror("QuotaEventKind", qpb.QuotaEventKind)


def _decimal(text: str) -> Decimal | None:
    return Decimal(text) if text else None


def _instant(stamp: Timestamp, present: bool = True) -> dt.datetime | None:
    return stamp.ToDatetime(tzinfo=dt.timezone.utc) if present else None


def _stamp(at: dt.datetime | None) -> Timestamp | None:
    if at is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc))
    return stamp


def to_plain(value: Any) -> Any:
    """A dataclass tree as JSON-ready values (for `--json`): Decimals and instants become text."""
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: to_plain(getattr(value, f.name)) for f in fields(value) if not f.name.startswith("_")}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


# -- certificates and transmissions --------------------------------------------------------------


# A party named on a certificate: the contract's, text as transmitted.
Party = PartyDraft


@dataclass(frozen=True)
class Certificate(CertificateDraft):
    """A certificate of eligibility as the partner issues it; every field is text as transmitted.

    Its fields are the contract's (contract/certificate.py), the proto's by name: only the number is
    required here, and the issuing country defaults to Mexico's."""

    certificate_number: str
    issuing_country: str = "MX"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Certificate:
        """From a JSON object with the proto's field names; unknown keys are an error (ValueError)."""
        message = json_format.ParseDict(data, cpb.Certificate())
        return cls.from_proto(message)

    @classmethod
    def from_proto(cls, m: cpb.Certificate) -> Certificate:
        return cls(**certificate_values(m))

    def to_proto(self) -> cpb.Certificate:
        return draft_to_proto(self)


@dataclass(frozen=True)
class Issue:
    code: str
    field: str
    description: str
    severity: Any  # Severity

    @classmethod
    def from_proto(cls, m: tpb.TransmissionIssue) -> Issue:
        return cls(m.code, m.field, m.description, Severity.from_proto(m.severity))


@dataclass
class Receipt:
    """Customs' signed acknowledgement; `to_json()` is the form `ecert receipt verify` reads."""

    receipt_id: str
    message_id: str
    sender: str
    recipient: str
    digest_sha256: bytes
    received_at: dt.datetime | None
    outcome: Any  # Outcome
    issues: list[Issue]
    action: Any  # Action
    certificate_number: str
    certificate_version: int
    signing_key_id: str
    signature: bytes
    signature_sha256: bytes = b""  # of the envelope signature judged (empty on older receipts)
    _proto: tpb.Receipt | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: tpb.Receipt) -> Receipt:
        copy = tpb.Receipt()
        copy.CopyFrom(m)
        return cls(
            receipt_id=m.receipt_id, message_id=m.message_id, sender=m.sender, recipient=m.recipient,
            digest_sha256=m.digest_sha256, received_at=_instant(m.received_at, m.HasField("received_at")),
            outcome=Outcome.from_proto(m.outcome), issues=[Issue.from_proto(i) for i in m.issues],
            action=Action.from_proto(m.action), certificate_number=m.certificate_number,
            certificate_version=m.certificate_version, signing_key_id=m.signing_key_id, signature=m.signature,
            signature_sha256=m.signature_sha256, _proto=copy,
        )

    def to_proto(self) -> tpb.Receipt:
        """The receipt exactly as customs sent it (the signature covers every field)."""
        if self._proto is None:
            raise ValueError("this receipt was not received from the service")
        copy = tpb.Receipt()
        copy.CopyFrom(self._proto)
        return copy

    def to_json(self) -> str:
        return json_format.MessageToJson(self.to_proto())


@dataclass
class StoredCertificate:
    certificate: Certificate
    version: int
    status: Any  # CertificateStatus
    remaining_quantity: Decimal | None
    received_at: dt.datetime | None
    message_id: str
    receipt_id: str
    digest_sha256: bytes
    sender: str
    current: bool
    # What the partner signed for this version, exactly as received (get_certificate fills them; empty
    # elsewhere): `certificate` shows the elements as parsed, these let a reader re-check them.
    signed_bytes: bytes = b""
    signature: bytes = b""
    signing_key_id: str = ""

    def verify(self, partner_key: Ed25519PublicKey) -> bool:
        """True if the signed bytes are those whose SHA-256 customs recorded and `partner_key` (the
        partner's document-signing key with id `signing_key_id`) signed them."""
        if not self.signed_bytes or hashlib.sha256(self.signed_bytes).digest() != self.digest_sha256:
            return False
        try:
            partner_key.verify(self.signature, self.signed_bytes)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def from_proto(cls, m: cpb.StoredCertificate) -> StoredCertificate:
        return cls(
            certificate=Certificate.from_proto(m.certificate), version=m.version,
            status=CertificateStatus.from_proto(m.status), remaining_quantity=_decimal(m.remaining_quantity),
            received_at=_instant(m.received_at, m.HasField("received_at")), message_id=m.message_id,
            receipt_id=m.receipt_id, digest_sha256=m.digest_sha256, sender=m.sender, current=m.current,
        )


@dataclass
class SubmitResult:
    receipt: Receipt
    certificate: StoredCertificate
    replayed: bool
    # The receipt's leaf hash in customs' transparency log (LogReads.inclusion_proof finds it there).
    log_leaf_hash: bytes = b""


@dataclass
class ValidationReport:
    valid: bool
    issues: list[Issue]
    digest_sha256: bytes


@dataclass
class ActivityEntry:
    certificate_number: str
    condition: Any  # Condition
    version: int
    tpl_number: str
    quota_year: int
    quantity: Decimal | None
    remaining_quantity: Decimal | None
    unit: str
    importer_of_record: str

    @classmethod
    def from_proto(cls, m: tpb.ActivityReportEntry) -> ActivityEntry:
        return cls(
            m.certificate_number, Condition.from_proto(m.condition), m.version, m.tpl_number, m.quota_year,
            _decimal(m.quantity), _decimal(m.remaining_quantity), m.unit, m.importer_of_record,
        )


# -- claims ------------------------------------------------------------------------------------------


@dataclass
class EntryLine:
    """One entry summary line claiming a TPL (SPI "S+"). `filer_code` defaults to the entry number's first 3."""

    entry_number: str
    line_number: int
    importer_of_record: str
    htsus_number: str
    tpl_number: str
    certificate_number: str
    quantity: str | Decimal
    unit: str
    date_of_importation: str | dt.date
    country_of_origin: str = "MX"
    entry_type: str = "02"
    spi: str = "S+"
    filer_code: str = ""
    filed_at: dt.datetime | None = None
    arrived_at: dt.datetime | None = None
    paid_at: dt.datetime | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EntryLine:
        """From a JSON object with the proto's field names (instants as RFC 3339 text)."""
        message = json_format.ParseDict(data, mpb.EntrySummaryLine())
        return cls(
            entry_number=message.entry_number, line_number=message.line_number,
            importer_of_record=message.importer_of_record, htsus_number=message.htsus_number,
            tpl_number=message.tpl_number, certificate_number=message.certificate_number,
            quantity=message.quantity, unit=message.unit, date_of_importation=message.date_of_importation,
            country_of_origin=message.country_of_origin, entry_type=message.entry_type, spi=message.spi,
            filer_code=message.filer_code,
            filed_at=_instant(message.filed_at, message.HasField("filed_at")),
            arrived_at=_instant(message.arrived_at, message.HasField("arrived_at")),
            paid_at=_instant(message.paid_at, message.HasField("paid_at")),
        )

    def to_proto(self) -> mpb.EntrySummaryLine:
        line = mpb.EntrySummaryLine(
            entry_number=self.entry_number, line_number=self.line_number,
            filer_code=self.filer_code or self.entry_number[:3], importer_of_record=self.importer_of_record,
            entry_type=self.entry_type, country_of_origin=self.country_of_origin, htsus_number=self.htsus_number,
            tpl_number=self.tpl_number, spi=self.spi, certificate_number=self.certificate_number,
            quantity=str(self.quantity), unit=self.unit, date_of_importation=str(self.date_of_importation),
        )
        for name in ("filed_at", "arrived_at", "paid_at"):
            stamp = _stamp(getattr(self, name))
            if stamp is not None:
                getattr(line, name).CopyFrom(stamp)
        return line


@dataclass(frozen=True)
class FieldMismatch:
    field: str
    claimed: str
    transmitted: str


@dataclass
class ClaimResult:
    claim_id: str
    entry_number: str
    line_number: int
    decision: Any  # ClaimDecision
    reasons: list[str]
    mismatches: list[FieldMismatch]
    tpl_number: str
    quota_year: int
    claimed_quantity: Decimal | None
    unit: str
    claimed_measure: Decimal | None
    measure_unit: str
    conversion_factor: Decimal | None
    factor_version: str
    granted_quantity: Decimal | None
    granted_measure: Decimal | None
    mfn_quantity: Decimal | None
    mfn_measure: Decimal | None
    certificate_remaining: Decimal | None
    level_remaining: Decimal | None
    aggregate_remaining: Decimal | None
    presentation_time: dt.datetime | None
    decided_at: dt.datetime | None
    post_importation: bool
    reversed: bool
    proration_rate: Decimal | None
    # The certificate version on file at presentation that the decision relied on, with customs'
    # receipt id and the transmission's digest (hex): the evidence to keep with the entry.
    certificate_version: int = 0
    certificate_receipt_id: str = ""
    certificate_digest: str = ""
    # PRORATED_OFFER: when the offer lapses unanswered (answer it with Matching.answer_prorated_offer).
    offer_expires_at: dt.datetime | None = None
    log_leaf_hash: bytes = b""  # the claim's latest entry in customs' transparency log
    # A claim that was PENDING near fill: the cutoff of the daily batch that decided it.
    batch_cutoff: dt.datetime | None = None

    @classmethod
    def from_proto(cls, m: mpb.ClaimResult) -> ClaimResult:
        d = _decimal
        return cls(
            claim_id=m.claim_id, entry_number=m.entry_number, line_number=m.line_number,
            decision=ClaimDecision.from_proto(m.decision), reasons=list(m.reasons),
            mismatches=[FieldMismatch(x.field, x.claimed, x.transmitted) for x in m.mismatches],
            tpl_number=m.tpl_number, quota_year=m.quota_year, claimed_quantity=d(m.claimed_quantity), unit=m.unit,
            claimed_measure=d(m.claimed_measure), measure_unit=m.measure_unit,
            conversion_factor=d(m.conversion_factor), factor_version=m.factor_version,
            granted_quantity=d(m.granted_quantity), granted_measure=d(m.granted_measure),
            mfn_quantity=d(m.mfn_quantity), mfn_measure=d(m.mfn_measure),
            certificate_remaining=d(m.certificate_remaining), level_remaining=d(m.level_remaining),
            aggregate_remaining=d(m.aggregate_remaining),
            presentation_time=_instant(m.presentation_time, m.HasField("presentation_time")),
            decided_at=_instant(m.decided_at, m.HasField("decided_at")),
            post_importation=m.post_importation, reversed=m.reversed, proration_rate=d(m.proration_rate),
            certificate_version=m.certificate_version, certificate_receipt_id=m.certificate_receipt_id,
            certificate_digest=m.certificate_digest,
            offer_expires_at=_instant(m.offer_expires_at, m.HasField("offer_expires_at")),
            log_leaf_hash=m.log_leaf_hash,
            batch_cutoff=_instant(m.batch_cutoff, m.HasField("batch_cutoff")),
        )


@dataclass
class ClaimOutcome:
    result: ClaimResult
    replayed: bool


@dataclass
class Reversal:
    reversed: ClaimResult
    corrected: ClaimResult | None


@dataclass
class CertificateUse:
    entry_number: str
    line_number: int
    importer_of_record: str
    granted_quantity: Decimal | None
    decided_at: dt.datetime | None
    reversed: bool


@dataclass
class CertificateUsage:
    issuing_country: str
    certificate_number: str
    importer_of_record: str
    unit: str
    quantity: Decimal | None
    used_quantity: Decimal | None
    remaining_quantity: Decimal | None
    uses: list[CertificateUse]

    @classmethod
    def from_proto(cls, m: mpb.GetCertificateUsageResponse) -> CertificateUsage:
        return cls(
            m.issuing_country, m.certificate_number, m.importer_of_record, m.unit, _decimal(m.quantity),
            _decimal(m.used_quantity), _decimal(m.remaining_quantity),
            [
                CertificateUse(u.entry_number, u.line_number, u.importer_of_record, _decimal(u.granted_quantity),
                               _instant(u.decided_at, u.HasField("decided_at")), u.reversed)
                for u in m.uses
            ],
        )


# -- quota -------------------------------------------------------------------------------------------


@dataclass
class QuotaStatus:
    tpl_number: str
    label: str
    quota_year: int
    measure_unit: str
    limit: Decimal | None
    charged: Decimal | None
    remaining: Decimal | None
    fill_share: Decimal | None
    state: Any  # QuotaState
    period_start: str
    period_end: str
    aggregate_tpl_number: str
    as_of: dt.datetime | None
    # ON_HOLD near fill: since when, and when the pending claims are decided (the next daily cutoff).
    held_since: dt.datetime | None = None
    next_batch_at: dt.datetime | None = None

    @classmethod
    def from_proto(cls, m: qpb.QuotaStatus) -> QuotaStatus:
        d = _decimal
        return cls(
            m.tpl_number, m.label, m.quota_year, m.measure_unit, d(m.limit), d(m.charged), d(m.remaining),
            d(m.fill_share), QuotaState.from_proto(m.state), m.period_start, m.period_end, m.aggregate_tpl_number,
            _instant(m.as_of, m.HasField("as_of")), _instant(m.held_since, m.HasField("held_since")),
            _instant(m.next_batch_at, m.HasField("next_batch_at")),
        )


@dataclass
class QuotaEvent:
    kind: Any  # QuotaEventKind
    status: QuotaStatus
    at: dt.datetime | None

    @classmethod
    def from_proto(cls, m: qpb.QuotaEvent) -> QuotaEvent:
        return cls(QuotaEventKind.from_proto(m.kind), QuotaStatus.from_proto(m.status), _instant(m.at, m.HasField("at")))
