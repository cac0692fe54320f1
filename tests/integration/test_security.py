"""Mutual TLS and roles on the service: real certificates from the development PKI, real handshakes."""
from __future__ import annotations

import datetime as dt

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from server.app import RunningServer
from tests.factories import certificate, envelope
from tests.grpc_errors import rich_error
from tests.tls_fixtures import DevPki, channel_as, pki, secure_server  # noqa: F401  (fixtures)

TABLES = ("transmissions", "certificate_versions", "certificates")


def snapshot(server: RunningServer) -> dict[str, list[tuple]]:
    with server.database.read_engine.connect() as connection:
        return {t: sorted(map(tuple, connection.execute(text(f"SELECT * FROM {t}")))) for t in TABLES}


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def stub_as(pki: DevPki, party: str, server: RunningServer) -> transmission_pb2_grpc.TransmissionServiceStub:
    return transmission_pb2_grpc.TransmissionServiceStub(channel_as(pki, party, server.port))


def submit(stub, env):  # type: ignore[no-untyped-def]
    return stub.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env), timeout=10)


def refused(server: RunningServer, call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    """Run a call that must fail, and check that nothing stored changed."""
    before = snapshot(server)
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert snapshot(server) == before
    return caught.value


@pytest.fixture
def signed(pki: DevPki) -> tpb.SignedEnvelope:
    return envelope(pki.layout.document_signer(), sent_at=now())


# -- who gets in --------------------------------------------------------------------------------


def test_partner_and_relay_may_transmit_their_own_countrys_certificates(pki, secure_server, signed):
    response = submit(stub_as(pki, "gateway-mx", secure_server), signed)
    assert response.receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED
    second = envelope(pki.layout.document_signer(), certificate("MX26-00000002"), message_id="msg-0002", sent_at=now())
    assert submit(stub_as(pki, "relay", secure_server), second).receipt.certificate_version == 1


@pytest.mark.parametrize(
    "party",
    ["foreign-ca-mx", "expired-mx"],
)
def test_certificates_not_from_customs_ca_or_expired_fail_the_handshake(pki, secure_server, signed, party):
    error = refused(secure_server, lambda: submit(stub_as(pki, party, secure_server), signed))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_a_caller_without_client_certificate_never_reaches_a_handler(pki, secure_server, signed):
    anchor = (pki.dir("gateway-mx") / "ca.pem").read_bytes()
    channel = grpc.secure_channel(f"127.0.0.1:{secure_server.port}", grpc.ssl_channel_credentials(root_certificates=anchor))
    stub = transmission_pb2_grpc.TransmissionServiceStub(channel)
    error = refused(secure_server, lambda: submit(stub, signed))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    health = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_callers_are_refused_by_a_tls_server(secure_server, signed):
    stub = transmission_pb2_grpc.TransmissionServiceStub(grpc.insecure_channel(f"127.0.0.1:{secure_server.port}"))
    assert refused(secure_server, lambda: submit(stub, signed)).code() == grpc.StatusCode.UNAVAILABLE


# -- roles --------------------------------------------------------------------------------------


def test_a_partner_of_another_country_may_not_transmit_for_mexico(pki, secure_server, signed):
    error = rich_error(refused(secure_server, lambda: submit(stub_as(pki, "partner-gt", secure_server), signed)))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "COUNTRY_NOT_CALLERS")
    assert error.metadata["country"] == "MX" and error.metadata["caller_countries"] == "GT"


def test_a_partner_of_another_country_may_not_read_mexicos_certificates(pki, secure_server, signed):
    submit(stub_as(pki, "gateway-mx", secure_server), signed)
    stub = stub_as(pki, "partner-gt", secure_server)
    for call in (
        lambda: stub.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-00000001")),
        lambda: stub.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX")),
        lambda: stub.GetActivityReport(tpb.GetActivityReportRequest(issuing_country="MX", condition=tpb.CERTIFICATE_CONDITION_UNMATCHED)),
    ):
        error = rich_error(refused(secure_server, call))
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "COUNTRY_NOT_CALLERS")


def test_sender_and_issuing_country_must_both_be_the_callers(pki, secure_server):
    # A Mexican-signed envelope that claims a Guatemalan certificate: refused before any rule runs.
    env = envelope(pki.layout.document_signer(), certificate(issuing_country="GT"), sent_at=now())
    error = rich_error(refused(secure_server, lambda: submit(stub_as(pki, "gateway-mx", secure_server), env)))
    assert (error.code, error.reason, error.metadata["country"]) == (grpc.StatusCode.PERMISSION_DENIED, "COUNTRY_NOT_CALLERS", "GT")


def test_a_relay_altering_a_payload_is_caught_by_the_signature(pki, secure_server, signed):
    altered = tpb.SignedEnvelope()
    altered.CopyFrom(signed)
    altered.certificate.quantity = "9200"  # one byte changed in transit
    error = rich_error(refused(secure_server, lambda: submit(stub_as(pki, "relay", secure_server), altered)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_INVALID")
    assert error.receipt is not None and error.receipt.outcome == tpb.TRANSMISSION_OUTCOME_REJECTED


@pytest.mark.parametrize("party", ["importer", "customs", "admin"])
def test_only_partners_and_relays_transmit(pki, secure_server, signed, party):
    error = rich_error(refused(secure_server, lambda: submit(stub_as(pki, party, secure_server), signed)))
    assert (error.code, error.reason, error.metadata["role"]) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED", party)


def test_importers_do_not_browse_partners_certificates(pki, secure_server, signed):
    submit(stub_as(pki, "gateway-mx", secure_server), signed)
    stub = stub_as(pki, "importer", secure_server)
    error = rich_error(refused(secure_server, lambda: stub.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX"))))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


def test_customs_reads_any_partners_certificates(pki, secure_server, signed):
    submit(stub_as(pki, "gateway-mx", secure_server), signed)
    listed = stub_as(pki, "customs", secure_server).ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX"))
    assert [c.certificate.certificate_number for c in listed.certificates] == ["MX26-00000001"]
    assert listed.certificates[0].status == cpb.CERTIFICATE_STATUS_ACTIVE


def test_a_certificate_without_a_role_gets_nothing(pki, secure_server):
    channel = channel_as(pki, "no-role", secure_server.port)
    with pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_MISSING")


@pytest.mark.parametrize("party", ["importer", "gateway-mx", "customs"])
def test_health_and_reflection_answer_every_authenticated_caller(pki, secure_server, party):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = channel_as(pki, party, secure_server.port)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="ecert.v1.TransmissionService"), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for s in next(answers).list_services_response.service}
    assert "ecert.v1.TransmissionService" in names
