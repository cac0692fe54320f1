"""The serving model: a grpc.aio server on an event-loop thread; the synchronous handlers run in a bounded pool.

A call holds a worker thread only while its handler's code runs. Until then it is a coroutine on
the loop, which costs no thread:

1. as soon as it starts (headers received, request not yet read) its caller is identified from the
   client certificate; a caller the method refuses whatever the request says (no certificate, no
   role, a role the method does not admit) is answered at once (auth.refusal_before_request), and
   so is a caller over its share of calls in flight (limits.CallAdmission): RESOURCE_EXHAUSTED with
   a reason and a RetryInfo;
2. the request message is awaited on the loop, for at most `request_arrival_ms`; a call whose
   message has not arrived by then ends DEADLINE_EXCEEDED (reason REQUEST_NOT_RECEIVED);
3. the call waits on the loop for a worker (WorkerGate: the last `reserved_workers` only for customs
   and admins), and its handler, wrapped once per method at registration by the interceptors'
   wrappings (observability, request guard, authorizer), runs there with a SyncContext, which
   behaves as grpc's synchronous server's context: an abort raises, and the status goes out with
   the trailers set up to the end (the request id among them).

A synchronous response stream takes a worker per step (per message); a stream with nothing to send
yields wrapping.Idle and waits on the loop until its context's `wake()` is called or the pause ends
(WatchQuotas: a watch holds no worker while it waits for events). Request-streaming handlers
(reflection) read their requests through the loop, each read while holding a worker.

All servers of a process share one loop thread (grpc.aio binds its completion queue's poller to
each loop that uses it; one loop keeps it to one).
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status

from contract.constants import REQUEST_ID_HEADER
from contract.identity import Identity, Role, identity_of_certificate
from server.api.auth import refusal_before_request
from server.api.errors import status_for
from server.api.limits import CallAdmission, retry_info
from server.api.wrapping import Idle
from server.domain.errors import DomainError, ErrorKind

log = logging.getLogger(__name__)

PRIVILEGED_ROLES = frozenset({Role.CUSTOMS, Role.ADMIN})


# -- the loop thread ------------------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def serving_loop() -> asyncio.AbstractEventLoop:
    """The process's serving loop, started on first use; it runs as long as the process."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="ecert-serving-loop", daemon=True).start()
            started.wait()
            _loop = loop
        return _loop


def on_loop(coroutine: Any, timeout: float | None = None) -> Any:
    """Run a coroutine on the serving loop from another thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, serving_loop()).result(timeout)


# -- the synchronous handlers' context -------------------------------------------------------------


class Aborted(Exception):
    """Raised by SyncContext.abort, as grpc's synchronous server raises on abort."""


