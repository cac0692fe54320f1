"""Gateway -> relay -> service as three processes: receipts, durability, faults, re-sends."""
from __future__ import annotations

import datetime as dt
import subprocess
import time

import grpc
import pytest

from client.pki import PkiLayout, issue, load_authority, write_party
from client.tls import secure_channel
from contract.identity import Identity, Role
from contract.keys import load_public_key
from contract.messages import receipt_from_proto
from ecert.relay.v1 import relay_pb2 as rpb
from ecert.relay.v1 import relay_pb2_grpc
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from gateway_sim.claims_player import CONVERTIBLE, ClaimsPlayer
from tests.factories import envelope

pytestmark = pytest.mark.slow

ALL_FAULTS = ("--drop", "0.2", "--delay-ms", "20", "--duplicate", "0.2", "--reorder", "--corrupt", "0.2", "--unavailable", "0.2", "--seed", "11")


def customs(world) -> transmission_pb2_grpc.TransmissionServiceStub:  # type: ignore[no-untyped-def]
    return transmission_pb2_grpc.TransmissionServiceStub(secure_channel(world.service.address, world.pki / "customs"))


def relay_stats(world) -> dict[str, int]:  # type: ignore[no-untyped-def]
    stub = relay_pb2_grpc.RelayServiceStub(secure_channel(world.relay.address, world.pki / "admin"))
    return dict(stub.GetRelayStats(rpb.GetRelayStatsRequest(), timeout=5).counters)


def assert_books_match_register(world) -> None:  # type: ignore[no-untyped-def]
    """Every message the gateway sent is on customs' books exactly once, exactly as signed."""
    sent = dict(world.register_rows("SELECT message_id, digest FROM sent"))
    assert set(world.register_rows("SELECT state FROM sent")) == {("RECEIPTED",)}
    stored = world.service_rows("SELECT message_id, digest FROM transmissions")
    assert sorted(m for m, _ in stored) == sorted(sent)  # no message twice, none missing
    assert all(sent[m] == digest for m, digest in stored)  # nothing altered on the way was stored
    per_certificate = world.register_rows("SELECT certificate_number, COUNT(*) FROM sent GROUP BY certificate_number")
    versions = dict(world.service_rows("SELECT certificate_number, COUNT(*) FROM certificate_versions GROUP BY certificate_number"))
    assert versions == dict(per_certificate)  # one accepted version per transmission, no extra


def test_an_issued_certificate_is_receipted_stored_and_matchable(world):
    world.start_relay()
    summary = world.gateway("burst", "--count", "8")
    assert summary["receipts"] == 8 and summary["bad_receipts"] == 0 and summary["register"] == {"RECEIPTED": 8}
    assert_books_match_register(world)

    customs_key = load_public_key((world.pki / "service" / "receipt-signing.pem.pub").read_bytes())
    stub = customs(world)
    for number, receipt_blob in world.register_rows("SELECT certificate_number, receipt FROM sent"):
        receipt = tpb.Receipt.FromString(receipt_blob)
        assert receipt_from_proto(receipt).verify(customs_key)
        stored = stub.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number=number), timeout=5).certificate
        assert stored.status == cpb.CERTIFICATE_STATUS_ACTIVE and stored.receipt_id == receipt.receipt_id
        assert stored.digest_sha256 == receipt.digest_sha256 and stored.sender == "MX"

    # Matchable: an internal customs client's claim on each (convertible) certificate would be granted in full.
    player = ClaimsPlayer(secure_channel(world.service.address, world.pki / "customs"))
    certified = [cpb.Certificate.FromString(blob) for (blob,) in world.register_rows("SELECT certificate FROM certificates")]
    convertible = [c for c in certified if c.htsus_number.replace(".", "").startswith(CONVERTIBLE)]
    assert convertible
    for certificate in convertible:
        result = player.match.CheckClaim(mpb.CheckClaimRequest(line=player.line(certificate)), timeout=5).result
        assert result.decision == mpb.CLAIM_DECISION_PREFERENTIAL, (certificate.certificate_number, list(result.reasons))
        assert result.granted_quantity == certificate.quantity


