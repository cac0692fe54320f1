"""The relay in-process against a real mutual-TLS service: acks, dedupe, receipts back, scoping, giving up."""
from __future__ import annotations

import datetime as dt
import pathlib
import socket
import time
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import text

from contract.keys import load_signer
from contract.messages import receipt_from_proto
from ecert.relay.v1 import relay_pb2 as rpb
from ecert.relay.v1 import relay_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from gateway_sim.relay.app import RelaySettings, RunningRelay, create_relay
from gateway_sim.relay.faults import Faults
from gateway_sim.relay.forwarder import RetryPolicy, refuses_the_relay
from tests.factories import certificate, envelope
from tests.grpc_errors import rich_error
from tests.tls_fixtures import DevPki, channel_as, pki, secure_server  # noqa: F401  (fixtures)

FAST = RetryPolicy(base_seconds=0.01, cap_seconds=0.1, horizon_seconds=60)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_relay(pki: DevPki, tmp_path: pathlib.Path, service: str, **kwargs: object) -> RunningRelay:
    return create_relay(RelaySettings(store=tmp_path / "relay.db", service=service, tls_dir=pki.dir("relay"), **kwargs))  # type: ignore[arg-type]


@pytest.fixture
def relay(pki, secure_server, tmp_path) -> Iterator[RunningRelay]:
    running = make_relay(pki, tmp_path, f"127.0.0.1:{secure_server.port}", policy=FAST)
    yield running
    running.stop(0)


def stub(pki: DevPki, party: str, relay: RunningRelay) -> relay_pb2_grpc.RelayServiceStub:
    return relay_pb2_grpc.RelayServiceStub(channel_as(pki, party, relay.port))


def send(relay_stub, env):  # type: ignore[no-untyped-def]
    return relay_stub.SubmitEnvelope(rpb.SubmitEnvelopeRequest(envelope=env), timeout=5)


def wait_finished(relay_stub, count: int, after: int = 0) -> list[rpb.Delivery]:  # type: ignore[no-untyped-def]
    stream = relay_stub.WatchDeliveries(rpb.WatchDeliveriesRequest(after_sequence=after), timeout=20)
    got = []
    for delivery in stream:
        got.append(delivery)
        if len(got) == count:
            stream.cancel()
            break
    return got


def transmissions(server) -> int:  # type: ignore[no-untyped-def]
    with server.database.read_engine.connect() as connection:
        return connection.execute(text("SELECT COUNT(*) FROM transmissions")).scalar_one()


def test_acknowledged_envelopes_come_back_with_customs_receipt(pki, secure_server, relay):
    gateway = stub(pki, "gateway-mx", relay)
    env = envelope(pki.layout.document_signer(), sent_at=now())
    ack = send(gateway, env)
    assert (ack.message_id, ack.duplicate, ack.state) == ("msg-0001", False, rpb.DELIVERY_STATE_PENDING)

    [delivery] = wait_finished(gateway, 1)
    assert delivery.state == rpb.DELIVERY_STATE_DELIVERED and delivery.sequence == 1 and delivery.attempts == 1
    customs_key = load_signer(pki.layout.receipt_key, "any").public_key
    assert receipt_from_proto(delivery.receipt).verify(customs_key)
    assert delivery.receipt.message_id == "msg-0001" and delivery.receipt.certificate_version == 1

    pulled = gateway.ListDeliveries(rpb.ListDeliveriesRequest(), timeout=5)
    assert [d.message_id for d in pulled.deliveries] == ["msg-0001"] and pulled.last_sequence == 1
    assert not gateway.ListDeliveries(rpb.ListDeliveriesRequest(after_sequence=1), timeout=5).deliveries
    got = gateway.GetDelivery(rpb.GetDeliveryRequest(sender="MX", message_id="msg-0001"), timeout=5).delivery
    assert got.receipt.receipt_id == delivery.receipt.receipt_id


def test_a_resent_envelope_is_acknowledged_as_duplicate_and_forwarded_once(pki, secure_server, relay):
    gateway = stub(pki, "gateway-mx", relay)
    env = envelope(pki.layout.document_signer(), sent_at=now())
    send(gateway, env)
    wait_finished(gateway, 1)
    again = send(gateway, env)
    assert again.duplicate and again.state == rpb.DELIVERY_STATE_DELIVERED
    counters = gateway.GetRelayStats(rpb.GetRelayStatsRequest(), timeout=5).counters
    assert (counters["accepted"], counters["duplicates"], counters["attempts"]) == (1, 1, 1)
    assert transmissions(secure_server) == 1


