"""Typed wrappers over the three ecert.v1 services: dataclasses in and out, SDK exceptions for errors.

Each wrapper is a mixin over `_Connection`; the role clients (client/sdk/roles.py) combine the ones
a role may call. Nothing here decides anything: the service holds every rule.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.sdk.channel import ConnectionSettings, open_channel
from client.sdk.errors import from_rpc_error
from client.sdk.models import (
    Action,
    ActivityEntry,
    Certificate,
    CertificateStatus,
    CertificateUsage,
    ClaimOutcome,
    ClaimResult,
    EntryLine,
    Issue,
    QuotaEvent,
    QuotaStatus,
    Receipt,
    Reversal,
    ReversalKind,
    StoredCertificate,
    SubmitResult,
    ValidationReport,
)
from contract.constants import REQUEST_ID_HEADER
from contract.envelope import seal
from contract.signing import Signer
from ecert.v1 import clock_pb2 as kpb
from ecert.v1 import clock_pb2_grpc, log_pb2_grpc, match_pb2_grpc, quota_pb2_grpc, transmission_pb2_grpc, usage_pb2_grpc
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb

T = TypeVar("T")


class Stubs:
    """The generated stubs over the SDK's channel (retries, request id), for callers who want protobuf."""

    def __init__(self, channel: grpc.Channel):
        self.transmission = transmission_pb2_grpc.TransmissionServiceStub(channel)
        self.match = match_pb2_grpc.MatchServiceStub(channel)
        self.quota = quota_pb2_grpc.QuotaServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.clock = clock_pb2_grpc.ClockServiceStub(channel)
        self.log = log_pb2_grpc.LogServiceStub(channel)
        self.usage = usage_pb2_grpc.UsageServiceStub(channel)


class _Connection:
    """One channel, default deadlines, and the translation of failed calls into SDK exceptions."""

    def __init__(self, settings: ConnectionSettings | None = None, *, channel: grpc.Channel | None = None, **overrides: Any):
        self.settings = settings or ConnectionSettings.from_env(**overrides)
        self._channel = channel or open_channel(self.settings)
        self.stubs = Stubs(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: Callable[..., T], request: Any, *, timeout: float | None = None, request_id: str = "") -> T:
        """Call a stub method with the default deadline; an RpcError becomes its EcertError subclass."""
        metadata = ((REQUEST_ID_HEADER, request_id),) if request_id else None
        try:
            return method(request, timeout=timeout or self.settings.timeout_s, metadata=metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _pages(self, method: Callable[..., Any], request: Any, items: str, convert: Callable[[Any], T], timeout: float | None) -> Iterator[T]:
        """Follow next_page_token until the last page; each page is its own call with its own deadline."""
        while True:
            page = self.call(method, request, timeout=timeout)
            for item in getattr(page, items):
                yield convert(item)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def is_serving(self, service: str = "", *, timeout: float | None = None) -> bool:
        """gRPC health: the whole server (""), or one service by its full name."""
        response = self.call(self.stubs.health.Check, health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def _stamp(at: dt.datetime | None) -> Timestamp | None:
    if at is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc))
    return stamp


# -- TransmissionService -----------------------------------------------------------------------------


class CertificateReads(_Connection):
    def get_certificate(self, issuing_country: str, certificate_number: str, version: int = 0, *, timeout: float | None = None) -> StoredCertificate:
        request = tpb.GetCertificateRequest(issuing_country=issuing_country, certificate_number=certificate_number, version=version)
        response = self.call(self.stubs.transmission.GetCertificate, request, timeout=timeout)
        stored = StoredCertificate.from_proto(response.certificate)
        stored.signed_bytes, stored.signature, stored.signing_key_id = response.signed_bytes, response.signature, response.signing_key_id
        return stored

    def list_certificates(
        self, issuing_country: str, *, status: Any = None, quota_year: int = 0, tpl_number: str = "",
        page_size: int = 0, timeout: float | None = None,
    ) -> Iterator[StoredCertificate]:
        """Every matching certificate's latest version, fetched page by page as the iterator advances."""
        request = tpb.ListCertificatesRequest(
            issuing_country=issuing_country, page_size=page_size, quota_year=quota_year, tpl_number=tpl_number,
            status=(status or CertificateStatus.UNSPECIFIED).to_proto(),
        )
        return self._pages(self.stubs.transmission.ListCertificates, request, "certificates", StoredCertificate.from_proto, timeout)

    def activity_report(
        self, issuing_country: str, condition: Any, *, quota_year: int = 0, page_size: int = 0, timeout: float | None = None,
    ) -> Iterator[ActivityEntry]:
        """Certificates by eCERT condition (Condition.MATCHED, UNMATCHED, CANCELED), page by page."""
        request = tpb.GetActivityReportRequest(
            issuing_country=issuing_country, condition=condition.to_proto(), quota_year=quota_year, page_size=page_size
        )
        return self._pages(self.stubs.transmission.GetActivityReport, request, "entries", ActivityEntry.from_proto, timeout)