class SyncContext:
    """grpc.ServicerContext for a synchronous handler, over the call's aio context.

    As in grpc's synchronous server, an abort raises and the status is sent once the handler has
    returned, with the trailing metadata set until then; `is_active()` turns False when the client
    goes away; callbacks run when the call ends."""

    def __init__(self, context: Any, loop: asyncio.AbstractEventLoop, call: _Call):
        self._context = context
        self._loop = loop
        self._auth = call.auth
        self._metadata = call.metadata
        self._peer = call.peer
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailers: tuple = ()
        self._aborted = False
        self._finished = False
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._woken: asyncio.Event | None = None
        self._reading: concurrent.futures.Future[Any] | None = None

    # what handlers ask
    def invocation_metadata(self) -> tuple:
        return self._metadata

    def auth_context(self) -> dict[str, Any]:
        return self._auth

    # What describes the peer was read on the loop when the call started: the core's call may be gone
    # by the time a worker asks (the client went away while its handler ran), and reading it then
    # would touch freed memory.
    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> Any:
        name = self._auth.get("x509_common_name")
        return list(name) if name else None

    def peer_identity_key(self) -> Any:
        return "x509_common_name" if self._auth.get("x509_common_name") else None

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def is_active(self) -> bool:
        return not self._finished

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if self._finished:
                return False
            self._callbacks.append(callback)
            return True

    def cancel(self) -> None:
        self._loop.call_soon_threadsafe(self._finish)

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort with OK")
        self._code, self._details, self._aborted = code, details or "", True
        raise Aborted(details)

    def abort_with_status(self, status: grpc.Status) -> None:
        self.set_trailing_metadata(status.trailing_metadata or ())
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details or ""

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._trailers = tuple(metadata or ())

    def trailing_metadata(self) -> tuple:
        return self._trailers

    def send_initial_metadata(self, metadata: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._on_loop(self._context.send_initial_metadata, tuple(metadata)), self._loop).result()

    async def _on_loop(self, operation: Callable[..., Any], *args: Any) -> Any:
        """An operation on the core's call, unless the call has ended (checked on the loop, where it ends)."""
        if self._finished:
            raise RuntimeError("the call has ended")
        return await operation(*args)

    def set_compression(self, compression: grpc.Compression) -> None:
        self._context.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self._context.disable_next_message_compression()

    def wake(self) -> None:
        """Step a stream that yielded Idle again now; callable from any thread."""
        woken = self._woken
        if woken is not None and not self._finished:
            try:
                self._loop.call_soon_threadsafe(woken.set)
            except RuntimeError:  # the loop is closed: nothing waits any more
                pass

    # the serving layer's side (loop thread)
    def _finish(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            callbacks, self._callbacks = self._callbacks, []
        if self._reading is not None:
            self._reading.cancel()
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a call's callback failed")


class _Requests(Iterator[Any]):
    """A request stream for a synchronous handler: each message read through the loop."""

    def __init__(self, context: Any, sync: SyncContext):
        self._context = context
        self._sync = sync

    def __next__(self) -> Any:
        if self._sync._finished:
            raise StopIteration
        future = asyncio.run_coroutine_threadsafe(self._sync._on_loop(self._context.read), self._sync._loop)
        self._sync._reading = future
        try:
            message = future.result()
        except (concurrent.futures.CancelledError, Exception):
            raise StopIteration from None
        finally:
            self._sync._reading = None
        if message is grpc.aio.EOF:
            raise StopIteration
        return message


# -- workers -----------------------------------------------------------------------------------------


class WorkerGate:
    """Workers handed to calls, on the loop: the last `reserved` only to privileged callers; a call
    that cannot have one waits on the loop (no thread) until one is released or the call ends."""

    def __init__(self, workers: int, reserved: int):
        self.free = workers
        self.reserved = max(0, min(reserved, workers - 1))
        self._waiting: collections.deque[tuple[bool, asyncio.Future[None]]] = collections.deque()

    def _may_take(self, privileged: bool) -> bool:
        return self.free > (0 if privileged else self.reserved)

    async def acquire(self, privileged: bool) -> None:
        if self._may_take(privileged):
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (privileged, waiter)
        self._waiting.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as the call ended
            else:
                try:
                    self._waiting.remove(entry)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        self.free += 1
        for entry in list(self._waiting):
            if not self.free:
                break
            privileged, waiter = entry
            if waiter.done():
                self._waiting.remove(entry)
            elif self._may_take(privileged):
                self._waiting.remove(entry)
                self.free -= 1
                waiter.set_result(None)


@dataclass(frozen=True)
class Limits:
    workers: int
    reserved_workers: int
    calls_per_identity: int
    max_calls: int
    reserved_calls: int
    request_arrival_seconds: float


def _outcome(function: Callable[..., Any], *args: Any) -> tuple[Any, BaseException | None]:
    try:
        return function(*args), None
    except BaseException as exc:  # noqa: BLE001 - reported by the serving layer, not the pool
        return None, exc


_DONE = object()


def _step(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


class _Call:
    """One call's bookkeeping on the loop."""

    __slots__ = ("key", "privileged", "identity", "auth", "metadata", "peer", "started")

    def __init__(self, key: Any, privileged: bool, identity: Identity | None, auth: dict[str, Any], metadata: tuple, peer: str):
        self.key, self.privileged, self.identity, self.auth, self.metadata, self.peer = key, privileged, identity, auth, metadata, peer
        self.started = time.perf_counter()


class Bridge:
    """Turns a synchronous method handler (already wrapped by the interceptors) into the aio handler
    that admits, reads and dispatches its calls."""

    def __init__(self, limits: Limits, *, authenticated: bool, observability: Any = None):
        self.limits = limits
        self.authenticated = authenticated
        self.observability = observability
        self.loop = serving_loop()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="ecert-rpc")
        self.gate = WorkerGate(limits.workers, limits.reserved_workers)
        self.admission = CallAdmission(per_identity=limits.calls_per_identity, total=limits.max_calls, reserved=limits.reserved_calls)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- the pieces every call goes through ---------------------------------------------------------

    async def _refuse(self, method: str, context: Any, call: _Call, error: DomainError, *, retry: bool = False) -> None:
        status = rpc_status.to_status(status_for(error, extra=[retry_info()] if retry else None))
        info = next(iter(_error_infos(status)), None)
        request_id = ""
        if self.observability is not None and info is not None:
            request_id = self.observability.refused(
                method, call.metadata, call.peer, call.identity.subject if call.identity else "", status.code, info,
                time.perf_counter() - call.started,
            )
        trailers = (*status.trailing_metadata, *(((REQUEST_ID_HEADER, request_id),) if request_id else ()))
        await context.abort(status.code, status.details, trailers)

    async def _admit(self, method: str, context: Any) -> _Call:
        auth = context.auth_context()
        metadata = context.invocation_metadata()
        identity = None
        if self.authenticated:
            certificates = auth.get("x509_pem_cert") or []
            identity = identity_of_certificate(bytes(certificates[0])) if certificates else None
        privileged = not self.authenticated or (identity is not None and identity.role in PRIVILEGED_ROLES)
        call = _Call(identity, privileged, identity, auth, metadata, context.peer())
        if self.authenticated:
            refusal = refusal_before_request(method, identity)
            if refusal is not None:
                log.warning("refused %s to %s: %s", method, identity.subject if identity else "anonymous", refusal.reason)
                await self._refuse(method, context, call, refusal)
        refusal = self.admission.admit(call.key, privileged)
        if refusal is not None:
            log.warning("refused %s to %s: %s", method, identity.subject if identity else "a caller", refusal.reason)
            await self._refuse(method, context, call, refusal, retry=True)
        return call

    def _release(self, call: _Call) -> None:
        """Once an admitted call has ended (a refused one raised out of _admit and holds nothing)."""
        self.admission.release(call.key)

    async def _receive(self, method: str, context: Any, call: _Call) -> Any:
        """The request message, read on the loop; a timer ends the wait once the arrival bound passes."""
        task = asyncio.current_task()
        assert task is not None
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            task.cancel()

        remaining = self.limits.request_arrival_seconds - (time.perf_counter() - call.started)
        timer = self.loop.call_later(max(0.0, remaining), expire)
        try:
            message = await context.read()
        except asyncio.CancelledError:
            if not expired:
                raise  # the call itself was cancelled (the client went away, the server stops)
            task.uncancel()
            seconds = f"{self.limits.request_arrival_seconds:g}"
            await self._refuse(method, context, call, DomainError(
                "REQUEST_NOT_RECEIVED", f"the request message did not arrive within {seconds} s of the call's start",
                ErrorKind.DEADLINE, metadata={"method": method, "request_arrival_seconds": seconds},
            ))
        finally:
            timer.cancel()
        if message is grpc.aio.EOF:
            await self._refuse(method, context, call, DomainError(
                "REQUEST_MISSING", "the call ended its request stream without the request message", ErrorKind.INVALID,
                metadata={"method": method},
            ))
        return message

    async def _run(self, call: _Call, run: Callable[..., Any], *args: Any,
                   steps: list[concurrent.futures.Future[Any]] | None = None) -> tuple[Any, BaseException | None]:
        """One piece of handler code on a worker; the worker is the call's until that code returns,
        even if the call ends meanwhile (`steps` keeps its future, for a stream closed meanwhile)."""
        await self.gate.acquire(call.privileged)
        try:
            future = self.pool.submit(run, _outcome, *args)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.gate.release()
            raise asyncio.CancelledError() from None
        if steps is not None:
            steps[:] = [future]
        try:
            return await asyncio.wrap_future(future)
        finally:
            if future.done():
                self.gate.release()
            else:  # the call ended while its code runs: the worker is free once that code returns
                future.add_done_callback(lambda _: self.loop.call_soon_threadsafe(self.gate.release))

    async def _finish_error(self, method: str, context: Any, sync: SyncContext, error: BaseException | None) -> None:
        """Send the status of a handler that aborted or failed (raises AbortError, as aio expects)."""
        if sync._aborted:
            code = sync._code or grpc.StatusCode.UNKNOWN
        else:
            if error is not None and not isinstance(error, Aborted):
                log.error("unhandled %s in %s", type(error).__name__, method, exc_info=error)
            code = sync._code if sync._code not in (None, grpc.StatusCode.OK) else grpc.StatusCode.UNKNOWN
        details = sync._details or ("" if sync._aborted or error is None else "Exception calling application")
        await context.abort(code, details, sync._trailers)

    # -- the handlers --------------------------------------------------------------------------------

    def handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        serializers = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.stream_unary_rpc_method_handler(self._unary_unary(handler.unary_unary, method), **serializers)
        if handler.unary_stream:
            return grpc.stream_stream_rpc_method_handler(self._unary_stream(handler.unary_stream, method), **serializers)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self._stream_unary(handler.stream_unary, method), **serializers)
        return grpc.stream_stream_rpc_method_handler(self._stream_stream(handler.stream_stream, method), **serializers)

    def _unary_unary(self, behaviour: Callable[[Any, Any], Any], method: str) -> Callable[..., Any]:
        async def call(_requests: Any, context: Any) -> Any:
            admitted = await self._admit(method, context)
            sync = SyncContext(context, self.loop, admitted)
            try:
                request = await self._receive(method, context, admitted)
                response, error = await self._run(admitted, contextvars.copy_context().run, behaviour, request, sync)
                if error is not None or sync._aborted or sync._code not in (None, grpc.StatusCode.OK):
                    await self._finish_error(method, context, sync, error)
                if sync._trailers:
                    context.set_trailing_metadata(sync._trailers)
                return response
            finally:
                sync._finish()
                self._release(admitted)

        return call

    async def _stream_out(self, method: str, context: Any, admitted: _Call, sync: SyncContext, start: Callable[[], Any]) -> Any:
        """The responses of a synchronous response stream, one worker step per message."""
        run = contextvars.copy_context().run  # one context for all the stream's steps, one at a time
        sync._woken = asyncio.Event()
        steps: list[concurrent.futures.Future[Any]] = []
        iterator, error = await self._run(admitted, run, start, steps=steps)
        if error is not None:
            await self._finish_error(method, context, sync, error)
            return
        iterator = iter(iterator)
        try:
            while True:
                sync._woken.clear()
                item, error = await self._run(admitted, run, _step, iterator, steps=steps)
                if error is not None:
                    await self._finish_error(method, context, sync, error)
                    return
                if item is _DONE:
                    break
                if isinstance(item, Idle):
                    try:
                        await asyncio.wait_for(sync._woken.wait(), max(0.0, item.seconds))
                    except asyncio.TimeoutError:
                        pass
                    continue
                yield item
            if sync._aborted or sync._code not in (None, grpc.StatusCode.OK):
                await self._finish_error(method, context, sync, None)
            if sync._trailers:
                context.set_trailing_metadata(sync._trailers)
        finally:
            sync._finish()
            close = getattr(iterator, "close", None)
            if close is not None:
                # On a worker, once no step runs (a step may still run if the client went away during
                # it): GeneratorExit inside the stream, as grpc's synchronous server does. It takes no
                # gated worker.
                def closing(_: object = None) -> None:
                    try:
                        self.pool.submit(run, _outcome, close)
                    except RuntimeError:
                        pass

                if steps and not steps[0].done():
                    steps[0].add_done_callback(closing)
                else:
                    closing()

    def _unary_stream(self, behaviour: Callable[[Any, Any], Iterator[Any]], method: str) -> Callable[..., Any]:
        async def call(_requests: Any, context: Any) -> Any:
            admitted = await self._admit(method, context)
            sync = SyncContext(context, self.loop, admitted)
            try:
                request = await self._receive(method, context, admitted)
                async for item in self._stream_out(method, context, admitted, sync, lambda: behaviour(request, sync)):
                    yield item
            finally:
                sync._finish()
                self._release(admitted)

        return call

    def _stream_stream(self, behaviour: Callable[[Any, Any], Iterator[Any]], method: str) -> Callable[..., Any]:
        async def call(_requests: Any, context: Any) -> Any:
            admitted = await self._admit(method, context)
            sync = SyncContext(context, self.loop, admitted)
            try:
                requests = _Requests(context, sync)
                async for item in self._stream_out(method, context, admitted, sync, lambda: behaviour(requests, sync)):
                    yield item
            finally:
                sync._finish()
                self._release(admitted)

        return call

    def _stream_unary(self, behaviour: Callable[[Any, Any], Any], method: str) -> Callable[..., Any]:
        async def call(_requests: Any, context: Any) -> Any:
            admitted = await self._admit(method, context)
            sync = SyncContext(context, self.loop, admitted)
            try:
                response, error = await self._run(admitted, contextvars.copy_context().run, behaviour, _Requests(context, sync), sync)
                if error is not None or sync._aborted or sync._code not in (None, grpc.StatusCode.OK):
                    await self._finish_error(method, context, sync, error)
                if sync._trailers:
                    context.set_trailing_metadata(sync._trailers)
                return response
            finally:
                sync._finish()
                self._release(admitted)

        return call


