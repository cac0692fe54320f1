"""Traces in-process: the gateway, the relay and the service (real mutual TLS, real stores) with an
in-memory span exporter. One transmission is one trace, its id the request id every hop logs."""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from contract.keys import load_signer
from ecert.relay.v1 import relay_pb2 as rpb
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from gateway_sim.gateway.gateway import Gateway
from gateway_sim.gateway.register import Register
from gateway_sim.relay.store import RelayStore
from service_kit import tracing
from service_kit.logs import JsonFormatter
from tests.factories import certificate, envelope
from tests.integration.test_relay import now, relay, stub, wait_finished  # noqa: F401 (fixture)
from tests.tls_fixtures import channel_as, pki, secure_server  # noqa: F401 (fixtures)

HEX32 = set("0123456789abcdef")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


class JsonLines(logging.Handler):
    """Every record formatted as `ecert serve` writes it, when it is logged (in the thread logging it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def json_lines() -> Iterator[JsonLines]:
    handler = JsonLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def hexid(value: int, digits: int = 32) -> str:
    return format(value, f"0{digits}x")


def test_one_transmission_is_one_trace_through_gateway_relay_and_service(pki, secure_server, relay, spans, json_lines, tmp_path):  # noqa: F811
    customs_key = load_signer(pki.layout.receipt_key, "any").public_key
    gateway = Gateway(Register(tmp_path / "register.db"), pki.layout.document_signer(), channel_as(pki, "gateway-mx", relay.port),
                      seed=5, customs_key=customs_key)
    [message_id] = gateway.issue(1)
    assert gateway.settle(20, poll=0.05) and gateway.tally.receipts == 1

    [send] = [s for s in spans.get_finished_spans() if s.name == "gateway.send"]
    trace_id = send.context.trace_id
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    by_name = {}
    for span in in_trace:
        by_name.setdefault((span.name, span.kind), []).append(span)
    relay_client = by_name[("ecert.relay.v1.RelayService/SubmitEnvelope", SpanKind.CLIENT)][0]
    relay_server = by_name[("ecert.relay.v1.RelayService/SubmitEnvelope", SpanKind.SERVER)][0]
    [forward] = by_name[("relay.forward", SpanKind.INTERNAL)]
    customs_client = by_name[("ecert.v1.TransmissionService/SubmitCertificate", SpanKind.CLIENT)][0]
    customs_server = by_name[("ecert.v1.TransmissionService/SubmitCertificate", SpanKind.SERVER)][0]
    transactions = by_name[("db.transaction", SpanKind.INTERNAL)]

    # One chain of parents: gateway -> relay (stored, forwarded later in its own thread) -> customs -> database.
    assert relay_client.parent.span_id == send.context.span_id
    assert relay_server.parent.span_id == relay_client.context.span_id and relay_server.parent.is_remote
    # Forwarding starts once the envelope is stored, in the relay's own thread: possibly before the call's
    # span has ended (its answer still on the way), never before the call began.
    assert forward.parent.span_id == relay_server.context.span_id and forward.start_time > relay_server.start_time
    assert customs_client.parent.span_id == forward.context.span_id
    assert customs_server.parent.span_id == customs_client.context.span_id and customs_server.parent.is_remote
    assert any(t.parent.span_id == customs_server.context.span_id and t.attributes["ecert.write"] and t.attributes["ecert.committed"]
               for t in transactions)
    assert all(t.attributes["db.system"] == "sqlite" for t in transactions)
    assert customs_server.attributes["rpc.grpc.status_code"] == 0 and customs_server.attributes["rpc.service"] == "ecert.v1.TransmissionService"
    assert forward.attributes["ecert.message_id"] == message_id

    # The request id every hop logs is the trace id: the gateway's line, the relay's call and forwarding, customs' call.
    rid = hexid(trace_id)
    mine = [line for line in json_lines.lines if line.get("request_id") == rid]
    assert {(line["logger"], line.get("method", line["msg"].split(":")[0])) for line in mine} >= {
        ("gateway_sim.gateway.gateway", f"sent {message_id} to the relay"),
        ("ecert.rpc", "/ecert.relay.v1.RelayService/SubmitEnvelope"),
        ("gateway_sim.relay.forwarder", f"forwarded MX/{message_id}"),
        ("ecert.rpc", "/ecert.v1.TransmissionService/SubmitCertificate"),
    }
    assert not any("trace_id" in line for line in mine)  # said once: the request id is the trace id


def test_a_callers_trace_is_continued_and_its_own_request_id_kept(pki, secure_server, spans, json_lines):  # noqa: F811
    stub_ = transmission_pb2_grpc.TransmissionServiceStub(channel_as(pki, "gateway-mx", secure_server.port))
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traceparent = ("traceparent", f"00-{caller_trace}-{caller_span}-01")
    request = tpb.SubmitCertificateRequest(envelope=envelope(pki.layout.document_signer(), message_id="traced-1", sent_at=now()))

    # A traced caller without a request id of its own: its trace id is the request id, echoed in the trailers.
    _, call = stub_.SubmitCertificate.with_call(request, timeout=5, metadata=(traceparent,))
    assert dict(call.trailing_metadata())["x-request-id"] == caller_trace
    [served] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert hexid(served.context.trace_id) == caller_trace and hexid(served.parent.span_id, 16) == caller_span
    [line] = [line for line in json_lines.lines if line["logger"] == "ecert.rpc"]
    assert line["request_id"] == caller_trace and "trace_id" not in line

    # A caller that names its request id keeps it; the line names the trace too, so both greps find it.
    spans.clear()
    json_lines.lines.clear()
    with pytest.raises(grpc.RpcError) as caught:  # the same message id, other content: refused
        other = tpb.SubmitCertificateRequest(envelope=envelope(pki.layout.document_signer(), certificate("MX26-00000002"), message_id="traced-1", sent_at=now()))
        stub_.SubmitCertificate(other, timeout=5, metadata=(traceparent, ("x-request-id", "partner-42")))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert dict(caught.value.trailing_metadata())["x-request-id"] == "partner-42"
    [line] = [line for line in json_lines.lines if line["logger"] == "ecert.rpc"]
    assert line["request_id"] == "partner-42" and line["trace_id"] == caller_trace and line["code"] == "ALREADY_EXISTS"
    [served] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert served.attributes["rpc.grpc.status_code"] == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert served.status.status_code != StatusCode.ERROR  # the caller's mistake, not a server fault


def test_untraced_callers_get_a_fresh_trace_and_untraced_processes_log_as_before(pki, secure_server, spans, json_lines):  # noqa: F811
    stub_ = transmission_pb2_grpc.TransmissionServiceStub(channel_as(pki, "customs", secure_server.port))
    missing = tpb.GetCertificateRequest(issuing_country="MX", certificate_number="NONE-1")
    with pytest.raises(grpc.RpcError) as caught:
        stub_.GetCertificate(missing, timeout=5)
    rid = dict(caught.value.trailing_metadata())["x-request-id"]
    [served] = spans.get_finished_spans()[-1:]
    assert served.kind == SpanKind.SERVER and served.parent is None and hexid(served.context.trace_id) == rid
    assert any(t.name == "db.transaction" and t.context.trace_id == served.context.trace_id for t in spans.get_finished_spans())

    tracing.use_provider(None)  # tracing off (OTEL_SDK_DISABLED=true): no spans, ids made up as before
    spans.clear()
    json_lines.lines.clear()
    with pytest.raises(grpc.RpcError) as caught:
        stub_.GetCertificate(missing, timeout=5, metadata=(("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),))
    rid = dict(caught.value.trailing_metadata())["x-request-id"]
    assert len(rid) == 32 and set(rid) <= HEX32 and rid != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert spans.get_finished_spans() == ()
    [line] = [line for line in json_lines.lines if line["logger"] == "ecert.rpc"]
    assert line["request_id"] == rid and "trace_id" not in line


def test_a_stream_is_one_span_that_ends_when_the_client_goes_away(pki, secure_server, relay, spans):  # noqa: F811
    gateway = stub(pki, "gateway-mx", relay)
    gateway.SubmitEnvelope(rpb.SubmitEnvelopeRequest(envelope=envelope(pki.layout.document_signer(), message_id="s-1", sent_at=now())), timeout=5)
    [delivery] = wait_finished(gateway, 1)  # reads one message, then cancels
    assert delivery.message_id == "s-1"
    for _ in range(100):
        watched = [s for s in spans.get_finished_spans() if s.name == "ecert.relay.v1.RelayService/WatchDeliveries"]
        if watched:
            break
        time.sleep(0.05)
    [watch] = watched
    assert watch.kind == SpanKind.SERVER and watch.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]


def test_a_relay_store_written_before_traces_opens_and_forwards(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the messages table as the first relays wrote it
        db.executescript(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, sender TEXT NOT NULL, message_id TEXT NOT NULL, digest BLOB NOT NULL, "
            "envelope BLOB NOT NULL, accepted_at REAL NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
            "integrity_failures INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, sequence INTEGER UNIQUE, finished_at REAL, "
            "receipt BLOB, replayed INTEGER NOT NULL DEFAULT 0, error_code TEXT NOT NULL DEFAULT '', error_reason TEXT NOT NULL DEFAULT '', "
            "error_message TEXT NOT NULL DEFAULT '', UNIQUE (sender, message_id));"
            "INSERT INTO messages (sender, message_id, digest, envelope, accepted_at, state, next_attempt_at) "
            "VALUES ('MX', 'old-1', x'00', x'00', 1.0, 'PENDING', 1.0);"
        )
    store = RelayStore(path)
    try:
        [held] = store.due(2.0, 10)
        assert (held.message_id, held.request_id, held.trace_context) == ("old-1", "", "")  # forwarded with the message id, a new trace
        accepted = store.accept("MX", "new-1", b"x", request_id="r-1", trace_context='{"traceparent": "00-x"}')
        assert (accepted.message.request_id, accepted.message.trace_context) == ("r-1", '{"traceparent": "00-x"}')
    finally:
        store.close()


@pytest.mark.parametrize(
    ("variables", "exporter"),
    [
        ({}, None),  # the default: nothing leaves the process
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
         "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "opentelemetry.sdk.trace.export"),
    ],
)
def test_the_exporter_is_the_one_the_standard_variables_ask_for(monkeypatch, variables, exporter):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
                 "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    made = tracing._exporter()
    assert (made and type(made).__module__) == exporter
    if made is not None:
        made.shutdown()


def test_an_exporter_that_is_not_offered_stops_the_start_with_one_line(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER=zipkin is not supported"):
        tracing.configure("ecert-test")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")  # off: no exporter is even looked at
    assert tracing.configure("ecert-test") is False and not tracing.enabled()
