"""Forwarding stored envelopes to customs: exponential backoff with full jitter, a retry horizon.

A worker loop takes what is due from the store, sends it, and records the answer. Because the store
is updated only after customs answered, a crash in between makes the envelope due again after a
restart: customs recognises the retry (same sender, message id and content) and returns the
original receipt, so nothing reaches customs' books twice.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from contract.constants import REQUEST_ID_HEADER
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from gateway_sim.relay.faults import Faults
from gateway_sim.relay.store import Message, RelayStore, State, digest_of
from service_kit import tracing
from service_kit.logs import request_id_var

if TYPE_CHECKING:
    from gateway_sim.relay.metrics import RelayMetrics

log = logging.getLogger(__name__)

# Answers that say "not now" rather than "no": the envelope is tried again later.
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}

# Answers about the relay itself, not the envelope: customs refused the relay's own credentials (its
# client certificate revoked or missing: UNAUTHENTICATED, whatever the reason; or without the relay
# role). Customs judged nothing, so the envelope is not rejected: it stays queued (retried with backoff
# to the horizon) until the operator installs a certificate customs accepts and the relay is
# restarted; a PERMISSION_DENIED about what the envelope says (COUNTRY_NOT_CALLERS) is the envelope's
# own refusal and final.
def refuses_the_relay(code: grpc.StatusCode, reason: str) -> bool:
    """Whether customs' answer refuses the relay's credentials rather than the envelope."""
    return code is grpc.StatusCode.UNAUTHENTICATED or (code is grpc.StatusCode.PERMISSION_DENIED and reason == "ROLE_NOT_ALLOWED")

@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 0.05
    cap_seconds: float = 5.0
    horizon_seconds: float = 3600.0  # after this long since acceptance, give up (EXPIRED)
    integrity_retries: int = 5  # SIGNATURE_INVALID may be damage on the way; retry from the durable copy

    def backoff(self, attempt: int, faults: Faults) -> float:
        """Full jitter: uniform over [0, min(cap, base * 2^attempt)]."""
        return faults.uniform(0.0, min(self.cap_seconds, self.base_seconds * (2 ** min(attempt, 30))))


@dataclass(frozen=True)
class Answer:
    response: tpb.SubmitCertificateResponse | None = None
    code: grpc.StatusCode | None = None
    reason: str = ""
    text: str = ""
    receipt: tpb.Receipt | None = None


class _Lost(Exception):
    """A simulated loss: the attempt (or its answer) vanished."""


def _answer_of(error: grpc.RpcError) -> Answer:
    reason, receipt = "", None
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(tpb.Receipt.DESCRIPTOR):
            receipt = tpb.Receipt()
            detail.Unpack(receipt)
    return Answer(code=error.code(), reason=reason, text=error.details() or "", receipt=receipt)


class Forwarder:
    def __init__(
        self,
        store: RelayStore,
        channel: grpc.Channel,
        *,
        policy: RetryPolicy | None = None,
        faults: Faults | None = None,
        workers: int = 4,
        call_timeout: float = 10.0,
        metrics: "RelayMetrics | None" = None,
    ):
        self.store = store
        self.stub = transmission_pb2_grpc.TransmissionServiceStub(channel)
        self.policy = policy or RetryPolicy()
        self.faults = faults or Faults()
        self.call_timeout = call_timeout
        self.metrics = metrics
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="relay-forward")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-forwarder", daemon=True)
        self._workers = workers

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self.store.due(time.time(), limit=self._workers * 4)
                if not batch:
                    next_at = self.store.next_due_at()
                    wait = 0.5 if next_at is None else max(0.0, min(0.5, next_at - time.time()))
                    self._wake.wait(wait)
                    self._wake.clear()
                    continue
                if self.faults.reorder:
                    self.faults.shuffle(batch)
                list(self._pool.map(self.forward, batch))
            except Exception:  # the loop must outlive any single failure; the store keeps the work
                log.exception("forwarding loop error")
                self._stop.wait(0.5)

    # -- one attempt -------------------------------------------------------------------------------

    def forward(self, message: Message) -> None:
        """One attempt, in the trace of the call that handed the envelope over (a span of its own),
        its lines logged with that call's request id."""
        parent = json.loads(message.trace_context) if message.trace_context else None
        token = request_id_var.set(message.request_id or message.message_id)
        try:
            with tracing.span("relay.forward", parent=parent, attributes={"ecert.message_id": message.message_id,
                                                                          "ecert.attempt": message.attempts + 1}):
                self._forward(message)
        finally:
            request_id_var.reset(token)

    def _forward(self, message: Message) -> None:
        if time.time() - message.accepted_at > self.policy.horizon_seconds:
            self.store.finish(
                message, State.EXPIRED, code=message.error_code or "DEADLINE_EXCEEDED", reason=message.error_reason or "RETRY_HORIZON_PASSED",
                text="no answer from customs within the retry horizon", attempted=False,
            )
            return
        if digest_of(message.envelope) != message.digest:  # the durable copy itself is damaged: never send it
            self.store.finish(message, State.REJECTED, code="DATA_LOSS", reason="RELAY_COPY_DAMAGED", text="the relay's stored copy is damaged", attempted=False)
            return
        envelope = tpb.SignedEnvelope.FromString(message.envelope)
        try:
            answer = self._attempt(envelope, message.request_id or message.message_id)
        except _Lost:
            answer = Answer(code=grpc.StatusCode.DEADLINE_EXCEEDED, reason="LOST_IN_TRANSIT", text="no answer (simulated loss)")
        self._record(message, answer)

    def _attempt(self, envelope: tpb.SignedEnvelope, request_id: str) -> Answer:
        faults = self.faults
        if faults.delay_ms:
            time.sleep(faults.uniform(0, faults.delay_ms) / 1000)
        if faults.roll(faults.unavailable):
            self.store.count("fault.unavailable")
            return Answer(code=grpc.StatusCode.UNAVAILABLE, reason="SERVICE_UNAVAILABLE", text="customs unavailable (simulated)")
        if faults.roll(faults.corrupt):
            self.store.count("fault.corrupt")
            envelope = faults.corrupt_one_byte(envelope)
        lose_request = faults.roll(faults.drop / 2)
        lose_answer = not lose_request and faults.roll(faults.drop / 2)
        if lose_request:
            self.store.count("fault.drop")
            raise _Lost()
        request = tpb.SubmitCertificateRequest(envelope=envelope)
        metadata = ((REQUEST_ID_HEADER, request_id),)  # the id the gateway's call carried
        try:
            response = self.stub.SubmitCertificate(request, timeout=self.call_timeout, metadata=metadata)
            answer = Answer(response=response)
        except grpc.RpcError as error:
            answer = _answer_of(error)
        if faults.roll(faults.duplicate):
            self.store.count("fault.duplicate")
            try:
                self.stub.SubmitCertificate(request, timeout=self.call_timeout, metadata=metadata)
            except grpc.RpcError:
                pass  # the twin's answer is not the one recorded
        if lose_answer:
            self.store.count("fault.drop")
            raise _Lost()
        return answer

    def _observe(self, outcome: str, retry_reason: str = "") -> None:
        if self.metrics is not None:
            self.metrics.forwarded.labels(outcome).inc()
            if retry_reason:
                self.metrics.retries.labels(retry_reason.lower()).inc()

    def _record(self, message: Message, answer: Answer) -> None:
        if answer.response is not None:
            self._observe("accepted")
            log.info("forwarded %s/%s: delivered%s", message.sender, message.message_id, " (replayed)" if answer.response.replayed else "",
                     extra={"message_id": message.message_id, "attempt": message.attempts + 1})
            self.store.finish(
                message, State.DELIVERED, receipt=answer.response.receipt.SerializeToString(), replayed=answer.response.replayed
            )
            return
        assert answer.code is not None
        integrity = answer.code is grpc.StatusCode.INVALID_ARGUMENT and answer.reason == "SIGNATURE_INVALID"
        held = refuses_the_relay(answer.code, answer.reason)
        if held:
            log.error("customs refuses this relay's credentials (%s %s): %s/%s held until a certificate customs accepts is installed",
                      answer.code.name, answer.reason, message.sender, message.message_id,
                      extra={"message_id": message.message_id, "attempt": message.attempts + 1})
        retry = held or answer.code in TRANSIENT or (integrity and message.integrity_failures < self.policy.integrity_retries)
        if retry:
            at = time.time() + self.policy.backoff(message.attempts, self.faults)
            self.store.retry_later(message, at, code=answer.code.name, reason=answer.reason, text=answer.text, integrity_failure=integrity)
            self._observe("error", answer.reason or answer.code.name)
            log.info("forwarding %s/%s: %s, retried later", message.sender, message.message_id, answer.reason or answer.code.name,
                     extra={"message_id": message.message_id, "attempt": message.attempts + 1})
            return
        self._observe("rejected")
        log.info("customs rejected %s/%s: %s", message.sender, message.message_id, answer.reason,
                 extra={"message_id": message.message_id, "attempt": message.attempts + 1})
        self.store.finish(
            message,
            State.REJECTED,
            receipt=answer.receipt.SerializeToString() if answer.receipt is not None else None,
            code=answer.code.name,
            reason=answer.reason,
            text=answer.text,
        )
