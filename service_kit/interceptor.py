"""Per-call observability: the request id, one structured log line, and the RPC metrics.

The synchronous server-interceptor API only hands over the method handler, so the interceptor
wraps the handler's behaviour: it sees the request, the response or the exception, and the status
code the servicer set (abort_with_status leaves it on the context). It is the outermost
interceptor, so refusals by the authorizer are logged and counted too.

What it counts is the process's own (the service's ServiceMetrics, server/observability/metrics.py):
anything with an `in_flight` gauge and an `observe_call` method. The rich details it unpacks from an
error status are ErrorInfo and BadRequest, and whatever message types the process names besides (the
service: the Receipt of a rejected transmission).

When the process is traced (service_kit/tracing.py) each call is a SERVER span, a child of
the caller's when its metadata carries W3C trace context, and the call's request id is the trace id
unless the caller sent its own `x-request-id`: one grep of it finds every hop of a traced request.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from contract.constants import REQUEST_ID_HEADER
from service_kit import tracing
from service_kit.logs import REQUEST_ID_PATTERN, accept_request_id, request_id_var
from service_kit.wrapping import Idle, WrappedHandlers

log = logging.getLogger("ecert.rpc")

SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNAVAILABLE}
STATUS_DETAILS_KEY = "grpc-status-details-bin"
DETAIL_TYPES: tuple[type[Message], ...] = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest)


class CallMetrics(Protocol):
    """What the interceptor reports to: RPCs in flight, and each finished call."""

    @property
    def in_flight(self) -> Any: ...  # a prometheus_client Gauge

    def observe_call(self, method: str, code: str, seconds: float, response: Any, details: list[Any]) -> None: ...


def _details(context: grpc.ServicerContext, kinds: Sequence[type[Message]]) -> list[Message]:
    """The rich error details the servicer attached (ErrorInfo, BadRequest, ...), unpacked."""
    raw = next((v for k, v in (context.trailing_metadata() or ()) if k == STATUS_DETAILS_KEY), None)
    if raw is None:
        return []
    status = status_pb2.Status.FromString(raw)
    found: list[Message] = []
    for any_detail in status.details:
        for kind in kinds:
            if any_detail.Is(kind.DESCRIPTOR):
                message = kind()
                any_detail.Unpack(message)
                found.append(message)
    return found


def _peer_subject(context: grpc.ServicerContext) -> str:
    certificates = context.auth_context().get("x509_common_name") or []
    return bytes(certificates[0]).decode(errors="replace") if certificates else ""


def _request_id(metadata: Any, call: tracing.ServerCall | None) -> str:
    """The caller's x-request-id (the last one, if sent twice) when it is usable, else the call's trace
    id when it is traced, else a fresh id."""
    incoming = None
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER:
            incoming = value
    if call is not None and not (isinstance(incoming, str) and REQUEST_ID_PATTERN.fullmatch(incoming)):
        return call.trace_id()
    return accept_request_id(incoming if isinstance(incoming, str) else None)


class ObservabilityInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, metrics: CallMetrics | None = None, *, detail_types: Sequence[type[Message]] = ()):
        self.metrics = metrics
        self.detail_types = (*DETAIL_TYPES, *detail_types)
        self._wrapped = WrappedHandlers(self._wrap)

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]  # grpc interceptor hook: grpc is untyped
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        # The request id is read from the call's own metadata when it runs (service_kit/wrapping.py).
        return self._wrapped(handler, handler_call_details.method)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        serializers = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, method), **serializers)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self._stream(handler.unary_stream, method), **serializers)
        return handler  # no client-streaming RPCs in ecert.v1

    def refused(self, method: str, metadata: Any, peer: str, caller: str, code: grpc.StatusCode,
                info: error_details_pb2.ErrorInfo, seconds: float) -> str:
        """A call the serving layer answered before any worker ran it (the service's server/api/serving.py:
        a caller over its share, a role that may not call the method, a request that never arrived):
        counted and logged like every other call. Returns the call's request id, for its trailers."""
        request_id = _request_id(metadata, None)
        if self.metrics:
            self.metrics.observe_call(method, code.name, seconds, None, [info])
        level = logging.ERROR if code in SERVER_FAULTS else logging.INFO
        if log.isEnabledFor(level):
            fields = {"request_id": request_id, "method": method, "code": code.name, "duration_ms": round(seconds * 1000, 3),
                      "peer": peer, "reason": info.reason}
            if caller:
                fields["caller"] = caller
            log.log(level, "rpc %s %s", method, code.name, extra=fields)
        return request_id

    def _begin(self, context: grpc.ServicerContext, method: str) -> tuple[Any, tracing.ServerCall | None]:
        metadata = context.invocation_metadata()
        call = tracing.ServerCall(method, metadata) if tracing.enabled() else None
        token = request_id_var.set(_request_id(metadata, call))
        if self.metrics:
            self.metrics.in_flight.inc()
        return token, call

    def _finish(
        self, method: str, context: grpc.ServicerContext, started: float, response: Any, failed: bool, token: Any,
        call: tracing.ServerCall | None, *, cancelled: bool = False, error: BaseException | None = None, **extra: Any,
    ) -> None:
        code = grpc.StatusCode.UNKNOWN
        try:
            # Echoed in the trailers, which go out with the status anyway (an early header send costs a
            # round of the core's batch per call); kept beside any details the servicer attached.
            context.set_trailing_metadata((*(context.trailing_metadata() or ()), (REQUEST_ID_HEADER, request_id_var.get())))
            code = context.code() or (
                grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
            )
            seconds = time.perf_counter() - started
            details = _details(context, self.detail_types) if code != grpc.StatusCode.OK else []
            if self.metrics:
                self.metrics.in_flight.dec()
                self.metrics.observe_call(method, code.name, seconds, response if code == grpc.StatusCode.OK else None, details)
            level = logging.ERROR if code in SERVER_FAULTS else logging.INFO
            if log.isEnabledFor(level):  # the peer and the fields only for a line that is written
                fields = {
                    "request_id": request_id_var.get(),
                    "method": method,
                    "code": code.name,
                    "duration_ms": round(seconds * 1000, 3),
                    "peer": context.peer(),
                }
                if subject := _peer_subject(context):
                    fields["caller"] = subject
                info = next((d for d in details if isinstance(d, error_details_pb2.ErrorInfo)), None)
                if info is not None:
                    fields["reason"] = info.reason
                fields.update(extra)
                log.log(level, "rpc %s %s", method, code.name, extra=fields)
        finally:
            if call is not None:
                call.end(code, error)
            try:
                request_id_var.reset(token)
            except ValueError:
                request_id_var.set("")  # a stream closed from another context: just clear it

    def _unary(self, behaviour: Callable[[Any, grpc.ServicerContext], Any], method: str) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            token, traced = self._begin(context, method)
            attached = traced.attach() if traced is not None else None
            started = time.perf_counter()
            response, failed, error = None, True, None
            try:
                response = behaviour(request, context)
                failed = False
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finish(method, context, started, response, failed, token, traced, error=error)
                if attached is not None:
                    tracing.ServerCall.detach(attached)

        return call

    def _stream(self, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            token, traced = self._begin(context, method)
            started = time.perf_counter()
            sent, failed, cancelled, error = 0, True, False, None
            # The span is made current only while the servicer's code runs, step by step: between two
            # messages this generator is suspended, and it may be closed from another thread.
            items = _Steps(traced)
            try:
                for item in items.run(lambda: behaviour(request, context)):
                    if not isinstance(item, Idle):  # a pause, not a message (service_kit/wrapping.py)
                        sent += 1
                    yield item
                failed = False
                # A servicer that noticed its client had gone and returned: cancelled all the same.
                cancelled = not context.is_active()
            except GeneratorExit:  # the client went away: not a server failure
                failed, cancelled = False, True
                raise
            except BaseException as exc:
                error = exc
                raise
            finally:
                with items.current():
                    self._finish(method, context, started, None, failed, token, traced, cancelled=cancelled, error=error,
                                 messages_sent=sent)

        return call


class _Steps:
    """Runs a servicer's response iterator with the call's span current during each step only."""

    def __init__(self, traced: tracing.ServerCall | None):
        self.traced = traced

    def current(self) -> Any:
        return _Attached(self.traced)

    def run(self, start: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        with self.current():
            iterator = iter(start())
        try:
            while True:
                with self.current():
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                with self.current():
                    close()


class _Attached:
    __slots__ = ("traced", "token")

    def __init__(self, traced: tracing.ServerCall | None):
        self.traced = traced
        self.token: object = None

    def __enter__(self) -> None:
        if self.traced is not None:
            self.token = self.traced.attach()

    def __exit__(self, *exc: object) -> None:
        if self.token is not None:
            tracing.ServerCall.detach(self.token)
