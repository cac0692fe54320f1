"""Limits every call meets before its servicer runs: well-formed request bytes, and the deadline.

- Request bytes that do not parse as the method's message (invalid UTF-8 in a string field, a
  wrong wire type, a truncated field) would otherwise surface as gRPC's generic INTERNAL
  "Exception deserializing request!". Here they are INVALID_ARGUMENT with reason REQUEST_MALFORMED.
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
from server.domain.errors import DomainError, ErrorKind
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
            with deadline_in(context.time_remaining()):
                return inner(request, context)

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.unary_stream_rpc_method_handler
        return make(
            guarded,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
