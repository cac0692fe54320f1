"""From errors to gRPC statuses: one table, rich details (AIP-193), nothing else leaks.

The errors are the wire contract's (contract/errors.py); a status carries the reason in an ErrorInfo of
the contract's error domain, the findings as BadRequest field violations.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from contract.constants import ERROR_DOMAIN
from contract.errors import DomainError, ErrorKind

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the incident was logged"

STATUS_OF_KIND: dict[ErrorKind, tuple[grpc.StatusCode, int]] = {
    ErrorKind.INVALID: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    ErrorKind.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    ErrorKind.ALREADY_EXISTS: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    ErrorKind.PRECONDITION: (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    ErrorKind.CONFLICT: (grpc.StatusCode.ABORTED, code_pb2.ABORTED),
    ErrorKind.PERMISSION: (grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
    ErrorKind.EXHAUSTED: (grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    ErrorKind.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
    ErrorKind.UNAUTHENTICATED: (grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    ErrorKind.DEADLINE: (grpc.StatusCode.DEADLINE_EXCEEDED, code_pb2.DEADLINE_EXCEEDED),
}


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_for(error: DomainError, *, field_prefix: str = "", extra: list[Message] | None = None) -> status_pb2.Status:
    _, code = STATUS_OF_KIND[error.kind]
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata))]
    if error.findings:
        bad = error_details_pb2.BadRequest()
        for finding in error.findings:
            violation = bad.field_violations.add(field=field_prefix + finding.field, description=finding.description)
            if hasattr(violation, "reason"):
                violation.reason = finding.code
        details.append(_pack(bad))
    details.extend(_pack(m) for m in extra or [])
    return status_pb2.Status(code=code, message=error.message, details=details)


F = TypeVar("F", bound=Callable[..., Any])


def translate_errors(field_prefix: str = "", evidence: Callable[[DomainError], list[Message]] | None = None) -> Callable[[F], F]:
    """Decorate a servicer method: domain errors become rich statuses, anything else a bare INTERNAL."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return method(self, request, context)
            except DomainError as error:
                extra = evidence(error) if evidence else None
                context.abort_with_status(rpc_status.to_status(status_for(error, field_prefix=field_prefix, extra=extra)))
            except Exception:
                if context.code() is not None and context.code() != grpc.StatusCode.OK:
                    raise  # already aborted by abort_with_status: let gRPC finish it
                log.exception("unhandled error in %s", method.__qualname__)
                context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

        return wrapper  # type: ignore[return-value]  # functools.wraps keeps the handler's signature

    return decorate
