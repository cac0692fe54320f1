"""Traces across real processes: the gateway, the relay and the service as the other end-to-end tests
start them, each exporting its spans over OTLP/HTTP (the standard OTEL_* variables) to a collector
played here. One transmission: one trace id in all three logs, and spans for its RPCs and transaction."""
from __future__ import annotations

import gzip
import http.server
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse

from gateway_sim.processes import Party, start_relay, start_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


class Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: (service.name, trace id, span name, kind, parent span id, attributes) per span."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[dict] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receive(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: a.value.string_value or a.value.int_value or a.value.bool_value for a in span.attributes}
                    found.append({"service": service, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(), "name": span.name,
                                  "kind": span.kind, "parent": span.parent_span_id.hex(), "attributes": attributes})
        with self.server.lock:
            self.server.spans.extend(found)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def lines_of(party: Party, request_id: str) -> list[dict]:
    return [line for line in json_lines(party.log.read_text(errors="replace")) if line.get("request_id") == request_id]


def wait_for(what, seconds: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        found = what()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_one_trace_id_in_the_gateways_the_relays_and_the_services_lines_and_spans(world, collector):
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    world.service.stop()  # the fixture's service, restarted on the same data with the exporter on
    world.service = start_service(world.pki, world.root / "service", env=otel)
    world.relays.append(start_relay(world.pki, world.root / "relay", world.service.address, env=otel))

    done = subprocess.run(world.gateway_args("burst", "--count", "1"), capture_output=True, text=True, timeout=40, env={**os.environ, **otel})
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["receipts"] == 1
    [sent] = [line for line in json_lines(done.stderr) if line["msg"].startswith("sent ") and line["msg"].endswith("stored")]
    request_id = sent["request_id"]
    message_id = sent["message_id"]
    assert len(request_id) == 32 and request_id != message_id  # the gateway's trace id, not the message id

    # One grep of that id finds every hop: the relay's call and its forwarding, customs' call.
    relay_lines = lines_of(world.relay, request_id)
    assert {line.get("method") or line["msg"] for line in relay_lines} >= {
        "/ecert.relay.v1.RelayService/SubmitEnvelope", f"forwarded MX/{message_id}: delivered"}
    service_lines = wait_for(lambda: lines_of(world.service, request_id))
    assert [(line["method"], line["code"]) for line in service_lines if line["logger"] == "ecert.rpc"] == [
        ("/ecert.v1.TransmissionService/SubmitCertificate", "OK")]

    # The same trace in the three processes' exported spans, down to customs' transaction.
    def trace() -> list[dict]:
        with collector.lock:
            spans = [s for s in collector.spans if s["trace_id"] == request_id]
        return spans if any(s["name"] == "db.transaction" and s["service"] == "ecert-service" for s in spans) else []

    spans = wait_for(trace)
    named = {(s["service"], s["name"]) for s in spans}
    assert named >= {
        ("ecert-gateway", "gateway.send"),
        ("ecert-gateway", "ecert.relay.v1.RelayService/SubmitEnvelope"),
        ("ecert-relay", "ecert.relay.v1.RelayService/SubmitEnvelope"),
        ("ecert-relay", "relay.forward"),
        ("ecert-relay", "ecert.v1.TransmissionService/SubmitCertificate"),
        ("ecert-service", "ecert.v1.TransmissionService/SubmitCertificate"),
        ("ecert-service", "db.transaction"),
    }
    by_id = {s["span_id"]: s for s in spans}
    [served] = [s for s in spans if s["service"] == "ecert-service" and s["name"].endswith("SubmitCertificate")]
    assert by_id[served["parent"]]["service"] == "ecert-relay"  # customs' span is the relay's call's child
    assert any(s["name"] == "db.transaction" and s["parent"] == served["span_id"] and s["attributes"].get("ecert.committed")
               for s in spans)
