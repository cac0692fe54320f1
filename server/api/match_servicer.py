"""ecert.v1.MatchService: requests to use cases, results to responses."""
from __future__ import annotations

from collections.abc import Sequence

import grpc

from contract.log_entry import CLAIM_KINDS, claim_subject
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from server.adapters.claim_repository import RecordedEntry
from server.api import claim_converters as conv
from server.api.errors import translate_errors
from server.domain.records import ClaimRecord
from server.service.claims import ClaimUseCases
from server.service.log import LogUseCases
from server.service.unit_of_work import collect_committed_entries


class MatchServicer(match_pb2_grpc.MatchServiceServicer):
    def __init__(self, claims: ClaimUseCases, log: LogUseCases | None = None):
        self.claims = claims
        self.log = log

    def _result(self, record: ClaimRecord, committed: Sequence[RecordedEntry] = ()) -> mpb.ClaimResult:
        """The claim as answered, with the leaf hash of its latest entry in the transparency log: the one
        this call committed, if it did, else read back (a replay, a read)."""
        result = conv.claim_to_proto(record)
        subject = claim_subject(record.entry_number, record.line_number, record.revision)
        mine = [e for e in committed if e.subject == subject and e.kind in CLAIM_KINDS]
        if mine:
            result.log_leaf_hash = mine[-1].leaf_hash
        elif self.log is not None:
            result.log_leaf_hash = self.log.claim_leaf(record)
        return result

    @translate_errors()
    def MatchClaim(self, request: mpb.MatchClaimRequest, context: grpc.ServicerContext) -> mpb.MatchClaimResponse:
        with collect_committed_entries() as committed:
            record, replayed = self.claims.match(conv.line_from_proto(request.line))
        return mpb.MatchClaimResponse(result=self._result(record, committed), replayed=replayed)

    @translate_errors()
    def CheckClaim(self, request: mpb.CheckClaimRequest, context: grpc.ServicerContext) -> mpb.CheckClaimResponse:
        return mpb.CheckClaimResponse(result=conv.claim_to_proto(self.claims.check(conv.line_from_proto(request.line))))

    @translate_errors()
    def FilePostImportationClaim(
        self, request: mpb.FilePostImportationClaimRequest, context: grpc.ServicerContext
    ) -> mpb.FilePostImportationClaimResponse:
        with collect_committed_entries() as committed:
            record, replayed = self.claims.file_post_importation(conv.line_from_proto(request.line))
        return mpb.FilePostImportationClaimResponse(result=self._result(record, committed), replayed=replayed)

    @translate_errors()
    def ReverseClaim(self, request: mpb.ReverseClaimRequest, context: grpc.ServicerContext) -> mpb.ReverseClaimResponse:
        corrected = conv.line_from_proto(request.corrected_line, "corrected_line") if request.HasField("corrected_line") else None
        with collect_committed_entries() as committed:
            reversed_record, corrected_record, _ = self.claims.reverse(
                request.entry_number, request.line_number, conv.REVERSAL_FROM_PROTO.get(request.kind), corrected, request.reason
            )
        response = mpb.ReverseClaimResponse(reversed=self._result(reversed_record, committed))
        if corrected_record is not None:
            response.corrected.CopyFrom(self._result(corrected_record, committed))
        return response

    @translate_errors()
    def GetClaim(self, request: mpb.GetClaimRequest, context: grpc.ServicerContext) -> mpb.GetClaimResponse:
        return mpb.GetClaimResponse(result=self._result(self.claims.get(request.entry_number, request.line_number)))

    @translate_errors()
    def AnswerProratedOffer(
        self, request: mpb.AnswerProratedOfferRequest, context: grpc.ServicerContext
    ) -> mpb.AnswerProratedOfferResponse:
        with collect_committed_entries() as committed:
            record, replayed = self.claims.answer_offer(request.entry_number, request.line_number, request.accepted_quantity)
        return mpb.AnswerProratedOfferResponse(result=self._result(record, committed), replayed=replayed)

    @translate_errors()
    def GetCertificateUsage(
        self, request: mpb.GetCertificateUsageRequest, context: grpc.ServicerContext
    ) -> mpb.GetCertificateUsageResponse:
        return conv.usage_to_proto(self.claims.usage(request.issuing_country, request.certificate_number))
