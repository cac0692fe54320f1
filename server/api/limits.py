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

Before any of that, as soon as a call starts (server/api/serving.py), CallAdmission counts it against
its caller's share: calls in flight per identity, and all calls in flight of which a part only customs
and admins may take. Beyond either the call is RESOURCE_EXHAUSTED at once, with a reason and a
RetryInfo, before its request is read and without taking a worker.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server.api.errors import status_for
from server.api.wrapping import WrappedHandlers
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
NUL = "TEXT_HAS_NUL", "must not contain NUL characters"
OUT_OF_RANGE = "TIMESTAMP_OUT_OF_RANGE", "must be an instant from year 1 to year 9999"


def violation(message: Message) -> Finding | None:
    """The first field that no request may carry: text with a NUL, a Timestamp out of its range.

    First in field-number order, depth first (the order of ListFields). Only the fields that can
    hold one are read, from a plan compiled once per message type (_plan)."""
    descriptor = message.DESCRIPTOR
    plan = _plans.get(descriptor)
    if plan is None:
        plan = _plans[descriptor] = _plan(descriptor)
    found = _listed(message, "") if plan is _LISTED else _planned(message, plan)
    return Finding(found[0][0], found[1], found[0][1]) if found else None


def _out_of_range(stamp: Message) -> bool:
    low, high = TIMESTAMP_SECONDS
    return not (low <= stamp.seconds <= high and 0 <= stamp.nanos <= 999_999_999)


# -- the plan: per field that can hold a violation, (name, kind, repeated, plan of its message type) ----

_STRING, _TIMESTAMP, _MESSAGE = 0, 1, 2
Step = tuple[str, int, bool, list]  # list: the message type's own steps (empty unless _MESSAGE)
_plans: dict[Descriptor, Any] = {}  # message type -> its steps, or _LISTED; filled on first use, never changes
_LISTED = object()  # a request type the plan cannot cover (see _plan): walked with ListFields


def _nested(descriptor: Descriptor) -> list[FieldDescriptor]:
    """The message fields the walk descends into (map fields are not checked)."""
    return [f for f in descriptor.fields if f.type == FieldDescriptor.TYPE_MESSAGE and not f.message_type.GetOptions().map_entry]


def _is_repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf 6.31+; `label` is gone in 7
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _plan(root: Descriptor) -> Any:
    # Every type the walk can reach from the root; a Timestamp is a leaf.
    reachable: dict[Descriptor, list[Descriptor]] = {}
    pending = [root]
    while pending:
        descriptor = pending.pop()
        if descriptor not in reachable:
            reachable[descriptor] = [f.message_type for f in _nested(descriptor) if f.message_type.full_name != TIMESTAMP]
            pending += reachable[descriptor]
    # Extensions are not among a type's fields, and an unset proto2 string reads as its default: only
    # ListFields sees these as the first walk did.
    if any(d.extension_ranges or any(f.type == FieldDescriptor.TYPE_STRING and "\x00" in f.default_value for f in d.fields)
           for d in reachable):
        return _LISTED

    def holds_own(descriptor: Descriptor) -> bool:
        return any(f.type == FieldDescriptor.TYPE_STRING for f in descriptor.fields) or any(
            f.message_type.full_name == TIMESTAMP for f in _nested(descriptor)
        )

    def may_hold(descriptor: Descriptor) -> bool:  # at any depth (types may be recursive)
        seen, pending = set(), [descriptor]
        while pending:
            d = pending.pop()
            if d not in seen:
                seen.add(d)
                if holds_own(d):
                    return True
                pending += reachable[d]
        return False

    steps: dict[Descriptor, list[Step]] = {d: [] for d in reachable}  # made first: recursive types refer to their own
    for descriptor, own in steps.items():
        nested = set(_nested(descriptor))
        for f in sorted(descriptor.fields, key=lambda f: f.number):
            if f.type == FieldDescriptor.TYPE_STRING:
                own.append((f.name, _STRING, _is_repeated(f), []))
            elif f in nested and f.message_type.full_name == TIMESTAMP:
                own.append((f.name, _TIMESTAMP, _is_repeated(f), []))
            elif f in nested and may_hold(f.message_type):
                own.append((f.name, _MESSAGE, _is_repeated(f), steps[f.message_type]))
    return steps[root]


