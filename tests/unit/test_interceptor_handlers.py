"""The interceptors wrap a method's handler once and reuse the wrapping, but only while the handler
they are given is the same object: a handler made afresh per call is the one used (service_kit/wrapping.py)."""
from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc import _interceptor

from server.api.interceptors import ObservabilityInterceptor
from server.api.limits import RequestGuard
from server.observability.metrics import ServiceMetrics

METHOD = "/ecert.bench.v1.EchoService/Echo"


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str):
        self.method, self.invocation_metadata = method, ()


class Context:
    """What the interceptors ask of a call's context."""

    def __init__(self) -> None:
        self.trailers: Any = None

    def invocation_metadata(self) -> tuple:
        return ()

    def trailing_metadata(self) -> Any:
        return self.trailers

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailers = metadata

    def code(self) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict:
        return {}

    def time_remaining(self) -> float:
        return 10.0


def answering(text: str) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(lambda request, context: text, request_deserializer=bytes)


@pytest.mark.parametrize("interceptors", [
    lambda: [ObservabilityInterceptor(ServiceMetrics()), RequestGuard()],
    lambda: [RequestGuard()],
    lambda: [ObservabilityInterceptor(ServiceMetrics())],
], ids=["both", "guard", "observability"])
def test_a_wrapped_handler_serves_while_the_inner_one_is_the_same(interceptors: Any) -> None:
    pipeline = _interceptor.service_pipeline(interceptors())
    first, second = answering("first"), answering("second")

    def serve(inner: grpc.RpcMethodHandler) -> tuple[grpc.RpcMethodHandler, str]:
        handler = pipeline.execute(lambda details: inner, Details(METHOD))
        return handler, handler.unary_unary(b"", Context())

    once, answer = serve(first)
    again, answer_again = serve(first)
    assert (answer, answer_again) == ("first", "first") and again is once
    changed, answer = serve(second)  # the same method, another handler: that one answers
    assert answer == "second" and changed is not once
    assert serve(second)[1] == "second" and serve(first)[1] == "first"
    assert pipeline.execute(lambda details: None, Details("/no.Such/Method")) is None