class Transmitting(_Connection):
    """Sending signed envelopes. A partner seals them itself; a relay forwards them untouched."""

    def submit_envelope(self, envelope: tpb.SignedEnvelope, *, timeout: float | None = None, request_id: str = "") -> SubmitResult:
        response = self.call(self.stubs.transmission.SubmitCertificate, tpb.SubmitCertificateRequest(envelope=envelope),
                             timeout=timeout, request_id=request_id)
        return SubmitResult(Receipt.from_proto(response.receipt), StoredCertificate.from_proto(response.certificate), response.replayed,
                            response.log_leaf_hash)

    def validate_envelope(self, envelope: tpb.SignedEnvelope, *, timeout: float | None = None) -> ValidationReport:
        response = self.call(self.stubs.transmission.ValidateCertificate, tpb.ValidateCertificateRequest(envelope=envelope), timeout=timeout)
        return ValidationReport(response.valid, [Issue.from_proto(i) for i in response.issues], response.digest_sha256)


# -- MatchService ------------------------------------------------------------------------------------


class UsageReads(_Connection):
    """A certificate's use by entries: customs, its issuing partner, and the importer it names."""

    def certificate_usage(self, issuing_country: str, certificate_number: str, *, timeout: float | None = None) -> CertificateUsage:
        request = mpb.GetCertificateUsageRequest(issuing_country=issuing_country, certificate_number=certificate_number)
        return CertificateUsage.from_proto(self.call(self.stubs.match.GetCertificateUsage, request, timeout=timeout))


class ClaimReads(_Connection):
    def get_claim(self, entry_number: str, line_number: int, *, timeout: float | None = None) -> ClaimResult:
        request = mpb.GetClaimRequest(entry_number=entry_number, line_number=line_number)
        return ClaimResult.from_proto(self.call(self.stubs.match.GetClaim, request, timeout=timeout).result)

    def check_claim(self, line: EntryLine, *, timeout: float | None = None) -> ClaimResult:
        """The decision a claim would get now; nothing is charged."""
        response = self.call(self.stubs.match.CheckClaim, mpb.CheckClaimRequest(line=line.to_proto()), timeout=timeout)
        return ClaimResult.from_proto(response.result)



class Matching(_Connection):
    """Deciding and charging claims: internal customs systems. Entry number + line is the idempotency key."""

    def match_claim(self, line: EntryLine, *, timeout: float | None = None) -> ClaimOutcome:
        response = self.call(self.stubs.match.MatchClaim, mpb.MatchClaimRequest(line=line.to_proto()), timeout=timeout)
        return ClaimOutcome(ClaimResult.from_proto(response.result), response.replayed)

    def file_post_importation_claim(self, line: EntryLine, *, timeout: float | None = None) -> ClaimOutcome:
        request = mpb.FilePostImportationClaimRequest(line=line.to_proto())
        response = self.call(self.stubs.match.FilePostImportationClaim, request, timeout=timeout)
        return ClaimOutcome(ClaimResult.from_proto(response.result), response.replayed)

    def answer_prorated_offer(
        self, entry_number: str, line_number: int, accepted_quantity: str | int, *, timeout: float | None = None
    ) -> ClaimOutcome:
        """Accept `accepted_quantity` (whole units; 0 declines) of the line's prorated opening offer before
        its `offer_expires_at`; the same answer again replays (`replayed`)."""
        request = mpb.AnswerProratedOfferRequest(entry_number=entry_number, line_number=line_number, accepted_quantity=str(accepted_quantity))
        response = self.call(self.stubs.match.AnswerProratedOffer, request, timeout=timeout)
        return ClaimOutcome(ClaimResult.from_proto(response.result), response.replayed)

    def reverse_claim(
        self, entry_number: str, line_number: int, *, kind: Any = None, corrected_line: EntryLine | None = None,
        reason: str = "", timeout: float | None = None,
    ) -> Reversal:
        """CANCELED by default; CORRECTED when a corrected line is given (decided with the original priority)."""
        kind = kind or (ReversalKind.CORRECTED if corrected_line is not None else ReversalKind.CANCELED)
        request = mpb.ReverseClaimRequest(entry_number=entry_number, line_number=line_number, kind=kind.to_proto(), reason=reason)
        if corrected_line is not None:
            request.corrected_line.CopyFrom(corrected_line.to_proto())
        response = self.call(self.stubs.match.ReverseClaim, request, timeout=timeout)
        corrected = ClaimResult.from_proto(response.corrected) if response.HasField("corrected") else None
        return Reversal(ClaimResult.from_proto(response.reversed), corrected)


