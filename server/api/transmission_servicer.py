"""ecert.v1.TransmissionService: requests to use cases, results to responses."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from ecert.v1 import log_pb2 as lpb
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from server.api import converters as conv
from server.api.errors import translate_errors
from server.domain.errors import DomainError
from server.service.transmissions import Page, TransmissionRejected, TransmissionUseCases


# A list answer carries at most this many bytes of items, well below the 4 MiB message limit
# (server/app.py): a page of long certificates is cut short, with a token that continues after the
# last item sent, instead of failing with RESOURCE_EXHAUSTED.
MAX_PAGE_BYTES = 3 * 1024 * 1024
M = TypeVar("M", bound=Message)
T = TypeVar("T")


def fit_page(page: Page[T], to_proto: Callable[[T], M], budget: int = MAX_PAGE_BYTES) -> tuple[list[M], str]:
    """The page's items as messages, as many as fit in `budget` bytes (at least one), and the token
    of the next page."""
    messages: list[M] = []
    used = 0
    for index, item in enumerate(page.items):
        message = to_proto(item)
        used += message.ByteSize() + 8  # the item's bytes plus its field tag and length
        if used > budget and messages:
            return messages, page.token_after(index - 1)
        messages.append(message)
    return messages, page.next_page_token


def _rejection_receipt(error: DomainError) -> list[Message]:
    """The signed rejection receipt, and its transparency-log entry (bytes and leaf hash)."""
    if not isinstance(error, TransmissionRejected):
        return []
    details: list[Message] = [conv.receipt_to_proto(error.receipt)]
    if error.log_entry is not None:
        details.append(lpb.LogEntry(index=-1, entry=error.log_entry.data, leaf_hash=error.log_entry.leaf_hash))
    return details


class TransmissionServicer(transmission_pb2_grpc.TransmissionServiceServicer):
    def __init__(self, use_cases: TransmissionUseCases):
        self.use_cases = use_cases

    @translate_errors(field_prefix="envelope.", evidence=_rejection_receipt)
    def SubmitCertificate(self, request: tpb.SubmitCertificateRequest, context: grpc.ServicerContext) -> tpb.SubmitCertificateResponse:
        result = self.use_cases.submit(conv.envelope_from_proto(request.envelope))
        return tpb.SubmitCertificateResponse(
            receipt=conv.receipt_to_proto(result.receipt),
            certificate=conv.stored_to_proto(result.certificate),
            replayed=result.replayed,
            log_leaf_hash=result.log_leaf_hash,
        )

    @translate_errors(field_prefix="envelope.")
    def ValidateCertificate(self, request: tpb.ValidateCertificateRequest, context: grpc.ServicerContext) -> tpb.ValidateCertificateResponse:
        report = self.use_cases.validate(conv.envelope_from_proto(request.envelope))
        return tpb.ValidateCertificateResponse(
            valid=report.valid,
            issues=[conv.issue_to_proto(f, "envelope.") for f in report.findings],
            digest_sha256=report.digest,
        )

    @translate_errors()
    def GetCertificate(self, request: tpb.GetCertificateRequest, context: grpc.ServicerContext) -> tpb.GetCertificateResponse:
        stored = self.use_cases.get(request.issuing_country, request.certificate_number, request.version)
        response = tpb.GetCertificateResponse(certificate=conv.stored_to_proto(stored))
        if stored.evidence is not None:
            response.signed_bytes = stored.evidence.signed_bytes
            response.signature = stored.evidence.signature
            response.signing_key_id = stored.evidence.key_id
        return response

    @translate_errors()
    def ListCertificates(self, request: tpb.ListCertificatesRequest, context: grpc.ServicerContext) -> tpb.ListCertificatesResponse:
        page = self.use_cases.list(
            request.issuing_country,
            page_size_requested=request.page_size,
            page_token=request.page_token,
            status=conv.STATUS_FROM_PROTO.get(request.status),
            quota_year=request.quota_year,
            tpl_number=request.tpl_number,
        )
        certificates, token = fit_page(page, conv.stored_to_proto)
        return tpb.ListCertificatesResponse(certificates=certificates, next_page_token=token)

    @translate_errors()
    def GetActivityReport(self, request: tpb.GetActivityReportRequest, context: grpc.ServicerContext) -> tpb.GetActivityReportResponse:
        page = self.use_cases.activity_report(
            request.issuing_country,
            condition=request.condition,
            quota_year=request.quota_year,
            page_size_requested=request.page_size,
            page_token=request.page_token,
        )
        entries, token = fit_page(page, conv.activity_to_proto)
        return tpb.GetActivityReportResponse(entries=entries, next_page_token=token)
