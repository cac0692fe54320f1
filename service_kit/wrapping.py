"""Server interceptors wrap a method's handler once, not on every call.

gRPC asks every interceptor for the handler of every call. Building a wrapped handler (closures and
a new RpcMethodHandler) each time showed in the per-call profile, and nothing in our wrappings
belongs to one call: what a call needs (its request id, its deadline, its peer) is read from the
call's own context when it runs.
"""
from __future__ import annotations

from collections.abc import Callable

import grpc

# Enough for every method served; the bound only matters if a generic handler answered arbitrary names.
MAX_WRAPPED = 1024


class WrappedHandlers:
    """An interceptor's wrapped handlers, per method, kept while the handler they wrap is the same
    object: a registered servicer's always is, and one made afresh per call is wrapped afresh."""

    def __init__(self, wrap: Callable[[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler]):
        self._wrap = wrap
        self._known: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def __call__(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        known = self._known.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(handler, method)
        if len(self._known) < MAX_WRAPPED or method in self._known:
            self._known[method] = (handler, wrapped)
        return wrapped


class Idle:
    """Yielded by a synchronous response stream that has nothing to send yet: a serving layer that
    knows it (the service's, server/api/serving.py) hands its worker back and steps the stream again
    after `seconds`, or sooner when the call context's `wake()` is called (from any thread). Never
    sent to the client; the observability interceptor does not count it as a message."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float):
        self.seconds = seconds
