"""What a claim's transparency-log entries say about it (DECISION, ALLOCATION; contract/log_entry.py)."""
from __future__ import annotations

from contract.log_entry import claim_subject
from server.domain.quantity import format_quantity
from server.domain.records import ClaimRecord


def subject(record: ClaimRecord) -> str:
    return claim_subject(record.entry_number, record.line_number, record.revision)


def facts(record: ClaimRecord) -> dict[str, object]:
    named: dict[str, object] = {
        "claim_id": record.claim_id,
        "decision": record.decision,
        "reasons": list(record.reasons),
        "certificate": f"{record.issuing_country}/{record.certificate_number}@{record.certificate_version}",
        "certificate_receipt": record.certificate_receipt_id,
        "certificate_digest": record.certificate_digest,
        "tpl": f"{record.tpl_number}/{record.quota_year}",
        # Canonical text ("600", never "600.0" or "6E+2"), whichever path computed or read the value.
        "claimed": f"{format_quantity(record.claimed_quantity)} {record.unit}",
        "granted": f"{format_quantity(record.granted_quantity)} {record.unit}",
        "granted_measure": f"{format_quantity(record.granted_measure)} {record.measure_unit}",
        "factor": f"{record.conversion_factor}@{record.factor_version}",
        "presented": record.presentation_time.isoformat(),
        "proration_rate": record.proration_rate,
    }
    if record.offer_expires_at is not None:
        # An offer's deadline (CSMS 16-000886: five business days): proof of when its lapse was due.
        named["offer_expires"] = record.offer_expires_at.isoformat()
    if record.batch_cutoff is not None:
        named["batch_cutoff"] = record.batch_cutoff.isoformat()  # which daily batch decided it (README "Near fill")
    return named
