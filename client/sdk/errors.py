"""Failed calls as Python exceptions: one class per gRPC status code (after google-api-core).

Each exception carries what the service packed into `google.rpc.Status` details: the `ErrorInfo`
reason and metadata, `BadRequest` field violations, and, for a rejected transmission, customs'
signed rejection receipt. Callers branch on the class or on `reason`, never on message text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from contract.constants import ERROR_DOMAIN as ERROR_DOMAIN  # named here for the SDK's users
from contract.constants import REQUEST_ID_HEADER


@dataclass(frozen=True)
class FieldViolation:
    field: str
    reason: str
    description: str


class EcertError(Exception):
    """Base of every error the SDK raises for a failed call."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: list[FieldViolation] | None = None,
        receipt: Any = None,
        request_id: str = "",
        cause: grpc.RpcError | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations or [])
        self.receipt = receipt  # client.sdk.models.Receipt of a rejected transmission, else None
        self.request_id = request_id
        self.cause = cause

    @property
    def code_name(self) -> str:
        return self.code.name

    def __str__(self) -> str:
        head = f"{self.code.name}"
        if self.reason:
            head += f" {self.reason}"
        return f"{head}: {self.message}" if self.message else head


class Cancelled(EcertError):
    code = grpc.StatusCode.CANCELLED


class Unknown(EcertError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(EcertError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(EcertError):
    """The call's deadline passed: the outcome is unknown. The service may have committed just
    before the answer was lost or came too late (with reason DEADLINE_EXCEEDED the service itself
    says it stored nothing). Retry with the same request: transmissions are deduplicated by message
    id and claims by entry number and line, so a replay returns the original outcome (`replayed`)
    and nothing is stored or charged twice."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(EcertError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EcertError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(EcertError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(EcertError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(EcertError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(EcertError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(EcertError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(EcertError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(EcertError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(EcertError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(EcertError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(EcertError):
    code = grpc.StatusCode.UNAUTHENTICATED


ERROR_CLASSES: dict[grpc.StatusCode, type[EcertError]] = {
    cls.code: cls
    for cls in (
        Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists, PermissionDenied,
        ResourceExhausted, FailedPrecondition, Aborted, OutOfRange, Unimplemented, Internal, Unavailable,
        DataLoss, Unauthenticated,
    )
}


def _metadata_value(call: Any, key: str) -> str:
    for getter in ("trailing_metadata", "initial_metadata"):
        try:
            pairs = getattr(call, getter)() or ()
        except Exception:  # a call that never reached the server has no metadata
            continue
        for k, v in pairs:
            if k == key:
                return v if isinstance(v, str) else v.decode()
    return ""


def from_rpc_error(error: grpc.RpcError) -> EcertError:
    """Build the exception of the error's status code, with its rich details unpacked."""
    from ecert.v1 import transmission_pb2 as tpb

    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    fields: dict[str, Any] = {"request_id": _metadata_value(error, REQUEST_ID_HEADER), "cause": error}
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # code or message disagree with the details: keep the plain status
        status = None
    violations: list[FieldViolation] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            fields.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, getattr(v, "reason", ""), v.description) for v in bad.field_violations]
        elif detail.Is(tpb.Receipt.DESCRIPTOR):
            from client.sdk.models import Receipt

            receipt = tpb.Receipt()
            detail.Unpack(receipt)
            fields["receipt"] = Receipt.from_proto(receipt)
    cls = ERROR_CLASSES.get(code, Unknown)
    return cls(message or "", field_violations=violations, **fields)
