"""The SDK against a real server: typed results, exceptions per status code, pagination, retries."""
from __future__ import annotations

import datetime as dt
import threading
from concurrent import futures

import grpc
import pytest

from client.sdk import (
    Action,
    AlreadyExists,
    Certificate,
    CertificateStatus,
    Condition,
    ConnectionSettings,
    InvalidArgument,
    NotFound,
    OperatorClient,
    Outcome,
    PartnerClient,
    RelayClient,
    RetryPolicy,
    Unavailable,
)
from client.sdk.errors import ERROR_CLASSES
from contract.messages import receipt_from_proto
from tests.factories import certificate, envelope


@pytest.fixture
def partner_client(server, partner):  # type: ignore[no-untyped-def]
    with PartnerClient(partner.signer, "MX", target=f"127.0.0.1:{server.port}", insecure=True) as client:
        yield client


def cert(number: str = "MX26-00000001", **changes: object) -> Certificate:
    return Certificate.from_proto(certificate(number, **changes))


def test_transmit_returns_typed_receipt_that_verifies(partner_client, receipt_public_key):
    result = partner_client.transmit(cert())
    assert result.receipt.outcome is Outcome.ACCEPTED and result.receipt.action is Action.CREATE
    assert result.receipt.message_id.startswith("MX-")  # the SDK generated the idempotency key
    assert result.certificate.status is CertificateStatus.ACTIVE
    assert str(result.certificate.remaining_quantity) == "1200"
    assert result.receipt.received_at is not None and result.receipt.received_at.tzinfo is not None
    assert receipt_from_proto(result.receipt.to_proto()).verify(receipt_public_key)
    assert not result.replayed


def test_same_envelope_twice_is_replayed_not_stored_twice(partner_client):
    sealed = partner_client.seal(cert())
    first = partner_client.submit_envelope(sealed)
    again = partner_client.submit_envelope(sealed)
    assert again.replayed and again.receipt.receipt_id == first.receipt.receipt_id


def test_replace_and_cancel_helpers(partner_client):
    partner_client.transmit(cert())
    assert partner_client.replace(cert(quantity="900"), 1).certificate.version == 2
    canceled = partner_client.cancel("MX26-00000001", 2)
    assert canceled.certificate.status is CertificateStatus.CANCELED


def test_invalid_field_raises_invalid_argument_with_violations_and_receipt(partner_client):
    with pytest.raises(InvalidArgument) as caught:
        partner_client.transmit(cert(htsus_number="61091"))
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.domain == "ecert"
    assert [(v.field, v.reason) for v in error.field_violations] == [("envelope.certificate.htsus_number", "HTSUS_NUMBER_MALFORMED")]
    assert error.receipt is not None and error.receipt.outcome is Outcome.REJECTED


def test_message_id_reuse_is_already_exists_with_metadata(partner_client):
    partner_client.transmit(cert(), message_id="MX-fixed-1")
    with pytest.raises(AlreadyExists) as caught:
        partner_client.transmit(cert(quantity="5"), message_id="MX-fixed-1")
    assert caught.value.reason == "MESSAGE_ID_REUSED" and caught.value.metadata["receipt_id"]


def test_validate_reports_without_storing(partner_client):
    report = partner_client.validate(cert(htsus_number="61091"))
    assert not report.valid and [i.code for i in report.issues] == ["HTSUS_NUMBER_MALFORMED"]
    with pytest.raises(NotFound) as caught:
        partner_client.get_certificate("MX", "MX26-00000001")
    assert caught.value.reason == "CERTIFICATE_NOT_FOUND"