def _error_infos(status: grpc.Status) -> list[Any]:
    from google.rpc import error_details_pb2, status_pb2

    raw = next((v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"), None)
    found = []
    if raw is not None:
        for detail in status_pb2.Status.FromString(raw).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                found.append(info)
    return found


# -- registration: the interceptors' wrappings applied once per method --------------------------------


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str):
        self.method = method
        self.invocation_metadata = ()


class Registrar:
    """What `add_*Servicer_to_server(servicer, server)` is given instead of the server: each method
    handler is wrapped once by the synchronous interceptors (outermost first, as grpc.server applies
    its `interceptors`) and turned into its aio handler by the bridge, then registered on the aio server."""

    def __init__(self, server: grpc.aio.Server, bridge: Bridge, interceptors: Sequence[grpc.ServerInterceptor]):
        self._server = server
        self._bridge = bridge
        self._interceptors = tuple(interceptors)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        details = _Details(method)
        for interceptor in reversed(self._interceptors):
            handler = interceptor.intercept_service(lambda _details, inner=handler: inner, details)
        return self._bridge.handler(handler, method)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._server.add_registered_method_handlers(
            service, {name: self.wrap(handler, f"/{service}/{name}") for name, handler in handlers.items()}
        )

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_WrappedGeneric(handler, self) for handler in handlers])


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler (health, reflection) whose method handlers are wrapped the first time each is asked for."""

    def __init__(self, inner: grpc.GenericRpcHandler, registrar: Registrar):
        self._inner = inner
        self._registrar = registrar
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._registrar.wrap(handler, method)
        if len(self._wrapped) < 1024:
            self._wrapped[method] = (handler, wrapped)
        return wrapped


class Serving:
    """The aio server and its bridge; `stop` may be called from any thread."""

    def __init__(self, server: grpc.aio.Server, bridge: Bridge):
        self.server = server
        self.bridge = bridge

    def stop(self, grace: float | None) -> None:
        try:
            on_loop(self.server.stop(grace))
        finally:
            self.bridge.shutdown()
