"""The Mexican gateway: issue, sign, send through the relay, collect receipts, re-send, amend, cancel."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contract.constants import REQUEST_ID_HEADER
from contract.envelope import digest as envelope_digest
from contract.envelope import seal
from contract.messages import ACTION_NAMES, receipt_from_proto
from contract.signing import Signer
from ecert.relay.v1 import relay_pb2 as rpb
from ecert.relay.v1 import relay_pb2_grpc
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import transmission_pb2 as tpb
from gateway_sim.gateway.generator import MISTAKES, CertificateGenerator, with_mistake
from gateway_sim.gateway.register import Register, SendState, Sent
from service_kit import tracing

log = logging.getLogger(__name__)

# Relay answers after which re-sending the same envelope cannot help.
_FINAL_FROM_RELAY = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED}


@dataclass
class Tally:
    sent: int = 0
    resent: int = 0
    relay_unreachable: int = 0
    receipts: int = 0
    rejections: int = 0
    bad_receipts: int = 0  # receipts that do not name what we sent, or fail customs' signature
    unverified_receipts: int = 0  # receipts taken without checking customs' signature (no customs key given)


class Gateway:
    def __init__(
        self,
        register: Register,
        signer: Signer,
        relay: grpc.Channel,
        *,
        sender: str = "MX",
        seed: int | None = None,
        resend_after: float = 5.0,
        customs_key: Ed25519PublicKey | None = None,
        call_timeout: float = 5.0,
    ):
        self.register = register
        self.signer = signer
        self.relay = relay_pb2_grpc.RelayServiceStub(tracing.traced_channel(relay))
        self.sender = sender
        self.generator = CertificateGenerator(seed, country=sender)
        self.resend_after = resend_after
        self.customs_key = customs_key
        self.call_timeout = call_timeout
        self.tally = Tally()

    # -- issuing -----------------------------------------------------------------------------------

    def _transmit(self, certificate: cpb.Certificate, action: int, replaces_version: int = 0) -> str:
        target_version = replaces_version + 1
        message_id = f"{certificate.certificate_number}.{ACTION_NAMES[action]}.v{target_version}.{uuid.uuid4().hex[:8]}"
        envelope = seal(
            tpb.SignedEnvelope(message_id=message_id, sender=self.sender, action=action, certificate=certificate, replaces_version=replaces_version),
            self.signer,
        )
        self.register.add(message_id, certificate.certificate_number, ACTION_NAMES[action], envelope.SerializeToString(), envelope_digest(envelope))
        self.send(message_id)  # registered first: a crash here still leaves it to re-send
        return message_id

    def issue(self, count: int = 1) -> list[str]:
        return [self._transmit(self.generator.certificate(self.register.next_serial()), tpb.TRANSMISSION_ACTION_CREATE) for _ in range(count)]

    def issue_large(self, quantities: list[int], *, tpl: str = "9823.53.06") -> list[str]:
        """Unusually large shipments under one TPL (e.g. to see a level fill), one per quantity."""
        return [
            self._transmit(self.generator.large_shipment(self.register.next_serial(), tpl, q), tpb.TRANSMISSION_ACTION_CREATE)
            for q in quantities
        ]

    def issue_mistaken(self, count: int = 1) -> list[str]:
        """Certificates with a clerical mistake (see generator.MISTAKES): customs must reject each."""
        ids = []
        for i in range(count):
            good = self.generator.certificate(self.register.next_serial())
            ids.append(self._transmit(with_mistake(good, MISTAKES[i % len(MISTAKES)]), tpb.TRANSMISSION_ACTION_CREATE))
        return ids

    def amend(self, count: int) -> list[str]:
        ids = []
        for number, blob, version in self.register.active_idle_certificates(count):
            changed = self.generator.amended(cpb.Certificate.FromString(blob))
            ids.append(self._transmit(changed, tpb.TRANSMISSION_ACTION_REPLACE, version))
        return ids

    def cancel(self, count: int) -> list[str]:
        ids = []
        for number, _blob, version in self.register.active_idle_certificates(count):
            target = cpb.Certificate(certificate_number=number, issuing_country=self.sender)
            ids.append(self._transmit(target, tpb.TRANSMISSION_ACTION_CANCEL, version))
        return ids

    # -- sending -----------------------------------------------------------------------------------

    def send(self, message_id: str) -> bool:
        sent = self.register.get(message_id)
        assert sent is not None
        envelope = tpb.SignedEnvelope.FromString(sent.envelope)
        # Each send is a trace of its own (when traced), the relay's forwarding and customs' handling in it;
        # its trace id is the request id every hop logs. Untraced, the message id is.
        with tracing.span("gateway.send", attributes={"ecert.message_id": message_id, "ecert.send": sent.sends + 1}):
            return self._send(sent, envelope, tracing.current_trace_id() or message_id)

    def _send(self, sent: Sent, envelope: tpb.SignedEnvelope, request_id: str) -> bool:
        message_id = sent.message_id
        fields = {"request_id": request_id, "message_id": message_id}
        try:
            answer = self.relay.SubmitEnvelope(rpb.SubmitEnvelopeRequest(envelope=envelope), timeout=self.call_timeout,
                                               metadata=((REQUEST_ID_HEADER, request_id),))
        except grpc.RpcError as error:
            log.info("sending %s to the relay: %s", message_id, error.code().name, extra=fields)
            if error.code() in _FINAL_FROM_RELAY:
                self.register.mark_sent(message_id, relayed=False)
                self.register.finish(message_id, SendState.REJECTED, reason=f"RELAY_{error.code().name}")
                self.tally.rejections += 1
            else:
                self.tally.relay_unreachable += 1  # kept open: re-sent after the timeout
                self.register.mark_sent(message_id, relayed=False)
            return False
        if sent.sends:
            self.tally.resent += 1
        else:
            self.tally.sent += 1
        self.register.mark_sent(message_id, relayed=True)
        log.info("sent %s to the relay: %s", message_id, "already held" if answer.duplicate else "stored", extra=fields)
        return True

    def resend_overdue(self, now: float | None = None) -> int:
        """Re-send, unchanged (same message id and signature), what the relay never acknowledged and
        what has had no receipt for `resend_after` seconds."""
        overdue = self.register.due_for_resend((now or time.time()) - self.resend_after)
        for sent in overdue:
            self.send(sent.message_id)
        return len(overdue)

    # -- receipts ----------------------------------------------------------------------------------

    def collect(self) -> int:
        """Pull finished deliveries from the relay since the last cursor; record each once."""
        recorded = 0
        while True:
            cursor = self.register.setting("relay_cursor")
            page = self.relay.ListDeliveries(rpb.ListDeliveriesRequest(after_sequence=cursor, page_size=500), timeout=self.call_timeout)
            for delivery in page.deliveries:
                recorded += self.record(delivery)
            self.register.set_setting("relay_cursor", page.last_sequence)
            if len(page.deliveries) < 500:
                return recorded

    def record(self, delivery: rpb.Delivery) -> int:
        sent = self.register.get(delivery.message_id)
        if sent is None or delivery.sender != self.sender:
            return 0
        if delivery.state == rpb.DELIVERY_STATE_DELIVERED:
            receipt = delivery.receipt
            problem = self._receipt_problem(receipt, sent.digest)
            if problem:
                self.tally.bad_receipts += 1
                return int(self.register.finish(sent.message_id, SendState.REJECTED, receipt=receipt.SerializeToString(), reason=problem))
            if not self.register.finish(sent.message_id, SendState.RECEIPTED, version=receipt.certificate_version, receipt=receipt.SerializeToString()):
                return 0
            self.tally.receipts += 1
            if self.customs_key is None:
                self.tally.unverified_receipts += 1
            envelope = tpb.SignedEnvelope.FromString(sent.envelope)
            if sent.action == "CANCEL":
                self.register.mark_canceled(sent.certificate_number, receipt.certificate_version)
            else:
                self.register.set_certificate(sent.certificate_number, envelope.certificate.SerializeToString(), receipt.certificate_version, "ACTIVE")
            return 1
        if delivery.state in (rpb.DELIVERY_STATE_REJECTED, rpb.DELIVERY_STATE_EXPIRED):
            state = SendState.REJECTED if delivery.state == rpb.DELIVERY_STATE_REJECTED else SendState.EXPIRED
            receipt = delivery.receipt.SerializeToString() if delivery.HasField("receipt") else None
            if self.register.finish(sent.message_id, state, receipt=receipt, reason=delivery.error_reason or delivery.error_code):
                self.tally.rejections += 1
                return 1
        return 0

    def _receipt_problem(self, receipt: tpb.Receipt, digest: bytes) -> str:
        if receipt.digest_sha256 != digest:
            return "RECEIPT_DIGEST_MISMATCH"
        if self.customs_key is not None and not receipt_from_proto(receipt).verify(self.customs_key):
            return "RECEIPT_SIGNATURE_INVALID"
        return ""

    def settle(self, timeout: float, *, poll: float = 0.2, on_tick: Callable[[], None] | None = None) -> bool:
        """Collect receipts and re-send overdue envelopes until nothing is open, or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.collect()
            except grpc.RpcError as error:
                log.info("relay not reachable for receipts: %s", error.code().name)
            if not self.open_count():
                return True
            if time.monotonic() >= deadline:
                return False
            self.resend_overdue()
            if on_tick:
                on_tick()
            time.sleep(poll)

    def open_count(self) -> int:
        counts = self.register.counts()
        return counts.get(SendState.NEW.value, 0) + counts.get(SendState.RELAYED.value, 0)