def test_a_message_id_reused_for_other_bytes_is_refused(pki, relay):
    gateway = stub(pki, "gateway-mx", relay)
    signer = pki.layout.document_signer()
    send(gateway, envelope(signer, sent_at=now()))
    with pytest.raises(grpc.RpcError) as caught:
        send(gateway, envelope(signer, certificate(quantity="5"), sent_at=now()))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "MESSAGE_ID_REUSED")
    assert error.fields == {"envelope.message_id": "MESSAGE_ID_REUSED"}


def test_an_envelope_the_relay_cannot_carry_is_invalid(pki, relay):
    gateway = stub(pki, "gateway-mx", relay)
    with pytest.raises(grpc.RpcError) as caught:
        send(gateway, tpb.SignedEnvelope(sender="MX", message_id="has space"))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.fields == {"envelope.message_id": "MESSAGE_ID_MALFORMED", "envelope.signature": "SIGNATURE_MISSING"}
    assert gateway.GetRelayStats(rpb.GetRelayStatsRequest(), timeout=5).counters.get("accepted", 0) == 0


def test_partners_see_only_their_own_deliveries(pki, relay):
    send(stub(pki, "gateway-mx", relay), envelope(pki.layout.document_signer(), sent_at=now()))
    wait_finished(stub(pki, "gateway-mx", relay), 1)
    guatemala = stub(pki, "partner-gt", relay)
    assert not guatemala.ListDeliveries(rpb.ListDeliveriesRequest(), timeout=5).deliveries
    with pytest.raises(grpc.RpcError) as caught:
        guatemala.GetDelivery(rpb.GetDeliveryRequest(sender="MX", message_id="msg-0001"), timeout=5)
    assert rich_error(caught.value).reason == "COUNTRY_NOT_CALLERS"
    with pytest.raises(grpc.RpcError) as caught:
        send(stub(pki, "importer", relay), envelope(pki.layout.document_signer(), sent_at=now()))
    assert rich_error(caught.value).reason == "ROLE_NOT_ALLOWED"


def test_customs_rejection_travels_back_with_its_signed_receipt(pki, secure_server, relay):
    gateway = stub(pki, "gateway-mx", relay)
    send(gateway, envelope(pki.layout.document_signer(), certificate(htsus_number="61x9"), sent_at=now()))
    [delivery] = wait_finished(gateway, 1)
    assert delivery.state == rpb.DELIVERY_STATE_REJECTED
    assert (delivery.error_code, delivery.error_reason) == ("INVALID_ARGUMENT", "HTSUS_NUMBER_MALFORMED")
    assert delivery.receipt.outcome == tpb.TRANSMISSION_OUTCOME_REJECTED
    assert transmissions(secure_server) == 0


def deliver_one(pki: DevPki, tmp_path: pathlib.Path, service: str, **relay_options: object):  # type: ignore[no-untyped-def]
    """One envelope through a relay of its own towards `service`: its delivery once finished."""
    relay = make_relay(pki, tmp_path, service, **relay_options)
    try:
        gateway = stub(pki, "gateway-mx", relay)
        send(gateway, envelope(pki.layout.document_signer(), sent_at=now()))
        [delivery] = wait_finished(gateway, 1)
    finally:
        relay.stop(0)
    return delivery


def test_a_relay_that_always_damages_payloads_never_gets_one_stored(pki, secure_server, tmp_path):
    delivery = deliver_one(
        pki, tmp_path, f"127.0.0.1:{secure_server.port}",
        policy=RetryPolicy(base_seconds=0.01, cap_seconds=0.02, integrity_retries=2), faults=Faults(corrupt=1.0, seed=3),
    )
    assert (delivery.state, delivery.error_reason, delivery.attempts) == (rpb.DELIVERY_STATE_REJECTED, "SIGNATURE_INVALID", 3)
    assert transmissions(secure_server) == 0


