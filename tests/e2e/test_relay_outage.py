"""Customs down for longer than the skew window: what the relay acknowledged still lands, once.

Three real processes (relay, then ecert serve) with real certificates and signatures. The outage is
played by starting the service late with its clock moved ahead (ECERT_CLOCK_OFFSET_SECONDS): to
customs, the envelopes the relay held arrive 25 minutes after they were signed, more than the 600 s
that used to bound a sent_at on both sides.
"""
from __future__ import annotations

import datetime as dt
import pathlib
import socket
import sqlite3
import time
from collections.abc import Iterator

import pytest

from client.pki import PkiLayout, init_pki
from client.tls import secure_channel
from contract.keys import load_public_key
from contract.messages import receipt_from_proto
from ecert.relay.v1 import relay_pb2 as rpb
from ecert.relay.v1 import relay_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from gateway_sim.processes import Party, start_relay, start_service
from tests.factories import certificate, envelope

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 25 * 60
COUNT = 6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def parties(tmp_path: pathlib.Path) -> Iterator[list[Party]]:
    started: list[Party] = []
    yield started
    for party in reversed(started):
        party.stop()


def hold_envelopes_through_an_outage(tmp_path: pathlib.Path, parties: list[Party], service_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """COUNT envelopes acknowledged by a relay while customs is down, then customs up OUTAGE_SECONDS
    later (by its clock); returns the finished deliveries, the envelopes and the service's data dir."""
    init_pki(tmp_path / "pki")
    pki = tmp_path / "pki"
    address = f"127.0.0.1:{free_port()}"  # customs' address, nobody listening yet
    relay = start_relay(pki, tmp_path / "relay", address)
    parties.append(relay)
    gateway = relay_pb2_grpc.RelayServiceStub(secure_channel(relay.address, pki / "gateway-mx"))
    signer = PkiLayout(pki).document_signer()
    sent = {}
    for n in range(COUNT):
        env = envelope(signer, certificate(f"MX26-0000000{n + 1}"), message_id=f"held-{n}", sent_at=dt.datetime.now(dt.timezone.utc))
        ack = gateway.SubmitEnvelope(rpb.SubmitEnvelopeRequest(envelope=env), timeout=5)
        assert ack.state == rpb.DELIVERY_STATE_PENDING and not ack.duplicate
        sent[env.message_id] = env

    # The relay has tried and been refused (customs unreachable): still pending, not given up.
    deadline = time.monotonic() + 20
    while True:
        held = [gateway.GetDelivery(rpb.GetDeliveryRequest(sender="MX", message_id=m), timeout=5).delivery for m in sent]
        if all(d.attempts >= 1 for d in held) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {(d.state, d.error_code) for d in held} == {(rpb.DELIVERY_STATE_PENDING, "UNAVAILABLE")}

    service_dir = tmp_path / "service"
    parties.append(start_service(pki, service_dir, port=int(address.rsplit(":", 1)[1]),
                                 env={"ECERT_CLOCK_OFFSET_SECONDS": str(OUTAGE_SECONDS), **service_env}))
    stream = gateway.WatchDeliveries(rpb.WatchDeliveriesRequest(), timeout=60)
    finished = []
    for delivery in stream:
        finished.append(delivery)
        if len(finished) == COUNT:
            stream.cancel()
            break
    return finished, sent, service_dir, pki


def stored_message_ids(service_dir: pathlib.Path) -> list[str]:
    with sqlite3.connect(f"file:{service_dir / 'ecert.db'}?mode=ro", uri=True) as db:
        return sorted(m for (m,) in db.execute("SELECT message_id FROM transmissions"))


def test_every_envelope_held_through_an_outage_longer_than_the_skew_is_accepted_once(tmp_path, parties):
    finished, sent, service_dir, pki = hold_envelopes_through_an_outage(tmp_path, parties, {})
    customs_key = load_public_key((pki / "service" / "receipt-signing.pem.pub").read_bytes())
    assert sorted(d.message_id for d in finished) == sorted(sent)
    for delivery in finished:
        receipt = delivery.receipt
        assert delivery.state == rpb.DELIVERY_STATE_DELIVERED and not delivery.replayed, delivery
        assert receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED and receipt_from_proto(receipt).verify(customs_key)
        late = receipt.received_at.ToDatetime() - sent[delivery.message_id].sent_at.ToDatetime()
        assert late > dt.timedelta(seconds=600)  # beyond the skew: refused before the window was split
    assert stored_message_ids(service_dir) == sorted(sent)  # each exactly once


def test_an_envelope_held_longer_than_the_accepted_age_is_refused_with_a_signed_rejection(tmp_path, parties):
    # The same outage against a service that accepts envelopes only 600 s old: what the relay held is
    # refused for good (SENDER_CLOCK_SKEW, customs' signed rejection), and nothing is stored.
    finished, sent, service_dir, pki = hold_envelopes_through_an_outage(tmp_path, parties, {"ECERT_MAX_ENVELOPE_AGE_SECONDS": "600"})
    customs_key = load_public_key((pki / "service" / "receipt-signing.pem.pub").read_bytes())
    assert sorted(d.message_id for d in finished) == sorted(sent)
    for delivery in finished:
        assert (delivery.state, delivery.error_code, delivery.error_reason) == (
            rpb.DELIVERY_STATE_REJECTED, "INVALID_ARGUMENT", "SENDER_CLOCK_SKEW")
        assert delivery.receipt.outcome == tpb.TRANSMISSION_OUTCOME_REJECTED and receipt_from_proto(delivery.receipt).verify(customs_key)
    assert stored_message_ids(service_dir) == []
