"""An internal customs client filing entry summary lines against what the gateway certified.

Used by `ecert demo`: matching claims, deliberate mismatches, a claim with no transmission, a claim
on a canceled certificate, and two large yarn shipments that together exceed TPL 6 (the second would
pass the level's critical share, so it waits, PENDING, for the daily cutoff batch that decides claims
near fill in presentation order; `ecert demo --opening-day` plays such a batch on a simulated clock). It works from the gateway's register, as a broker works from the paper it received.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

import grpc

from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import quota_pb2_grpc

# HTSUS numbers (prefixes) of catalog goods the packaged SME conversion table converts: it maps
# 10-digit statistical lines, so 6203.31.0010 (suit jackets) and 6204.61.9010 (wool trousers), whose
# lines or categories have no factor there, are left out; claims on them would be refused.
CONVERTIBLE = ("6105", "6109", "6110", "6203424511", "6204628011", "6205", "6206", "60", "5205")
DECISIONS = {
    mpb.CLAIM_DECISION_PREFERENTIAL: "granted",
    mpb.CLAIM_DECISION_PARTIAL: "partial",
    mpb.CLAIM_DECISION_MFN_REQUIRED: "MFN",
    mpb.CLAIM_DECISION_ECERT_NOT_REQUIRED: "eCERT not required",
    mpb.CLAIM_DECISION_QUEUED: "queued",
    mpb.CLAIM_DECISION_PRORATED_OFFER: "prorated offer",
    mpb.CLAIM_DECISION_PENDING: "pending",
}


@dataclass
class ClaimsReport:
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # what, decision, reasons
    decisions: Counter[str] = field(default_factory=Counter)
    quotas: list[qpb.QuotaStatus] = field(default_factory=list)


def serves(channel: grpc.Channel, service: str) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    except grpc.RpcError:
        return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


class ClaimsPlayer:
    def __init__(self, channel: grpc.Channel, *, filer: str = "B7Q", first_transaction: int = 1000):
        self.match = match_pb2_grpc.MatchServiceStub(channel)
        self.quota = quota_pb2_grpc.QuotaServiceStub(channel)
        self.filer = filer
        self.transaction = first_transaction
        self.report = ClaimsReport()

    def line(self, certificate: cpb.Certificate, **changes: str) -> mpb.EntrySummaryLine:
        from contract.entry_number import make_entry_number

        self.transaction += 1
        now = dt.datetime.now(dt.timezone.utc)
        line = mpb.EntrySummaryLine(
            entry_number=make_entry_number(self.filer, self.transaction), line_number=1, filer_code=self.filer,
            importer_of_record=certificate.importer_of_record, entry_type="02", country_of_origin=certificate.issuing_country,
            htsus_number=certificate.htsus_number, tpl_number=certificate.tpl_number, spi="S+",
            certificate_number=certificate.certificate_number, quantity=certificate.quantity, unit=certificate.unit,
            date_of_importation=now.date().isoformat(),
        )
        for stamp in (line.filed_at, line.arrived_at, line.paid_at):
            stamp.FromDatetime(now)
        for name, value in changes.items():
            setattr(line, name, value)
        return line

    def file(self, what: str, line: mpb.EntrySummaryLine) -> None:
        try:
            result = self.match.MatchClaim(mpb.MatchClaimRequest(line=line), timeout=10).result
        except grpc.RpcError as error:
            self.report.lines.append((what, f"refused: {error.code().name}", error.details() or ""))
            self.report.decisions["refused"] += 1
            return
        decision = DECISIONS.get(result.decision, str(result.decision))
        granted = f"{result.granted_quantity} of {result.claimed_quantity} {result.unit}" if result.granted_quantity else ""
        self.report.lines.append((what, f"{decision} {granted}".strip(), ", ".join(result.reasons)))
        self.report.decisions[decision] += 1

    def play(self, active: list[cpb.Certificate], canceled: list[cpb.Certificate], large_yarn: list[cpb.Certificate], quota_year: int) -> ClaimsReport:
        convertible = [c for c in active if c.htsus_number.replace(".", "").startswith(CONVERTIBLE) and c not in large_yarn]
        for certificate in convertible[:8]:
            self.file(f"{certificate.certificate_number} as certified", self.line(certificate))
        if len(convertible) > 9:
            other = convertible[8]
            self.file(f"{other.certificate_number} by another importer", self.line(other, importer_of_record="98-000000100"))
            self.file(f"{convertible[9].certificate_number} with other goods", self.line(convertible[9], htsus_number="6109.90.1007"))
        if convertible:
            first = convertible[0]
            self.file(f"{first.certificate_number} again (already used)", self.line(first))
            self.file("a certificate Mexico never transmitted", self.line(first, certificate_number="MX26-99999999"))
        for certificate in canceled[:1]:
            self.file(f"{certificate.certificate_number} (canceled)", self.line(certificate))
        for certificate in large_yarn:
            self.file(f"{certificate.certificate_number} large yarn shipment", self.line(certificate))
        self.report.quotas = list(self.quota.ListQuotas(qpb.ListQuotasRequest(quota_year=quota_year), timeout=10).quotas)
        return self.report