def test_without_customs_the_relay_retries_until_the_horizon(pki, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    delivery = deliver_one(pki, tmp_path, f"127.0.0.1:{closed}", policy=RetryPolicy(base_seconds=0.01, cap_seconds=0.05, horizon_seconds=1.0))
    assert delivery.state == rpb.DELIVERY_STATE_EXPIRED and delivery.error_code == "UNAVAILABLE"
    assert delivery.attempts > 1


def test_the_relay_exports_prometheus_metrics(pki, secure_server, tmp_path):
    import urllib.request

    relay = make_relay(pki, tmp_path, f"127.0.0.1:{secure_server.port}", policy=FAST, metrics_port=0,
                       faults=Faults(unavailable=0.5, seed=4))
    try:
        gateway = stub(pki, "gateway-mx", relay)
        signer = pki.layout.document_signer()
        for n in range(4):
            send(gateway, envelope(signer, certificate(f"MX26-0000000{n + 1}"), message_id=f"m-{n}", sent_at=now()))
        wait_finished(gateway, 4)
        page = urllib.request.urlopen(f"http://127.0.0.1:{relay.http.port}/metrics", timeout=5).read().decode()
    finally:
        relay.stop(0)
    assert 'ecert_relay_forwarded_total{outcome="accepted"} 4.0' in page
    assert "ecert_relay_queue_depth 0.0" in page
    assert 'ecert_relay_retries_total{reason="service_unavailable"}' in page


def test_a_relay_whose_certificate_customs_revoked_holds_its_envelopes_until_renewed(pki, tmp_path):
    """Customs refusing the relay's own certificate (CERTIFICATE_REVOKED) judged no envelope: what the
    relay acknowledged stays queued, not rejected, and lands once the operator installs a renewed
    certificate and restarts the relay on its store."""
    from dataclasses import replace

    from client.pki import PARTIES, SERVER_NAMES, issue, load_authority, serial_of, write_crl, write_party
    from client.tls import server_credentials
    from server.app import create_server
    from tests.tls_fixtures import service_settings

    authority = load_authority(pki.root / "ca")
    crl = write_crl(authority, tmp_path / "crl.pem", {serial_of(pki.dir("relay") / "cert.pem", authority): "keyCompromise"})
    assert crl is not None
    settings = replace(service_settings(pki, tmp_path / "service"), revocation_list=str(tmp_path / "crl.pem"))
    service = create_server(settings, address="127.0.0.1:0", credentials=server_credentials(pki.dir("service")))
    address = f"127.0.0.1:{service.port}"
    policy = RetryPolicy(base_seconds=0.01, cap_seconds=0.05, horizon_seconds=60)
    relay = make_relay(pki, tmp_path, address, policy=policy)
    try:
        gateway = stub(pki, "gateway-mx", relay)
        env = envelope(pki.layout.document_signer(), sent_at=now())
        assert send(gateway, env).state == rpb.DELIVERY_STATE_PENDING
        deadline = dt.datetime.now() + dt.timedelta(seconds=20)
        while True:
            held = gateway.GetDelivery(rpb.GetDeliveryRequest(sender="MX", message_id=env.message_id), timeout=5).delivery
            if held.attempts >= 3 or dt.datetime.now() > deadline:
                break
            time.sleep(0.05)
        assert (held.state, held.error_code, held.error_reason) == (rpb.DELIVERY_STATE_PENDING, "UNAUTHENTICATED", "CERTIFICATE_REVOKED")
        assert held.attempts >= 3 and transmissions(service) == 0
    finally:
        relay.stop(0)
    renewed = write_party(tmp_path / "relay-renewed", authority, issue(authority, PARTIES["relay"], server_names=SERVER_NAMES))
    relay = create_relay(RelaySettings(store=tmp_path / "relay.db", service=address, tls_dir=renewed, policy=policy))
    try:
        gateway = stub(pki, "gateway-mx", relay)
        [delivered] = wait_finished(gateway, 1)
        assert (delivered.message_id, delivered.state) == (env.message_id, rpb.DELIVERY_STATE_DELIVERED)
        assert transmissions(service) == 1
    finally:
        relay.stop(0)
        service.stop(0)


def test_only_refusals_of_the_relay_itself_hold_an_envelope():
    """Refusals of the relay's credentials hold the envelope; refusals of what the envelope says are final."""
    assert refuses_the_relay(grpc.StatusCode.UNAUTHENTICATED, "CERTIFICATE_REVOKED")
    assert refuses_the_relay(grpc.StatusCode.UNAUTHENTICATED, "CLIENT_CERTIFICATE_REQUIRED")
    assert refuses_the_relay(grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    assert not refuses_the_relay(grpc.StatusCode.PERMISSION_DENIED, "COUNTRY_NOT_CALLERS")
    assert not refuses_the_relay(grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_INVALID")
    assert not refuses_the_relay(grpc.StatusCode.FAILED_PRECONDITION, "CERTIFICATE_NOT_ACTIVE")
