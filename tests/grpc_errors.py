"""Reading google.rpc rich error details out of a failed call, for assertions."""
from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ecert.v1 import transmission_pb2 as tpb


@dataclass
class RichError:
    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)  # field path -> violation reason (or description)
    receipt: tpb.Receipt | None = None


def rich_error(error: grpc.RpcError) -> RichError:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    result = RichError(error.code(), "", {})
    if status is None:
        return result
    for detail in status.details:
        target: Message
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            target = error_details_pb2.ErrorInfo()
            detail.Unpack(target)
            result.reason, result.metadata = target.reason, dict(target.metadata)
            assert target.domain == "ecert"
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            target = error_details_pb2.BadRequest()
            detail.Unpack(target)
            for v in target.field_violations:
                result.fields[v.field] = getattr(v, "reason", "") or v.description
        elif detail.Is(tpb.Receipt.DESCRIPTOR):
            result.receipt = tpb.Receipt()
            detail.Unpack(result.receipt)
    return result
