"""Contract documents read off their protobuf messages, and the enum values the two spell differently.

No rules here: text passes through exactly as transmitted, since signatures cover it as sent.
"""
from __future__ import annotations

import datetime as dt

from contract.certificate import CertificateDraft, PartyDraft
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


def draft_from_proto(message: cpb.Certificate) -> CertificateDraft:
    def party(p: cpb.Party) -> PartyDraft:
        return PartyDraft(name=p.name, address=p.address, tax_id=p.tax_id)

    return CertificateDraft(
        certificate_number=message.certificate_number,
        issuing_country=message.issuing_country,
        tpl_number=message.tpl_number,
        htsus_number=message.htsus_number,
        goods_description=message.goods_description,
        quantity=message.quantity,
        unit=message.unit,
        importer_of_record=message.importer_of_record,
        exporter=party(message.exporter),
        producer=party(message.producer),
        quota_year=message.quota_year,
        issue_date=message.issue_date,
        last_valid_date=message.last_valid_date,
        invoice_number=message.invoice_number,
    )


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
