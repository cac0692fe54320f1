"""Back-pressure and limits: malformed bytes, message size, the transaction bound, deadlines.

Each runs on SQLite and on PostgreSQL (the `settings` fixture is parametrised by engine).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from server.app import MAX_MESSAGE_BYTES, RunningServer, create_server
from tests.db_locks import certificate_locked
from tests.factories import REPLACE, certificate, envelope
from tests.grpc_errors import rich_error

NUMBER = "MX26-00000001"
GET = "/ecert.v1.TransmissionService/GetCertificate"
SUBMIT = "/ecert.v1.TransmissionService/SubmitCertificate"


def raw_call(channel: grpc.Channel, method: str, payload: bytes, timeout: float = 10) -> bytes:
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)(payload, timeout=timeout)


def string_field(number: int, data: bytes) -> bytes:
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data


def get(stub: transmission_pb2_grpc.TransmissionServiceStub, **kwargs: object) -> tpb.GetCertificateResponse:
    return stub.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number=NUMBER), **kwargs)


def replace(stub, signer, message_id: str, replaces: int = 1, **kwargs):  # type: ignore[no-untyped-def]
    env = envelope(signer, certificate(NUMBER, quantity="10"), message_id=message_id, action=REPLACE, replaces_version=replaces)
    return stub.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env), **kwargs)


# -- malformed bytes and size ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,payload",
    [
        (GET, string_field(1, b"M\xff")),  # invalid UTF-8 in a string field
        (GET, b"\x0a\x05MX"),  # a length running past the end of the message
        (GET, b"\x18"),  # a varint with no value
        (SUBMIT, string_field(1, string_field(1, b"msg-\xc3\x28"))),  # invalid UTF-8 one level down
        (SUBMIT, b"\x0f\x00"),  # wire type 7 does not exist
    ],
    ids=["utf8", "truncated", "varint", "nested-utf8", "wire-type"],
)
def test_malformed_request_bytes_are_invalid_argument(channel, method, payload):
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(channel, method, payload)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_MALFORMED")


def test_a_message_over_the_size_limit_is_refused_and_the_server_goes_on(channel, transmission):
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(channel, GET, string_field(2, b"x") + b"\x22" + b"\x80\x80\x80\x03" + b"x" * (MAX_MESSAGE_BYTES + 1))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as caught:
        get(transmission)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # still answering


# -- a bounded number of transactions --------------------------------------------------------------


@pytest.fixture
def limited_server(settings, clock) -> Iterator[RunningServer]:  # type: ignore[no-untyped-def]
    settings.max_transactions = 2
    settings.transaction_wait_ms = 50
    running = create_server(settings, address="127.0.0.1:0", clock=clock)
    yield running
    running.stop(0)


def test_beyond_the_transaction_bound_calls_are_refused_not_queued(limited_server, settings, partner):
    with grpc.insecure_channel(f"127.0.0.1:{limited_server.port}") as channel:
        stub = transmission_pb2_grpc.TransmissionServiceStub(channel)
        stub.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, certificate(NUMBER))))
        outcomes: dict[str, object] = {}

        def attempt(message_id: str) -> None:
            try:
                outcomes[message_id] = replace(stub, partner.signer, message_id).receipt.certificate_version
            except grpc.RpcError as error:
                outcomes[message_id] = rich_error(error).reason

        with certificate_locked(limited_server.database.url, "MX", NUMBER):
            waiting = [threading.Thread(target=attempt, args=(f"r-{n}",)) for n in range(2)]
            for thread in waiting:
                thread.start()
            # Both slots are now held by the waiting REPLACEs: the next call is refused at once.
            refused = None
            for _ in range(200):
                try:
                    get(stub)
                except grpc.RpcError as error:
                    refused = rich_error(error)
                    break
                time.sleep(0.02)
            assert refused is not None, "no call was ever refused"
            assert (refused.code, refused.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DATABASE_BUSY")
        for thread in waiting:
            thread.join(10)
        # Released: exactly one REPLACE made version 2, the other lost the race cleanly.
        assert sorted(map(str, outcomes.values())) == ["2", "STALE_VERSION"]
        assert get(stub).certificate.version == 2


# -- deadlines ---------------------------------------------------------------------------------------


def test_a_call_whose_deadline_passes_stores_nothing(server, transmission, partner):
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, certificate(NUMBER))))
    with certificate_locked(server.database.url, "MX", NUMBER):
        with pytest.raises(grpc.RpcError) as caught:
            replace(transmission, partner.signer, "late", timeout=0.3)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.5)  # the late call is still waiting for the lock (SQLite) or was cut off (PostgreSQL)
    # Had the late call gone on to commit, this REPLACE of version 1 would now be stale. Writes to one
    # certificate are serialised, so this one runs only after the late one has finished either way.
    assert replace(transmission, partner.signer, "on-time").receipt.certificate_version == 2
    stored = get(transmission).certificate
    assert stored.version == 2 and stored.receipt_id
    with pytest.raises(grpc.RpcError):
        transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number=NUMBER, version=3))


def test_a_nul_character_in_any_string_field_is_invalid_argument(transmission, server, partner):
    with pytest.raises(grpc.RpcError) as caught:
        transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-0\x00"))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TEXT_HAS_NUL")
    assert error.fields == {"certificate_number": "TEXT_HAS_NUL"}
    with pytest.raises(grpc.RpcError) as caught:
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, certificate(invoice_number="A\x00B"))))
    assert rich_error(caught.value).fields == {"envelope.certificate.invoice_number": "TEXT_HAS_NUL"}
