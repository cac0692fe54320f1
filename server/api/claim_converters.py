"""Protobuf <-> domain for claims and quota."""
from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import quota_pb2 as qpb
from server.api.converters import instant_from, message_from, timestamp
from server.domain.claims import Decision
from server.domain.entry import EntryLineDraft
from server.domain.quantity import format_quantity
from server.domain.quota import QuotaEventKind, QuotaState, quota_period
from server.domain.records import ClaimRecord
from server.service.claims import CertificateUsage, ReversalKind
from server.service.quota import QuotaEvent, QuotaStatus

DECISION_TO_PROTO = {
    Decision.PREFERENTIAL.value: mpb.CLAIM_DECISION_PREFERENTIAL,
    Decision.PARTIAL.value: mpb.CLAIM_DECISION_PARTIAL,
    Decision.MFN_REQUIRED.value: mpb.CLAIM_DECISION_MFN_REQUIRED,
    Decision.ECERT_NOT_REQUIRED.value: mpb.CLAIM_DECISION_ECERT_NOT_REQUIRED,
    Decision.QUEUED.value: mpb.CLAIM_DECISION_QUEUED,
    Decision.PRORATED_OFFER.value: mpb.CLAIM_DECISION_PRORATED_OFFER,
    Decision.PENDING.value: mpb.CLAIM_DECISION_PENDING,
}
REVERSAL_FROM_PROTO = {mpb.REVERSAL_KIND_CANCELED: ReversalKind.CANCELED, mpb.REVERSAL_KIND_CORRECTED: ReversalKind.CORRECTED}
STATE_TO_PROTO = {
    QuotaState.OPEN: qpb.QUOTA_STATE_OPEN,
    QuotaState.CRITICAL: qpb.QUOTA_STATE_CRITICAL,
    QuotaState.FILLED: qpb.QUOTA_STATE_FILLED,
    QuotaState.CLOSED: qpb.QUOTA_STATE_CLOSED,
    QuotaState.ON_HOLD: qpb.QUOTA_STATE_ON_HOLD,
}
EVENT_TO_PROTO = {
    None: qpb.QUOTA_EVENT_KIND_SNAPSHOT,
    QuotaEventKind.BECAME_CRITICAL: qpb.QUOTA_EVENT_KIND_BECAME_CRITICAL,
    QuotaEventKind.FILLED: qpb.QUOTA_EVENT_KIND_FILLED,
    QuotaEventKind.REOPENED: qpb.QUOTA_EVENT_KIND_REOPENED,
    QuotaEventKind.CHARGED: qpb.QUOTA_EVENT_KIND_CHARGED,
    QuotaEventKind.ON_HOLD: qpb.QUOTA_EVENT_KIND_ON_HOLD,
}


def _instant(message: mpb.EntrySummaryLine, name: str, prefix: str) -> dt.datetime | None:
    if not message.HasField(name):
        return None
    stamp: Timestamp = getattr(message, name)
    return instant_from(stamp, f"{prefix}.{name}")


def line_from_proto(m: mpb.EntrySummaryLine, prefix: str = "line") -> EntryLineDraft:
    return EntryLineDraft(
        entry_number=m.entry_number,
        line_number=m.line_number,
        filer_code=m.filer_code,
        importer_of_record=m.importer_of_record,
        entry_type=m.entry_type,
        country_of_origin=m.country_of_origin,
        htsus_number=m.htsus_number,
        tpl_number=m.tpl_number,
        spi=m.spi,
        certificate_number=m.certificate_number,
        quantity=m.quantity,
        unit=m.unit,
        date_of_importation=m.date_of_importation,
        filed_at=_instant(m, "filed_at", prefix),
        arrived_at=_instant(m, "arrived_at", prefix),
        paid_at=_instant(m, "paid_at", prefix),
    )


def _q(value) -> str:  # type: ignore[no-untyped-def]  # `value` is a quantity (Decimal) or None
    return "" if value is None else format_quantity(value)


def claim_to_proto(c: ClaimRecord) -> mpb.ClaimResult:
    return mpb.ClaimResult(
        claim_id=c.claim_id,
        entry_number=c.entry_number,
        line_number=c.line_number,
        decision=DECISION_TO_PROTO[c.decision],
        reasons=list(c.reasons),
        mismatches=[mpb.FieldMismatch(field=f, claimed=cl, transmitted=tr) for f, cl, tr in c.mismatches],
        tpl_number=c.tpl_number,
        quota_year=c.quota_year,
        claimed_quantity=_q(c.claimed_quantity),
        unit=c.unit,
        claimed_measure=_q(c.claimed_measure),
        measure_unit=c.measure_unit,
        conversion_factor=c.conversion_factor,
        factor_version=c.factor_version,
        granted_quantity=_q(c.granted_quantity),
        granted_measure=_q(c.granted_measure),
        mfn_quantity=_q(c.mfn_quantity),
        mfn_measure=_q(c.mfn_measure),
        certificate_remaining=_q(c.certificate_remaining),
        level_remaining=_q(c.level_remaining),
        aggregate_remaining=_q(c.aggregate_remaining),
        presentation_time=timestamp(c.presentation_time),
        decided_at=timestamp(c.decided_at),
        post_importation=c.post_importation,
        reversed=c.reversed_at is not None,
        proration_rate=c.proration_rate,
        certificate_version=c.certificate_version,
        certificate_receipt_id=c.certificate_receipt_id,
        certificate_digest=c.certificate_digest,
        offer_expires_at=timestamp(c.offer_expires_at) if c.offer_expires_at else None,
        batch_cutoff=timestamp(c.batch_cutoff) if c.batch_cutoff else None,
    )


def usage_to_proto(u: CertificateUsage) -> mpb.GetCertificateUsageResponse:
    return message_from(
        mpb.GetCertificateUsageResponse, u,
        remaining_quantity=_q(u.quantity - u.used_quantity),
        uses=[
            message_from(mpb.CertificateUse, c, granted_quantity=_q(c.held_on_certificate), reversed=c.reversed_at is not None)
            for c in u.uses
        ],
    )


def status_to_proto(s: QuotaStatus) -> qpb.QuotaStatus:
    level = s.level
    first_day, last_day = quota_period(level.quota_year)
    return qpb.QuotaStatus(
        tpl_number=level.tpl_number,
        label=level.label,
        quota_year=level.quota_year,
        measure_unit=level.measure_unit,
        limit=_q(level.limit),
        charged=_q(level.charged),
        remaining=_q(level.remaining),
        fill_share=_q(level.fill_share),
        state=STATE_TO_PROTO[s.state],
        period_start=first_day.isoformat(),
        period_end=last_day.isoformat(),
        aggregate_tpl_number=level.aggregate or "",
        as_of=timestamp(s.as_of),
        held_since=timestamp(level.held_since) if level.held_since else None,
        next_batch_at=timestamp(s.next_batch_at) if s.next_batch_at else None,
    )


def event_to_proto(e: QuotaEvent) -> qpb.QuotaEvent:
    return qpb.QuotaEvent(kind=EVENT_TO_PROTO[e.kind], status=status_to_proto(e.status), at=timestamp(e.status.as_of))