def _planned(message: Message, steps: list[Step]) -> tuple[tuple[str, str], str] | None:
    """(the code and description, the field path) of the first violation, or None."""
    for name, kind, repeated, nested in steps:
        if kind == _STRING:
            if repeated:
                if any("\x00" in item for item in getattr(message, name)):
                    return NUL, name
            elif "\x00" in getattr(message, name):
                return NUL, name
        elif repeated:
            for index, item in enumerate(getattr(message, name)):
                if kind == _TIMESTAMP:
                    if _out_of_range(item):
                        return OUT_OF_RANGE, f"{name}[{index}]"
                elif found := _planned(item, nested):
                    return found[0], f"{name}[{index}].{found[1]}"
        elif message.HasField(name):
            item = getattr(message, name)
            if kind == _TIMESTAMP:
                if _out_of_range(item):
                    return OUT_OF_RANGE, name
            elif found := _planned(item, nested):
                return found[0], f"{name}.{found[1]}"
    return None


def _listed(message: Message, prefix: str) -> tuple[tuple[str, str], str] | None:
    """The same walk over the fields ListFields reports (extensions included)."""
    for field, value in message.ListFields():
        path = prefix + field.name
        repeated = hasattr(value, "append") or hasattr(value, "add")
        items = list(value) if repeated else [value]
        if field.type == FieldDescriptor.TYPE_STRING:
            if any("\x00" in item for item in items):
                return NUL, path
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            for index, item in enumerate(items):
                where = f"{path}[{index}]" if repeated else path
                if field.message_type.full_name == TIMESTAMP:
                    if _out_of_range(item):
                        return OUT_OF_RANGE, where
                elif found := _listed(item, where + "."):
                    return found
    return None


def violation_error(finding: Finding) -> DomainError:
    return DomainError(finding.code, f"{finding.field}: {finding.description}", ErrorKind.INVALID, [finding])


class RequestGuard(grpc.ServerInterceptor):
    def __init__(self) -> None:
        self._guarded = WrappedHandlers(self._guard)

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]  # grpc interceptor hook: grpc is untyped
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        return self._guarded(handler, handler_call_details.method)

    def _guard(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
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


# -- admission: calls in flight per identity, with a reserve for customs and admins -------------------

RETRY_AFTER_SECONDS = 1


def retry_info(seconds: int = RETRY_AFTER_SECONDS) -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))


class CallAdmission:
    """Calls in flight, counted from the moment a call starts (its request may still be on its way)
    until its status is sent. Used from the serving loop's thread only.

    - one identity (the whole identity its client certificate names) holds at most `per_identity`;
    - `total` in all, of which the last `reserved` only for privileged callers (customs, admins, and
      anyone on a plaintext development server)."""

    def __init__(self, *, per_identity: int, total: int, reserved: int):
        if per_identity < 1 or total < 1 or reserved < 0:
            raise ValueError("call limits: at least one call per identity and in all, no negative reservation")
        self.per_identity = per_identity
        self.total = total
        self.reserved = min(reserved, total - 1)
        self.in_flight = 0
        self._held: dict[Hashable, int] = {}

    def admit(self, key: Hashable | None, privileged: bool) -> DomainError | None:
        """None when the call is admitted (then `release` it once it ends), else the refusal."""
        limits = {"per_identity": str(self.per_identity), "total": str(self.total), "reserved": str(self.reserved)}
        held = self._held.get(key, 0) if key is not None else 0
        if key is not None and held >= self.per_identity:
            return DomainError(
                "TOO_MANY_CALLS_FOR_CALLER",
                f"one caller may have at most {self.per_identity} calls in flight; wait for one to finish",
                ErrorKind.EXHAUSTED,
                metadata=limits,
            )
        if self.in_flight >= (self.total if privileged else self.total - self.reserved):
            kept = "" if privileged or not self.reserved else f" ({self.reserved} kept for customs and admins)"
            return DomainError(
                "TOO_MANY_CALLS", f"at most {self.total} calls may be in flight at once{kept}; retry later",
                ErrorKind.EXHAUSTED, metadata=limits,
            )
        self.in_flight += 1
        if key is not None:
            self._held[key] = held + 1
        return None

    def release(self, key: Hashable | None) -> None:
        self.in_flight -= 1
        if key is not None:
            held = self._held.pop(key) - 1
            if held:
                self._held[key] = held
