"""ecert.relay.v1.RelayService: accept after storing, and hand finished deliveries back to senders."""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from contract.constants import MESSAGE_ID_PATTERN
from contract.identity import Role
from contract.errors import DomainError, ErrorKind
from contract.findings import Finding
from ecert.relay.v1 import relay_pb2 as rpb
from ecert.relay.v1 import relay_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from gateway_sim.relay.store import Message, MessageIdReused, RelayStore, State
from service_kit import tracing
from service_kit.authorization import ANYONE, Rule, allow, caller, own_country
from service_kit.error_status import translate_errors
from service_kit.logs import request_id_var

_RELAY = "/ecert.relay.v1.RelayService/"
POLICY: dict[str, Rule] = {
    _RELAY + "SubmitEnvelope": allow(Role.PARTNER, scope=own_country(lambda r: r.envelope.sender)),
    _RELAY + "ListDeliveries": allow(Role.PARTNER, Role.ADMIN),  # filtered to the caller's countries
    _RELAY + "WatchDeliveries": allow(Role.PARTNER, Role.ADMIN),
    _RELAY + "GetDelivery": allow(Role.PARTNER, Role.ADMIN, scope=own_country(lambda r: r.sender)),
    _RELAY + "GetRelayStats": ANYONE,
    "/grpc.health.v1.Health/*": ANYONE,
    "/grpc.reflection.v1alpha.ServerReflection/*": ANYONE,
    "/grpc.reflection.v1.ServerReflection/*": ANYONE,
}
STATE_TO_PROTO = {
    State.PENDING: rpb.DELIVERY_STATE_PENDING,
    State.DELIVERED: rpb.DELIVERY_STATE_DELIVERED,
    State.REJECTED: rpb.DELIVERY_STATE_REJECTED,
    State.EXPIRED: rpb.DELIVERY_STATE_EXPIRED,
}


def _stamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(dt.datetime.fromtimestamp(seconds, dt.timezone.utc))
    return stamp


def delivery_to_proto(m: Message) -> rpb.Delivery:
    return rpb.Delivery(
        sequence=m.sequence or 0,
        message_id=m.message_id,
        sender=m.sender,
        state=STATE_TO_PROTO[m.state],
        receipt=tpb.Receipt.FromString(m.receipt) if m.receipt else None,
        error_code=m.error_code if m.state is not State.DELIVERED else "",
        error_reason=m.error_reason if m.state is not State.DELIVERED else "",
        error_message=m.error_message if m.state is not State.DELIVERED else "",
        attempts=m.attempts,
        accepted_at=_stamp(m.accepted_at),
        finished_at=_stamp(m.finished_at),
        replayed=m.replayed,
    )


def _senders(context: grpc.ServicerContext) -> frozenset[str] | None:
    """Whose deliveries the caller may see: its countries; every sender for admins and plaintext."""
    identity = caller(context)
    if identity is None or identity.role is Role.ADMIN:
        return None
    return identity.countries


class RelayServicer(relay_pb2_grpc.RelayServiceServicer):
    def __init__(self, store: RelayStore, on_accept: Callable[[], None], stopping: Callable[[], bool]):
        self.store = store
        self.on_accept = on_accept
        self.stopping = stopping

    @translate_errors(field_prefix="envelope.")
    def SubmitEnvelope(self, request: rpb.SubmitEnvelopeRequest, context: grpc.ServicerContext) -> rpb.SubmitEnvelopeResponse:
        envelope = request.envelope
        findings = []
        if not MESSAGE_ID_PATTERN.fullmatch(envelope.message_id):
            findings.append(Finding("MESSAGE_ID_MALFORMED", "message_id", "1-128 characters of A-Z a-z 0-9 . _ : -"))
        if not envelope.sender:
            findings.append(Finding("SENDER_MISSING", "sender", "is required"))
        if not envelope.signature:
            findings.append(Finding("SIGNATURE_MISSING", "signature", "the relay carries signed envelopes only"))
        if findings:
            raise DomainError(findings[0].code, "the envelope cannot be relayed", ErrorKind.INVALID, findings)
        try:
            # The call's request id and trace go with the envelope: forwarding it later continues them.
            accepted = self.store.accept(envelope.sender, envelope.message_id, envelope.SerializeToString(),
                                         request_id=request_id_var.get(), trace_context=json.dumps(tracing.carrier()) if tracing.enabled() else "")
        except MessageIdReused:
            raise DomainError(
                "MESSAGE_ID_REUSED", "this message id was already used for another envelope", ErrorKind.ALREADY_EXISTS,
                [Finding("MESSAGE_ID_REUSED", "message_id", "already used for an envelope with other content")],
            ) from None
        if not accepted.duplicate:
            self.on_accept()
        message = accepted.message
        return rpb.SubmitEnvelopeResponse(
            message_id=message.message_id, accepted_at=_stamp(message.accepted_at), duplicate=accepted.duplicate,
            state=STATE_TO_PROTO[message.state],
        )

    @translate_errors()
    def ListDeliveries(self, request: rpb.ListDeliveriesRequest, context: grpc.ServicerContext) -> rpb.ListDeliveriesResponse:
        if request.page_size < 0 or request.after_sequence < 0:
            raise DomainError("PAGE_SIZE_NEGATIVE", "page_size and after_sequence must not be negative", ErrorKind.INVALID,
                              [Finding("PAGE_SIZE_NEGATIVE", "page_size", "must not be negative")])
        size = min(request.page_size or 100, 1000)
        rows = self.store.finished_after(_senders(context), request.after_sequence, size)
        return rpb.ListDeliveriesResponse(
            deliveries=[delivery_to_proto(m) for m in rows], last_sequence=rows[-1].sequence if rows else request.after_sequence
        )

    def WatchDeliveries(self, request: rpb.WatchDeliveriesRequest, context: grpc.ServicerContext) -> Iterator[rpb.Delivery]:
        senders = _senders(context)
        cursor = max(0, request.after_sequence)
        while context.is_active() and not self.stopping():
            rows = self.store.finished_after(senders, cursor, 100)
            for message in rows:
                yield delivery_to_proto(message)
                cursor = message.sequence or cursor
            if not rows:
                with self.store.finished:
                    self.store.finished.wait(0.5)

    @translate_errors()
    def GetDelivery(self, request: rpb.GetDeliveryRequest, context: grpc.ServicerContext) -> rpb.GetDeliveryResponse:
        message = self.store.get(request.sender, request.message_id)
        if message is None:
            raise DomainError("MESSAGE_NOT_FOUND", "the relay holds no such message", ErrorKind.NOT_FOUND)
        return rpb.GetDeliveryResponse(delivery=delivery_to_proto(message))

    def GetRelayStats(self, request: rpb.GetRelayStatsRequest, context: grpc.ServicerContext) -> rpb.GetRelayStatsResponse:
        return rpb.GetRelayStatsResponse(counters=self.store.counters())
