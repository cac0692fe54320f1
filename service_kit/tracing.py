"""Traces: OpenTelemetry spans for RPCs (server and client side) and database transactions, with
W3C trace context (`traceparent`, `tracestate` metadata) carried from the gateway through the relay
to the service.

A process turns tracing on with `configure(name)` (`ecert serve`, `ecert relay`, `ecert gateway`,
the bench's server): spans are then recorded, and the trace id of the call being served becomes its
request id in the logs unless the caller named one (service_kit/interceptor.py). Nothing leaves the
process unless an exporter is asked for with the standard variables: OTEL_TRACES_EXPORTER=otlp (or
console), or an OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; the OTLP exporter
is the optional `otlp` extra. OTEL_SDK_DISABLED=true turns tracing off altogether: no spans, request
ids as before tracing existed.

Without `configure` (a library user, most tests) nothing is traced; `use_provider` hands a provider
to this module directly (tests use an in-memory exporter).
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc  # grpcio ships no type hints: Any (pyproject.toml, [tool.mypy])
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind, Status, StatusCode

log = logging.getLogger(__name__)

_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass
class _State:
    tracer: trace.Tracer | None = None
    provider: Any = None


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def _disabled_by_environment() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _exporter() -> Any:
    """The span exporter the standard variables ask for, or None (the default: nothing is exported)."""
    env = os.environ.get
    names = [n.strip().lower() for n in env("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (env("OTEL_EXPORTER_OTLP_ENDPOINT") or env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = ["otlp"]
    names = [n for n in names if n != "none"]
    if not names:
        return None
    if names[0] == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if names[0] != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={names[0]} is not supported here (otlp, console or none)")
    protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]  # HTTP in place of gRPC
    except ImportError:
        raise ValueError("the OTLP exporter is not installed: pip install 'ecert[otlp]'") from None
    return OTLPSpanExporter()  # endpoint, headers, timeout: from the OTEL_EXPORTER_OTLP_* variables


def configure(service_name: str) -> bool:
    """Trace this process (unless OTEL_SDK_DISABLED=true); returns whether it is traced.

    OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the name; OTEL_TRACES_SAMPLER is honoured.
    """
    if _disabled_by_environment():
        use_provider(None)
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = _exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("traces exported (%s)", type(exporter).__name__)
    trace.set_tracer_provider(provider)  # for other libraries' spans too; ignored (with a warning) if set before
    use_provider(provider)
    return True


def use_provider(provider: Any) -> None:
    """Trace with this provider (None: trace nothing)."""
    _state.provider = provider
    _state.tracer = provider.get_tracer("ecert") if provider is not None else None


# -- context -------------------------------------------------------------------------------------


def current_trace_id() -> str:
    """The trace id (32 hex digits) of the current span, or "" when there is none."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers, to store with work that continues later (the relay)."""
    headers: dict[str, str] = {}
    if enabled():
        inject(headers)
    return headers


@contextlib.contextmanager
def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, parent: Mapping[str, str] | None = None,
         attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A current span (None when not tracing); `parent` continues a stored carrier's trace."""
    tracer = _state.tracer
    if tracer is None:
        yield None
        return
    parent_context = extract(dict(parent)) if parent else None
    with tracer.start_as_current_span(name, context=parent_context, kind=kind, attributes=attributes) as current:
        yield current


def open_span(name: str, attributes: Mapping[str, Any]) -> Any:
    """A span made current until `close_span` (for a context manager's __enter__ and __exit__); None when not tracing."""
    tracer = _state.tracer
    if tracer is None:
        return None
    started = tracer.start_span(name, attributes=attributes)
    return started, otel_context.attach(trace.set_span_in_context(started))


def close_span(opened: Any, error: BaseException | None = None, **attributes: Any) -> None:
    if opened is None:
        return
    started, token = opened
    otel_context.detach(token)
    for key, value in attributes.items():
        started.set_attribute(f"ecert.{key}", value)
    if error is not None:
        started.record_exception(error)
        started.set_status(Status(StatusCode.ERROR, type(error).__name__))
    started.end()


# -- gRPC server side ----------------------------------------------------------------------------


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class ServerCall:
    """The span of one served RPC: a child of the caller's span when its metadata carries one."""

    __slots__ = ("span", "context")

    def __init__(self, method: str, metadata: Any):
        tracer = _state.tracer
        assert tracer is not None
        headers = {k: v for k, v in metadata or () if k in _TRACE_HEADERS and isinstance(v, str)}
        parent = extract(headers) if headers else None
        self.span = tracer.start_span(method.lstrip("/"), context=parent, kind=SpanKind.SERVER, attributes=_rpc_attributes(method))
        self.context = trace.set_span_in_context(self.span, parent)

    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def attach(self) -> object:
        return otel_context.attach(self.context)

    @staticmethod
    def detach(token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]  # the token is the one attach() returned

    def end(self, code: grpc.StatusCode, error: BaseException | None = None) -> None:
        self.span.set_attribute("rpc.grpc.status_code", code.value[0])
        if error is not None and not isinstance(error, GeneratorExit):
            self.span.record_exception(error)
        if code in _SERVER_ERRORS:  # the semantic conventions: only these make a server span an error
            self.span.set_status(Status(StatusCode.ERROR, code.name))
        self.span.end()


_SERVER_ERRORS = {
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
}


# -- gRPC client side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):  # type: ignore[misc]  # grpc is untyped (Any)
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class ClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]  # grpc is untyped
    """A CLIENT span per call, its context sent as `traceparent` metadata. Nothing when not tracing."""

    def _start(self, details: grpc.ClientCallDetails) -> tuple[Any, grpc.ClientCallDetails]:
        tracer = _state.tracer
        if tracer is None:
            return None, details
        method = details.method if isinstance(details.method, str) else details.method.decode()
        started = tracer.start_span(method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method))
        headers: dict[str, str] = {}
        inject(headers, context=trace.set_span_in_context(started))
        metadata = [(k, v) for k, v in details.metadata or () if k not in _TRACE_HEADERS]
        metadata.extend(headers.items())
        return started, _CallDetails(details.method, details.timeout, metadata, details.credentials,
                                     getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    @staticmethod
    def _finish(started: Any, code: grpc.StatusCode | None) -> None:
        code = code or grpc.StatusCode.UNKNOWN
        started.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            started.set_status(Status(StatusCode.ERROR, code.name))
        started.end()

    def _traced(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any) -> Any:
        started, details = self._start(client_call_details)
        if started is None:
            return continuation(details, request)
        try:
            outcome = continuation(details, request)
        except BaseException:
            self._finish(started, grpc.StatusCode.UNKNOWN)
            raise
        # A blocking call's outcome is already done; a future's or a stream's is ended by its callback.
        outcome.add_done_callback(lambda done: self._finish(started, _code_of(done)))
        return outcome

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any) -> Any:
        return self._traced(continuation, client_call_details, request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any) -> Any:
        return self._traced(continuation, client_call_details, request)


def _code_of(call: Any) -> grpc.StatusCode | None:
    try:
        return call.code()
    except Exception:  # noqa: BLE001 - a call that cannot say: counted as UNKNOWN
        return None


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    return grpc.intercept_channel(channel, ClientInterceptor())
