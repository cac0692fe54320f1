"""Contract documents read off their protobuf messages, and the enum values the two spell differently.

No rules here: text passes through exactly as transmitted, since signatures cover it as sent.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from contract.certificate import PARTY_FIELDS, PARTY_ROLES, SCALAR_FIELDS, CertificateDraft, PartyDraft
from contract.findings import Finding, Severity
from contract.protos import certificate_pb2 as cpb
from contract.protos import transmission_pb2 as tpb
from contract.receipt import Outcome, Receipt

# An envelope's action as its canonical bytes name it; any other value (unset, or unknown to this
# version) is signed as "UNSPECIFIED".
ACTION_NAMES: dict[int, str] = {
    tpb.TRANSMISSION_ACTION_CREATE: "CREATE",
    tpb.TRANSMISSION_ACTION_REPLACE: "REPLACE",
    tpb.TRANSMISSION_ACTION_CANCEL: "CANCEL",
}
UNSPECIFIED_ACTION = "UNSPECIFIED"
OUTCOME_TO_PROTO = {
    Outcome.ACCEPTED: tpb.TRANSMISSION_OUTCOME_ACCEPTED,
    Outcome.ACCEPTED_WITH_WARNINGS: tpb.TRANSMISSION_OUTCOME_ACCEPTED_WITH_WARNINGS,
    Outcome.REJECTED: tpb.TRANSMISSION_OUTCOME_REJECTED,
}
OUTCOME_FROM_PROTO = {v: k for k, v in OUTCOME_TO_PROTO.items()}
SEVERITY_TO_PROTO = {Severity.WARNING: tpb.SEVERITY_WARNING, Severity.ERROR: tpb.SEVERITY_ERROR}
SEVERITY_FROM_PROTO = {v: k for k, v in SEVERITY_TO_PROTO.items()}


def action_name(value: int) -> str:
    return ACTION_NAMES.get(value, UNSPECIFIED_ACTION)


def _certificate_fields(source: Any, party: Callable[..., Any]) -> dict[str, Any]:
    """A certificate's fields read off `source` (a proto certificate or a draft) by the contract's one list
    of them, each party built by `party` from its own fields: keyword arguments for the other side."""
    values: dict[str, Any] = {name: getattr(source, name) for name in SCALAR_FIELDS}
    for role in PARTY_ROLES:
        named = getattr(source, role)
        values[role] = party(**{name: getattr(named, name) for name in PARTY_FIELDS})
    return values


def certificate_values(message: cpb.Certificate) -> dict[str, Any]:
    """The proto certificate as keyword arguments for a CertificateDraft (or a subclass, like the SDK's
    Certificate): text as carried, parties as PartyDraft."""
    return _certificate_fields(message, PartyDraft)


def draft_from_proto(message: cpb.Certificate) -> CertificateDraft:
    return CertificateDraft(**certificate_values(message))


def draft_to_proto(draft: CertificateDraft) -> cpb.Certificate:
    """The draft as the proto certificate (the inverse of draft_from_proto)."""
    return cpb.Certificate(**_certificate_fields(draft, cpb.Party))


def receipt_from_proto(m: tpb.Receipt) -> Receipt:
    """For offline verification: rebuild the receipt customs signed from what a sender kept."""
    return Receipt(
        receipt_id=m.receipt_id,
        message_id=m.message_id,
        sender=m.sender,
        recipient=m.recipient,
        digest=m.digest_sha256,
        received_at=m.received_at.ToDatetime(tzinfo=dt.timezone.utc),
        outcome=OUTCOME_FROM_PROTO.get(m.outcome, Outcome.REJECTED),
        issues=tuple(
            Finding(i.code, i.field, i.description, SEVERITY_FROM_PROTO.get(i.severity, Severity.ERROR)) for i in m.issues
        ),
        action=action_name(m.action),
        certificate_number=m.certificate_number,
        certificate_version=m.certificate_version,
        signing_key_id=m.signing_key_id,
        signature=m.signature,
        signature_sha256=m.signature_sha256,
        received_at_nanos=m.received_at.nanos,  # verified as carried, not rounded to microseconds
    )
