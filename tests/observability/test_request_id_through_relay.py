"""One request id from the gateway through the relay to the service: the transmission's message id."""
from __future__ import annotations

import logging

from client.sdk.channel import transmission_metadata
from ecert.relay.v1 import relay_pb2 as rpb
from tests.factories import envelope
from tests.integration.test_relay import now, relay, stub, wait_finished  # noqa: F401 (fixture)
from tests.tls_fixtures import pki, secure_server  # noqa: F401 (fixtures)


def test_the_gateways_request_id_is_logged_by_the_relay_and_by_the_service(pki, secure_server, relay, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="ecert.rpc")
    gateway = stub(pki, "gateway-mx", relay)
    env = envelope(pki.layout.document_signer(), message_id="mx-2026-000123", sent_at=now())
    gateway.SubmitEnvelope(rpb.SubmitEnvelopeRequest(envelope=env), timeout=5, metadata=transmission_metadata(env.message_id))
    [delivery] = wait_finished(gateway, 1)
    assert delivery.state == rpb.DELIVERY_STATE_DELIVERED

    logged = {(r.method, r.code) for r in caplog.records  # type: ignore[attr-defined]
              if r.name == "ecert.rpc" and getattr(r, "request_id", "") == "mx-2026-000123"}
    assert logged == {
        ("/ecert.relay.v1.RelayService/SubmitEnvelope", "OK"),  # the relay's own line
        ("/ecert.v1.TransmissionService/SubmitCertificate", "OK"),  # customs' line, the relay forwarding later
    }