def test_lists_are_iterators_over_every_page(server, partner_client):
    for n in range(5):
        partner_client.transmit(cert(f"MX26-{n:08d}"))
    partner_client.cancel("MX26-00000003", 1)
    with OperatorClient(target=f"127.0.0.1:{server.port}", insecure=True) as operator:
        numbers = [c.certificate.certificate_number for c in operator.list_certificates("MX", page_size=2)]
        assert numbers == [f"MX26-{n:08d}" for n in range(5)]
        canceled = list(operator.activity_report("MX", Condition.CANCELED, page_size=1))
        assert [(e.certificate_number, e.condition) for e in canceled] == [("MX26-00000003", Condition.CANCELED)]
        assert len(list(operator.activity_report("MX", Condition.UNMATCHED, page_size=1))) == 4
        assert operator.is_serving() and operator.is_serving("ecert.v1.TransmissionService")


def test_relay_forwards_a_partner_envelope_untouched(server, partner, receipt_public_key):
    sealed = envelope(partner.signer, sent_at=dt.datetime.now(dt.timezone.utc))
    with RelayClient(target=f"127.0.0.1:{server.port}", insecure=True) as relay:
        result = relay.forward(sealed, request_id="relay-test-1")
    assert result.receipt.sender == "MX" and result.receipt.message_id == sealed.message_id


def test_every_status_code_has_its_class():
    assert set(ERROR_CLASSES) == {c for c in grpc.StatusCode if c != grpc.StatusCode.OK}


# -- retries: a real server that fails on purpose ------------------------------------------------------


class Flaky:
    """A GetCertificate that answers `codes` in turn, then NOT_FOUND; counts attempts."""

    def __init__(self, *codes: grpc.StatusCode):
        self.codes = list(codes)
        self.attempts = 0
        self.lock = threading.Lock()

    def handler(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            self.attempts += 1
            code = self.codes.pop(0) if self.codes else grpc.StatusCode.NOT_FOUND
        context.abort(code, "flaky on purpose")

    def service(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(self.handler)  # raw bytes in and out
        return grpc.method_handlers_generic_handler("ecert.v1.TransmissionService", {"GetCertificate": method})


@pytest.fixture
def flaky_server():  # type: ignore[no-untyped-def]
    started: list[grpc.Server] = []

    def start(flaky: Flaky) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers((flaky.service(),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        started.append(server)
        return port

    yield start
    for server in started:
        server.stop(0)


FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


def test_unavailable_is_retried_with_backoff_then_succeeds_or_surfaces(flaky_server):
    flaky = Flaky(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    port = flaky_server(flaky)
    with OperatorClient(ConnectionSettings(target=f"127.0.0.1:{port}", insecure=True, retry=FAST_RETRY)) as client:
        with pytest.raises(NotFound):
            client.get_certificate("MX", "MX26-00000001")
    assert flaky.attempts == 3  # two UNAVAILABLE, retried; the third answer is final

    always = Flaky(*[grpc.StatusCode.UNAVAILABLE] * 10)
    port = flaky_server(always)
    with OperatorClient(ConnectionSettings(target=f"127.0.0.1:{port}", insecure=True, retry=FAST_RETRY)) as client:
        with pytest.raises(Unavailable):
            client.get_certificate("MX", "MX26-00000001")
    assert always.attempts == 4


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_other_codes_are_not_retried(flaky_server, code):
    flaky = Flaky(code)
    port = flaky_server(flaky)
    with OperatorClient(ConnectionSettings(target=f"127.0.0.1:{port}", insecure=True, retry=FAST_RETRY)) as client:
        with pytest.raises(ERROR_CLASSES[code]):
            client.get_certificate("MX", "MX26-00000001")
    assert flaky.attempts == 1


def test_tls_settings_need_cert_and_key_together(tmp_path):
    (tmp_path / "cert.pem").write_text("x")
    settings = ConnectionSettings(target="127.0.0.1:1", cert_file=tmp_path / "cert.pem")
    with pytest.raises(ValueError):
        settings.credentials()
    with pytest.raises(OSError):
        ConnectionSettings(target="127.0.0.1:1", tls_dir=tmp_path / "missing").credentials()
