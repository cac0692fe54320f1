"""ecert.v1.LogService: requests to the log's use cases (server/service/log.py), results to responses."""
from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ecert.v1 import log_pb2 as lpb
from ecert.v1 import log_pb2_grpc
from server.api.errors import translate_errors
from server.service.log import LogUseCases


def _stamp(at) -> Timestamp:  # type: ignore[no-untyped-def]  # `at` is a datetime, left unannotated
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


class LogServicer(log_pb2_grpc.LogServiceServicer):
    def __init__(self, log: LogUseCases):
        self.log = log

    @translate_errors()
    def GetCheckpoint(self, request: lpb.GetCheckpointRequest, context: grpc.ServicerContext) -> lpb.GetCheckpointResponse:
        stored, note = self.log.checkpoint(request.tree_size)
        return lpb.GetCheckpointResponse(note=note, tree_size=stored.tree_size, root_hash=stored.root_hash,
                                         signed_at=_stamp(stored.signed_at), log_verifier_key=self.log.verifier_key)

    @translate_errors()
    def GetInclusionProof(self, request: lpb.GetInclusionProofRequest, context: grpc.ServicerContext) -> lpb.GetInclusionProofResponse:
        which = request.WhichOneof("leaf")
        index, stored, proof = self.log.inclusion_proof(
            leaf_index=request.leaf_index if which == "leaf_index" else None,
            leaf_hash=request.leaf_hash if which == "leaf_hash" else None, tree_size=request.tree_size)
        return lpb.GetInclusionProofResponse(leaf_index=index, tree_size=stored.tree_size, hashes=proof, checkpoint_note=stored.note)

    @translate_errors()
    def GetConsistencyProof(self, request: lpb.GetConsistencyProofRequest, context: grpc.ServicerContext) -> lpb.GetConsistencyProofResponse:
        stored, proof = self.log.consistency_proof(request.first_size, request.second_size)
        return lpb.GetConsistencyProofResponse(first_size=request.first_size, second_size=stored.tree_size, hashes=proof,
                                               checkpoint_note=stored.note)

    @translate_errors()
    def GetEntries(self, request: lpb.GetEntriesRequest, context: grpc.ServicerContext) -> lpb.GetEntriesResponse:
        rows = self.log.entries(request.start, request.end)
        return lpb.GetEntriesResponse(entries=[lpb.LogEntry(index=i, entry=e, leaf_hash=h) for i, e, h in rows])

    @translate_errors()
    def AddCosignature(self, request: lpb.AddCosignatureRequest, context: grpc.ServicerContext) -> lpb.AddCosignatureResponse:
        size, count = self.log.add_cosignature(request.cosigned_note)
        return lpb.AddCosignatureResponse(tree_size=size, cosignatures=count)
