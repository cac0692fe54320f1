"""Limits every call meets before its servicer runs: well-formed request bytes, and the deadline.

- Request bytes that do not parse as the method's message (invalid UTF-8 in a string field, a
  wrong wire type, a truncated field) would otherwise surface as gRPC's generic INTERNAL
  "Exception deserializing request!". Here they are INVALID_ARGUMENT with reason REQUEST_MALFORMED.
- A NUL character in any string field is INVALID_ARGUMENT (reason TEXT_HAS_NUL, naming the field):
  no eCERT field has one, and PostgreSQL cannot store or even compare text containing one.
- A Timestamp outside its documented range (years 1 to 9999, nanos 0..999,999,999) is
  INVALID_ARGUMENT (TIMESTAMP_OUT_OF_RANGE): no use case can turn it into a date.
- The caller's deadline (`context.time_remaining()`) is handed to the unit of work
  (server/service/deadline.py), which will not commit once it has passed.

Unary-request methods are guarded; streaming ones (health Watch, reflection) pass through.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status

from server.api.errors import status_for
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from server.domain.errors import DomainError, ErrorKind, Finding
from server.service.deadline import deadline_in

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Malformed:
    """Stands in for a request that failed to parse, so the handler (not gRPC) can answer it."""

    error: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the caller's malformed input
            return _Malformed(f"{type(exc).__name__}: {exc}")

    return deserialize


def malformed_error(method: str) -> DomainError:
    return DomainError(
        "REQUEST_MALFORMED",
        "the request bytes are not a valid message of this method (e.g. invalid UTF-8 in a string field)",
        ErrorKind.INVALID,
        metadata={"method": method},
    )


# google.protobuf.Timestamp's own contract: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
TIMESTAMP = "google.protobuf.Timestamp"


def violation(message: Message, prefix: str = "") -> Finding | None:
    """The first field that no request may carry: text with a NUL, a Timestamp out of its range."""
    for field, value in message.ListFields():
        path = prefix + field.name
        repeated = hasattr(value, "append") or hasattr(value, "add")
        items = list(value) if repeated else [value]
        if field.type == FieldDescriptor.TYPE_STRING:
            if any("\x00" in item for item in items):
                return Finding("TEXT_HAS_NUL", path, "must not contain NUL characters")
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            for index, item in enumerate(items):
                where = f"{path}[{index}]" if repeated else path
                if field.message_type.full_name == TIMESTAMP:
                    low, high = TIMESTAMP_SECONDS
                    if not (low <= item.seconds <= high and 0 <= item.nanos <= 999_999_999):
                        return Finding("TIMESTAMP_OUT_OF_RANGE", where, "must be an instant from year 1 to year 9999")
                else:
                    found = violation(item, where + ".")
                    if found:
                        return found
    return None


def violation_error(finding: Finding) -> DomainError:
    return DomainError(finding.code, f"{finding.field}: {finding.description}", ErrorKind.INVALID, [finding])


class RequestGuard(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary or handler.unary_stream

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                log.info("malformed request to %s: %s", method, request.error)
                context.abort_with_status(rpc_status.to_status(status_for(malformed_error(method))))
            found = violation(request) if isinstance(request, Message) else None
            if found:
                context.abort_with_status(rpc_status.to_status(status_for(violation_error(found))))
            with deadline_in(context.time_remaining()):
                return inner(request, context)

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.unary_stream_rpc_method_handler
        return make(
            guarded,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
