"""Limits every call meets before its servicer runs: well-formed request bytes, and the deadline.

- Request bytes that do not parse as the method's message (invalid UTF-8 in a string field, a
  wrong wire type, a truncated field) would otherwise surface as gRPC's generic INTERNAL
  "Exception deserializing request!". Here they are INVALID_ARGUMENT with reason REQUEST_MALFORMED.
- A NUL character in any string field is INVALID_ARGUMENT (reason TEXT_HAS_NUL, naming the field):
  no eCERT field has one, and PostgreSQL cannot store or even compare text containing one.
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


def nul_field(message: Message, prefix: str = "") -> str | None:
    """The path of the first string field holding a NUL character, if any."""
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            values = [value] if isinstance(value, str) else list(value)
            if any("\x00" in v for v in values):
                return path
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue
            items = value if hasattr(value, "add") else [value]  # repeated or single
            for index, item in enumerate(items):
                found = nul_field(item, f"{path}[{index}]." if hasattr(value, "add") else f"{path}.")
                if found:
                    return found
    return None


def nul_error(path: str) -> DomainError:
    finding = Finding("TEXT_HAS_NUL", path, "must not contain NUL characters")
    return DomainError(finding.code, f"{path} contains a NUL character", ErrorKind.INVALID, [finding])


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
            if isinstance(request, Message):
                path = nul_field(request)
                if path:
                    context.abort_with_status(rpc_status.to_status(status_for(nul_error(path))))
            with deadline_in(context.time_remaining()):
                return inner(request, context)

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.unary_stream_rpc_method_handler
        return make(
            guarded,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
