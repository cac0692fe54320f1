"""The SDK over mutual TLS with the development PKI: each role's client, and refusals as exceptions."""
from __future__ import annotations

import pytest

from client.sdk import (
    Certificate,
    ConnectionSettings,
    CustomsClient,
    ImporterClient,
    OperatorClient,
    Outcome,
    PartnerClient,
    PermissionDenied,
    Unavailable,
    load_document_signer,
)
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import certificate
from tests.tls_fixtures import pki, secure_server  # noqa: F401 (fixtures)


def settings(pki, party: str, port: int, **kw) -> ConnectionSettings:  # type: ignore[no-untyped-def]  # noqa: F811
    return ConnectionSettings(target=f"127.0.0.1:{port}", tls_dir=str(pki.dir(party)), timeout_s=10, **kw)


def test_partner_transmits_over_mutual_tls_with_the_pki_layout(pki, secure_server):  # noqa: F811
    signer = load_document_signer(pki.dir("gateway-mx") / "document-signing.pem")
    with PartnerClient(signer, "MX", settings(pki, "gateway-mx", secure_server.port)) as mx:
        result = mx.transmit(Certificate.from_proto(certificate()))
        assert result.receipt.outcome is Outcome.ACCEPTED
    with OperatorClient(settings(pki, "admin", secure_server.port)) as admin:
        assert admin.get_certificate("MX", "MX26-00000001").version == 1


def test_a_role_refusal_is_permission_denied_with_its_reason(pki, secure_server):  # noqa: F811
    with ImporterClient(settings(pki, "importer", secure_server.port)) as importer:
        request = tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-00000001")
        with pytest.raises(PermissionDenied) as caught:  # protobuf in and out through the SDK's channel
            importer.call(importer.stubs.transmission.GetCertificate, request)
    assert caught.value.reason == "ROLE_NOT_ALLOWED" and caught.value.metadata["role"] == "importer"


def test_customs_client_needs_a_certificate_the_service_trusts(pki, secure_server):  # noqa: F811
    explicit = ConnectionSettings(
        target=f"127.0.0.1:{secure_server.port}", ca_file=pki.dir("customs") / "ca.pem",
        cert_file=pki.dir("foreign-ca-mx") / "cert.pem", key_file=pki.dir("foreign-ca-mx") / "key.pem", timeout_s=5,
    )
    with CustomsClient(explicit) as stranger:
        with pytest.raises(Unavailable):  # the handshake fails: no handler ever sees the call
            stranger.is_serving()
    with CustomsClient(settings(pki, "customs", secure_server.port)) as customs:
        assert customs.is_serving("ecert.v1.TransmissionService")