# -- QuotaService ------------------------------------------------------------------------------------


class QuotaReads(_Connection):
    def list_quotas(self, quota_year: int = 0, *, as_of: dt.datetime | None = None, timeout: float | None = None) -> list[QuotaStatus]:
        request = qpb.ListQuotasRequest(quota_year=quota_year, as_of=_stamp(as_of))
        return [QuotaStatus.from_proto(q) for q in self.call(self.stubs.quota.ListQuotas, request, timeout=timeout).quotas]

    def quota_status(self, tpl_number: str, quota_year: int = 0, *, as_of: dt.datetime | None = None, timeout: float | None = None) -> QuotaStatus:
        request = qpb.GetQuotaStatusRequest(tpl_number=tpl_number, quota_year=quota_year, as_of=_stamp(as_of))
        return QuotaStatus.from_proto(self.call(self.stubs.quota.GetQuotaStatus, request, timeout=timeout).status)

    def watch_quotas(self, tpl_numbers: tuple[str, ...] = (), quota_year: int = 0) -> Iterator[QuotaEvent]:
        """A snapshot of each level, then its changes as they happen; no deadline. Close the iterator to stop.
        It also ends, without error, when the service's maximum watch duration is reached: watch again."""
        stream = self.stubs.quota.WatchQuotas(qpb.WatchQuotasRequest(tpl_numbers=list(tpl_numbers), quota_year=quota_year))
        try:
            for event in stream:
                yield QuotaEvent.from_proto(event)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise from_rpc_error(error) from None
        finally:
            stream.cancel()


def new_message_id(sender: str) -> str:
    """A fresh idempotency key for a transmission; keep it to retry the same envelope later."""
    return f"{sender}-{uuid.uuid4().hex}"


def unsigned_envelope(
    certificate: Certificate, *, sender: str, action: Any = None, replaces_version: int = 0, message_id: str = "",
) -> tpb.SignedEnvelope:
    return tpb.SignedEnvelope(
        message_id=message_id or new_message_id(sender),
        sender=sender,
        action=(action or Action.CREATE).to_proto(),
        certificate=certificate.to_proto(),
        replaces_version=replaces_version,
    )


def seal_envelope(envelope: tpb.SignedEnvelope, signer: Signer, sent_at: dt.datetime | None = None) -> tpb.SignedEnvelope:
    return seal(envelope, signer, sent_at=sent_at)


# -- ClockService (a service on a simulated clock only) --------------------------------------------------


class ClockDriving(_Connection):
    """A test harness drives a service started with --simulated-clock (admin role under mutual TLS)."""

    def clock_now(self, *, timeout: float | None = None) -> dt.datetime:
        return self.call(self.stubs.clock.GetTime, kpb.GetTimeRequest(), timeout=timeout).now.ToDatetime(tzinfo=dt.timezone.utc)

    def set_clock(self, at: dt.datetime, *, timeout: float | None = None) -> dt.datetime:
        response = self.call(self.stubs.clock.SetTime, kpb.SetTimeRequest(now=_stamp(at)), timeout=timeout)
        return response.now.ToDatetime(tzinfo=dt.timezone.utc)

    def advance_clock(self, by: dt.timedelta, *, timeout: float | None = None) -> dt.datetime:
        duration = Duration()
        duration.FromTimedelta(by)
        response = self.call(self.stubs.clock.AdvanceTime, kpb.AdvanceTimeRequest(by=duration), timeout=timeout)
        return response.now.ToDatetime(tzinfo=dt.timezone.utc)