def test_relay_killed_mid_stream_loses_nothing(world):
    # Slow forwarding (4 workers x 400 ms) against 20 envelopes a second builds a backlog of
    # acknowledged-but-unforwarded envelopes in the relay's store; it is killed with them in it. The
    # gateway re-sends only what the relay never acknowledged (resend-after 600 s), so whatever was
    # acknowledged must reach customs from the relay's store alone.
    relay = world.start_relay("--delay-ms", "400")
    gateway = subprocess.Popen(
        world.gateway_args("steady", "--rate", "20", "--duration", "4", resend_after=600, wait=60),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        backlog, deadline = 0, time.monotonic() + 30
        while backlog < 5 and time.monotonic() < deadline and gateway.poll() is None:
            time.sleep(0.1)
            if (world.root / "relay" / "relay.db").exists():
                backlog = world.relay_rows("SELECT COUNT(*) FROM messages WHERE state = 'PENDING'")[0][0]
        relay.kill()
        backlog = world.relay_rows("SELECT COUNT(*) FROM messages WHERE state = 'PENDING'")[0][0]
        time.sleep(0.5)
        world.start_relay("--delay-ms", "40", port=relay.port)
        out, err = gateway.communicate(timeout=120)
    finally:
        if gateway.poll() is None:
            gateway.kill()
    assert gateway.returncode == 0, out + err
    assert backlog > 0  # the kill did catch envelopes stored but not yet forwarded
    assert_books_match_register(world)
    assert world.relay_rows("SELECT DISTINCT state FROM messages") == [("DELIVERED",)]


def test_with_every_fault_on_each_transmission_lands_once_and_nothing_corrupt_is_stored(world):
    world.start_relay(*ALL_FAULTS)
    assert world.gateway("burst", "--count", "30")["register"] == {"RECEIPTED": 30}
    world.gateway("amend", "--count", "6")
    world.gateway("cancel", "--count", "4")
    assert_books_match_register(world)
    stats = relay_stats(world)
    for fault in ("drop", "duplicate", "corrupt", "unavailable"):
        assert stats.get(f"fault.{fault}", 0) > 0, stats  # each fault really happened
    statuses = dict(world.service_rows("SELECT status, COUNT(*) FROM certificate_versions v WHERE version = "
                                       "(SELECT MAX(version) FROM certificate_versions w WHERE w.certificate_number = v.certificate_number) GROUP BY status"))
    assert statuses == {"ACTIVE": 26, "CANCELED": 4}
    assert dict(world.service_rows("SELECT action, COUNT(*) FROM transmissions GROUP BY action")) == {"CREATE": 30, "REPLACE": 6, "CANCEL": 4}


def test_gateway_re_sends_reach_customs_once(world):
    # The relay forwards slowly; the gateway loses patience after 0.3 s and re-sends everything.
    world.start_relay("--delay-ms", "600")
    summary = world.gateway("burst", "--count", "10", resend_after=0.3)
    assert summary["resent"] > 0 and summary["register"] == {"RECEIPTED": 10}
    assert relay_stats(world)["duplicates"] >= summary["resent"]
    assert_books_match_register(world)
    # Running the gateway again finds nothing to send and changes nothing.
    before = world.service_rows("SELECT COUNT(*) FROM transmissions")
    assert world.gateway("status")["register"] == {"RECEIPTED": 10}
    assert world.service_rows("SELECT COUNT(*) FROM transmissions") == before


def test_the_relay_refuses_a_partner_sending_for_another_country(world, tmp_path):
    world.start_relay()
    authority = load_authority(world.pki / "ca")
    write_party(tmp_path / "gt", authority, issue(authority, Identity("Guatemala gateway", Role.PARTNER, frozenset({"GT"}))))
    env = envelope(PkiLayout(world.pki).document_signer(), sent_at=dt.datetime.now(dt.timezone.utc))
    stub = relay_pb2_grpc.RelayServiceStub(secure_channel(world.relay.address, tmp_path / "gt"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.SubmitEnvelope(rpb.SubmitEnvelopeRequest(envelope=env), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert world.relay_rows("SELECT COUNT(*) FROM messages") == [(0,)]
