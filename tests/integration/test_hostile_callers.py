"""Attacks by callers who hold a valid client certificate (issue 15), against a real server."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import pathlib
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from client.sdk import OperatorClient
from client.tls import server_credentials
from contract.canonical import ENVELOPE_TAG
from contract.messages import receipt_from_proto
from ecert.bench.v1 import echo_pb2, echo_pb2_grpc
from ecert.relay.v1 import relay_pb2 as rpb
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc, quota_pb2_grpc
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb
from gateway_sim.gateway.gateway import Gateway
from gateway_sim.gateway.register import Register, SendState
from server.api.converters import envelope_from_proto
from server.app import RunningServer, create_server
from server.config import Settings
from tests.factories import certificate, claim_line, envelope
from tests.grpc_errors import rich_error
from tests.integration.test_security_usage import USAGE, certified  # noqa: F401  (fixture)
from tests.integration.test_transmission_api import rejected, snapshot, submit
from tests.tls_fixtures import DevPki, channel_as, pki, secure_server, service_settings  # noqa: F401  (fixtures)

ARABIC_INDIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


def damaged(env: tpb.SignedEnvelope, signature: bytes | None = None, **certificate_changes: object) -> tpb.SignedEnvelope:
    """The envelope with its signature replaced (flipped in one byte by default) and, optionally, altered content."""
    copy = tpb.SignedEnvelope()
    copy.CopyFrom(env)
    copy.signature = signature if signature is not None else bytes([env.signature[0] ^ 1]) + env.signature[1:]
    for name, value in certificate_changes.items():
        setattr(copy.certificate, name, value)
    return copy


# -- item 4: no signed rejection contradicts an acceptance -------------------------------------------


def test_a_damaged_signature_on_an_accepted_message_gets_the_accepted_receipt(transmission, server, partner, receipt_public_key):
    genuine = envelope(partner.signer)
    accepted = submit(transmission, genuine).receipt
    before = snapshot(server)
    for signature in (None, bytes(64), b""):
        again = submit(transmission, damaged(genuine, signature))
        assert again.replayed and again.receipt == accepted  # the stored receipt, byte for byte
        assert again.receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED
    assert snapshot(server) == before
    assert accepted.signature_sha256 == hashlib.sha256(genuine.signature).digest()
    assert receipt_from_proto(accepted).verify(receipt_public_key)


def test_altered_content_under_an_accepted_message_id_gets_no_signed_rejection(transmission, server, partner):
    genuine = envelope(partner.signer)
    accepted = submit(transmission, genuine).receipt
    for signature in (None, bytes(64)):
        # Damaged on the way (or forged): refused as not what the partner signed, with nothing signed
        # that could contradict the acceptance; a relay retries from its stored copy.
        error = rejected(transmission, server, damaged(genuine, signature, quantity="1300"))
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_INVALID")
        assert error.fields == {"envelope.signature": "SIGNATURE_INVALID"}
        assert error.receipt is None
    assert submit(transmission, genuine).receipt == accepted


def test_a_rejection_names_the_signature_it_judged(transmission, partner, receipt_public_key):
    genuine = envelope(partner.signer)
    with pytest.raises(grpc.RpcError) as caught:
        submit(transmission, damaged(genuine, bytes(64)))  # a relay tries to get a rejection first
    rejection = rich_error(caught.value).receipt
    assert rejection is not None and rejection.outcome == tpb.TRANSMISSION_OUTCOME_REJECTED
    accepted = submit(transmission, genuine).receipt
    # Same sender, message id and digest, but each receipt names the signature it judged.
    assert (rejection.message_id, rejection.digest_sha256) == (accepted.message_id, accepted.digest_sha256)
    assert rejection.signature_sha256 == hashlib.sha256(bytes(64)).digest()
    assert accepted.signature_sha256 == hashlib.sha256(genuine.signature).digest()
    for receipt in (rejection, accepted):
        assert receipt_from_proto(receipt).verify(receipt_public_key)
        forged = tpb.Receipt()
        forged.CopyFrom(receipt)
        forged.signature_sha256 = hashlib.sha256(b"another signature").digest()
        assert not receipt_from_proto(forged).verify(receipt_public_key)  # the field is signed


# -- item 6: codes are ASCII digits only -------------------------------------------------------------

CERTIFICATE_CODES = [
    ("htsus_number", "6109.10.0012", "HTSUS_NUMBER_MALFORMED"),
    ("importer_of_record", "123456-12345", "IMPORTER_OF_RECORD_MALFORMED"),
    ("importer_of_record", "123-45-6789", "IMPORTER_OF_RECORD_MALFORMED"),
    ("certificate_number", "MX26-00000001", "CERTIFICATE_NUMBER_MALFORMED"),
    ("quantity", "1200", "QUANTITY_MALFORMED"),
    ("issue_date", "2026-02-20", "DATE_MALFORMED"),
]


@pytest.mark.parametrize("digits", [ARABIC_INDIC, FULLWIDTH], ids=["arabic-indic", "fullwidth"])
@pytest.mark.parametrize("name,ascii_value,reason", CERTIFICATE_CODES, ids=[f"{c[0]}={c[1]}" for c in CERTIFICATE_CODES])
def test_a_certificate_code_with_non_ascii_digits_is_refused(transmission, server, partner, name, ascii_value, reason, digits):
    value = ascii_value.translate(digits)
    foreign = [c for c in value if not c.isascii()]
    assert foreign and all(c.isdigit() for c in foreign)  # digits to \d and str.isdigit(), not to a code
    error = rejected(transmission, server, envelope(partner.signer, certificate(**{name: value})))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.fields.get(f"envelope.certificate.{name}") == reason


CLAIM_CODES = [
    ("htsus_number", "6109.10.0012", "HTSUS_NUMBER_MALFORMED"),
    ("entry_number", claim_line().entry_number, "ENTRY_NUMBER_MALFORMED"),
    ("quantity", "100", "QUANTITY_MALFORMED"),
    ("date_of_importation", "2026-03-01", "DATE_MALFORMED"),
]


@pytest.mark.parametrize("name,ascii_value,reason", CLAIM_CODES, ids=[c[0] for c in CLAIM_CODES])
def test_a_claim_code_with_non_ascii_digits_is_refused(match, server, name, ascii_value, reason):
    before = snapshot(server)
    line = claim_line(**{name: ascii_value.translate(ARABIC_INDIC)})
    with pytest.raises(grpc.RpcError) as caught:
        match.MatchClaim(mpb.MatchClaimRequest(line=line))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.fields.get(f"line.{name}") == reason
    assert snapshot(server) == before


# -- item 10: an importer cannot tell which certificate numbers exist ---------------------------------


def test_another_importers_certificate_and_a_missing_one_get_the_same_answer(pki, secure_server, certified):
    def answer(party: str, number: str) -> tuple[grpc.StatusCode, object]:
        stub = match_pb2_grpc.MatchServiceStub(channel_as(pki, party, secure_server.port))
        request = mpb.GetCertificateUsageRequest(issuing_country="MX", certificate_number=number)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCertificateUsage(request, timeout=5)
        return caught.value.code(), rpc_status.from_call(caught.value)  # the whole google.rpc.Status

    someone_elses = answer("importer-other", USAGE.certificate_number)
    never_issued = answer("importer-other", "MX26-99999999")
    assert someone_elses == never_issued == answer("importer", "MX26-99999999")
    assert someone_elses[0] == grpc.StatusCode.NOT_FOUND


# -- item 5: forged page tokens and pages larger than a message -------------------------------------


def old_style_token(after: str, filters: dict[str, object]) -> str:
    """A token as anyone could forge them before they were keyed: the fingerprint was unkeyed."""
    fingerprint = hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return base64.urlsafe_b64encode(json.dumps({"a": after, "f": fingerprint}).encode()).decode().rstrip("=")


LIST_FILTERS = {"country": "MX", "status": "", "year": 0, "tpl": ""}
REPORT_FILTERS = {"country": "MX", "condition": 11, "year": 0}


@pytest.mark.parametrize("position", ["\x00", "\ud800", "MX26-00000001"], ids=["nul", "lone-surrogate", "plausible"])
def test_forged_page_tokens_are_invalid_argument(transmission, partner, position):
    submit(transmission, envelope(partner.signer))
    calls = [
        lambda token: transmission.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", page_token=token)),
        lambda token: transmission.GetActivityReport(
            tpb.GetActivityReportRequest(issuing_country="MX", condition=tpb.CERTIFICATE_CONDITION_UNMATCHED, page_token=token)
        ),
    ]
    for rpc, filters in zip(calls, (LIST_FILTERS, REPORT_FILTERS)):
        for token in (old_style_token(position, filters), "garbage!", "\u0661.\u0662"):
            with pytest.raises(grpc.RpcError) as caught:
                rpc(token)
            error = rich_error(caught.value)
            assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")
            assert error.fields == {"page_token": "PAGE_TOKEN_INVALID"}


def test_a_page_larger_than_a_message_is_cut_and_continued(transmission, partner):
    wide = "\U0001D11E" * 500  # 2,000 bytes of UTF-8, within the 512-character limit
    party = {"name": wide, "address": wide, "tax_id": wide}
    count = 300  # about 16 KB each: 4.8 MB in all, more than the 4 MiB a message may hold
    for n in range(1, count + 1):
        cert = certificate(f"MX26-{n:08d}", goods_description=wide, invoice_number=wide,
                           exporter=cpb.Party(**party), producer=cpb.Party(**party))
        submit(transmission, envelope(partner.signer, cert, message_id=f"wide-{n}"))
    seen: list[str] = []
    token, pages = "", 0
    while True:
        page = transmission.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", page_size=1000, page_token=token))
        assert page.ByteSize() < 4 * 1024 * 1024
        seen += [c.certificate.certificate_number for c in page.certificates]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages >= 2  # the first page was cut short, with a token that continues after its last item
    assert seen == [f"MX26-{n:08d}" for n in range(1, count + 1)]


# -- item 7 and 12: a reader re-verifies what the partner signed; tampering is caught -----------------


def test_a_reader_re_verifies_the_partners_signature_on_a_stored_version(server, transmission, partner):
    sent = envelope(partner.signer, certificate(quantity="1200.0"))  # stored and shown as "1200"
    submit(transmission, sent)
    with OperatorClient(target=f"127.0.0.1:{server.port}", insecure=True) as reader:
        stored = reader.get_certificate("MX", "MX26-00000001")
    assert stored.certificate.quantity == "1200"
    assert stored.signed_bytes.startswith(ENVELOPE_TAG) and stored.signature == sent.signature
    assert stored.signing_key_id == partner.signer.key_id
    assert json.loads(stored.signed_bytes[len(ENVELOPE_TAG):])["certificate"]["quantity"] == "1200.0"  # as signed
    assert hashlib.sha256(stored.signed_bytes).digest() == stored.digest_sha256
    assert stored.verify(partner.signer.public_key)

    def tampered(**changes: object) -> bool:
        return dataclasses.replace(stored, **changes).verify(partner.signer.public_key)  # type: ignore[arg-type]

    altered = stored.signed_bytes.replace(b'"1200.0"', b'"9200.0"')
    assert altered != stored.signed_bytes and not tampered(signed_bytes=altered)
    assert not tampered(signature=bytes([stored.signature[0] ^ 1]) + stored.signature[1:])
    assert not tampered(digest_sha256=hashlib.sha256(altered).digest())  # bytes fit the digest, not the signature
    assert not tampered(signed_bytes=altered, digest_sha256=hashlib.sha256(altered).digest())
    assert not tampered(signed_bytes=b"")
    assert not stored.verify(partner.other_partner_signer.public_key)


def test_each_version_carries_what_made_it(transmission, partner):
    submit(transmission, envelope(partner.signer))
    replace = envelope(partner.signer, certificate(quantity="900"), message_id="msg-0002", action=tpb.TRANSMISSION_ACTION_REPLACE,
                       replaces_version=1)
    submit(transmission, replace)
    for version, sent_signature in ((1, None), (2, replace.signature)):
        answer = transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-00000001", version=version))
        assert hashlib.sha256(answer.signed_bytes).digest() == answer.certificate.digest_sha256
        partner.signer.public_key.verify(answer.signature, answer.signed_bytes)  # raises if it does not verify
        if sent_signature is not None:
            assert answer.signature == sent_signature


def test_validate_reports_a_tampered_envelope(transmission, server, partner):
    genuine = envelope(partner.signer)
    before = snapshot(server)
    for forged in (damaged(genuine), damaged(genuine, bytes(64)), damaged(genuine, quantity="1300")):
        report = transmission.ValidateCertificate(tpb.ValidateCertificateRequest(envelope=forged))
        assert not report.valid
        assert [(i.code, i.field) for i in report.issues if i.severity == tpb.SEVERITY_ERROR] == [("SIGNATURE_INVALID", "envelope.signature")]
    assert transmission.ValidateCertificate(tpb.ValidateCertificateRequest(envelope=genuine)).valid  # the control
    assert snapshot(server) == before


def test_the_gateway_refuses_a_tampered_receipt(transmission, partner, receipt_public_key, tmp_path):
    register = Register(tmp_path / "gateway.db")
    gateway = Gateway(register, partner.signer, grpc.insecure_channel("127.0.0.1:9"), customs_key=receipt_public_key)

    def delivered(message_id: str, change=None) -> SendState:  # type: ignore[no-untyped-def]
        """Send through the real service, then hand the gateway customs' receipt (changed on the way)."""
        env = envelope(partner.signer, certificate(f"MX26-{len(register.all()) + 1:08d}"), message_id=message_id)
        register.add(message_id, env.certificate.certificate_number, "CREATE", env.SerializeToString(), envelope_from_proto(env).digest())
        receipt = submit(transmission, env).receipt
        if change is not None:
            change(receipt)
        gateway.record(rpb.Delivery(message_id=message_id, sender="MX", state=rpb.DELIVERY_STATE_DELIVERED, receipt=receipt))
        sent = register.get(message_id)
        assert sent is not None
        return sent.state

    assert delivered("genuine") is SendState.RECEIPTED  # the control
    assert delivered("version", lambda r: setattr(r, "certificate_version", 7)) is SendState.REJECTED
    assert delivered("signature", lambda r: setattr(r, "signature", bytes(64))) is SendState.REJECTED
    assert delivered("digest", lambda r: setattr(r, "digest_sha256", hashlib.sha256(b"x").digest())) is SendState.REJECTED
    assert gateway.tally.receipts == 1 and gateway.tally.bad_receipts == 3
    register.close()


# -- item 1: stalled callers starve no one ---------------------------------------------------------------

LIST_QUOTAS = "/ecert.v1.QuotaService/ListQuotas"
STALL_WORKERS = 4


class Stalls:
    """Calls that send their headers and then nothing: the request message never comes (until released)."""

    def __init__(self, pki: DevPki, port: int):
        self.pki, self.port = pki, port
        self.released = threading.Event()
        self.calls: list[grpc.Future] = []
        self.channels: list[grpc.Channel] = []

    def channel(self, party: str) -> grpc.Channel:
        channel = channel_as(self.pki, party, self.port)
        self.channels.append(channel)
        return channel

    def open(self, party: str, count: int, *, channel: grpc.Channel | None = None, method: str = LIST_QUOTAS) -> list[grpc.Future]:
        released = self.released

        def nothing():  # type: ignore[no-untyped-def]
            released.wait(120)
            return
            yield  # a generator: the request stream, which never yields

        # The same path as the unary method: on the wire a unary call is a stream of one message.
        stalled = (channel or self.channel(party)).stream_unary(
            method, request_serializer=qpb.ListQuotasRequest.SerializeToString,
            response_deserializer=qpb.ListQuotasResponse.FromString,
        )
        calls = [stalled.future(nothing(), timeout=120) for _ in range(count)]
        self.calls += calls
        return calls

    def close(self) -> None:
        self.released.set()
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


def finished(calls: list[grpc.Future], count: int, within: float = 20.0) -> list[grpc.Future]:
    """Waits until `count` of the calls have ended (they were refused); returns those."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done = [c for c in calls if c.done()]
        if len(done) >= count:
            return done
        time.sleep(0.05)
    raise AssertionError(f"only {sum(c.done() for c in calls)} of {len(calls)} calls ended, expected {count}")


def refusal(call: grpc.Future) -> tuple[grpc.StatusCode, str, dict[str, str], float | None]:
    error = call.exception()
    assert isinstance(error, grpc.RpcError)
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    retry = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry = info.retry_delay.ToTimedelta().total_seconds()
    rich = rich_error(error)
    return error.code(), rich.reason, rich.metadata, retry


def served_quickly(pki: DevPki, port: int, party: str = "admin") -> None:
    """ListQuotas answers within a few seconds (a generous bound for a loaded machine)."""
    channel = channel_as(pki, party, port)
    try:
        started = time.monotonic()
        response = quota_pb2_grpc.QuotaServiceStub(channel).ListQuotas(qpb.ListQuotasRequest(quota_year=2026), timeout=10)
        assert response.quotas and time.monotonic() - started < 10
    finally:
        channel.close()


def claim_served_quickly(pki: DevPki, port: int) -> None:
    channel = channel_as(pki, "customs", port)
    try:
        result = match_pb2_grpc.MatchServiceStub(channel).MatchClaim(mpb.MatchClaimRequest(line=claim_line()), timeout=10).result
        assert result.entry_number == claim_line().entry_number and result.decision
    finally:
        channel.close()


@pytest.fixture
def stall_settings(pki: DevPki, tmp_path: pathlib.Path) -> Settings:
    return dataclasses.replace(
        service_settings(pki, tmp_path / "service"), workers=STALL_WORKERS, reserved_workers=1, calls_per_identity=8,
        max_concurrent_rpcs=64, reserved_calls=8, request_arrival_ms=60_000,
    )


@pytest.fixture
def serve(pki: DevPki):  # type: ignore[no-untyped-def]
    """Starts a mutual-TLS server with the given settings on a free port; stopped at the end."""
    started: list[RunningServer] = []

    def start(settings: Settings) -> RunningServer:
        started.append(create_server(settings, address="127.0.0.1:0", credentials=server_credentials(pki.dir("service"))))
        return started[-1]

    yield start
    for running in started:
        running.stop(0)


@pytest.fixture
def stalls(pki: DevPki):  # type: ignore[no-untyped-def]
    opened: list[Stalls] = []

    def make(port: int) -> Stalls:
        opened.append(Stalls(pki, port))
        return opened[-1]

    yield make
    for stall in opened:
        stall.close()


def test_stalled_calls_without_a_role_are_refused_before_their_request(pki, serve, stalls, stall_settings):
    running = serve(stall_settings)
    attack = stalls(running.port)
    calls = attack.open("no-role", 10 * STALL_WORKERS)
    # Refused as soon as they start: no request, no worker, nothing held.
    for call in finished(calls, len(calls)):
        code, reason, _, _ = refusal(call)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_MISSING")
    served_quickly(pki, running.port, "admin")
    claim_served_quickly(pki, running.port)


def test_stalled_calls_of_a_role_holder_hold_no_worker_and_meet_its_cap(pki, serve, stalls, stall_settings):
    running = serve(stall_settings)
    attack = stalls(running.port)
    calls = attack.open("importer", stall_settings.calls_per_identity + 4)
    # The caller's share is 8 calls in flight: the other 4 are refused at once, with when to retry.
    for call in finished(calls, 4):
        code, reason, metadata, retry = refusal(call)
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CALLS_FOR_CALLER")
        assert metadata["per_identity"] == "8" and retry is not None and retry > 0
    time.sleep(0.5)
    assert sum(c.done() for c in calls) == 4  # the 8 admitted wait for their request: more than the 4 workers
    # Nobody else waits for them: customs, an admin, and another importer are served.
    served_quickly(pki, running.port, "admin")
    claim_served_quickly(pki, running.port)
    served_quickly(pki, running.port, "importer-other")
    # The stalled caller's own calls are refused while its share is taken, and served again once it is free.
    with pytest.raises(grpc.RpcError) as caught:
        served_quickly(pki, running.port, "importer")
    assert rich_error(caught.value).reason == "TOO_MANY_CALLS_FOR_CALLER"
    for call in calls:
        call.cancel()
    deadline = time.monotonic() + 20
    while True:
        try:
            served_quickly(pki, running.port, "importer")
            break
        except grpc.RpcError as error:  # the server sees the cancellations a moment later
            assert rich_error(error).reason == "TOO_MANY_CALLS_FOR_CALLER" and time.monotonic() < deadline
            time.sleep(0.1)


def test_calls_kept_for_customs_and_admins(pki, serve, stalls, stall_settings):
    # 16 calls in flight, 4 of them only for customs and admins: 12 for everyone else.
    running = serve(dataclasses.replace(stall_settings, max_concurrent_rpcs=16, reserved_calls=4))
    attack = stalls(running.port)
    first = attack.open("importer", 8)
    second = attack.open("importer-other", 5)
    (refused,) = finished([*first, *second], 1)
    code, reason, metadata, retry = refusal(refused)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CALLS")
    assert (metadata["total"], metadata["reserved"]) == ("16", "4") and retry
    with pytest.raises(grpc.RpcError) as caught:
        served_quickly(pki, running.port, "partner-gt")  # a third party: none of the 12 left
    assert rich_error(caught.value).reason == "TOO_MANY_CALLS"
    served_quickly(pki, running.port, "admin")
    claim_served_quickly(pki, running.port)


def test_a_request_that_does_not_arrive_in_time_ends_the_call(pki, serve, stalls, stall_settings):
    running = serve(dataclasses.replace(stall_settings, request_arrival_ms=1000))
    attack = stalls(running.port)
    started = time.monotonic()
    calls = attack.open("importer", 3)  # the client would wait 120 s
    for call in finished(calls, 3, within=30):
        code, reason, metadata, _ = refusal(call)
        assert (code, reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "REQUEST_NOT_RECEIVED")
        assert metadata["request_arrival_seconds"] == "1"
    assert time.monotonic() - started < 30
    served_quickly(pki, running.port, "importer")  # its share is free again


def test_streams_per_connection_are_limited(pki, serve, stalls, stall_settings):
    running = serve(dataclasses.replace(stall_settings, max_streams_per_connection=4))
    attack = stalls(running.port)
    channel = attack.channel("admin")
    held = attack.open("admin", 4, channel=channel)
    time.sleep(0.5)
    assert not any(c.done() for c in held)
    # A fifth stream on that connection waits for one of the four (the client queues it) ...
    stub = quota_pb2_grpc.QuotaServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListQuotas(qpb.ListQuotasRequest(quota_year=2026), timeout=2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    served_quickly(pki, running.port, "admin")  # ... while another connection is served
    held[0].cancel()
    assert stub.ListQuotas(qpb.ListQuotasRequest(quota_year=2026), timeout=10).quotas


def test_serving_limits_are_settings_of_ecert_serve():
    from server.app import server_options

    settings = Settings(max_streams_per_connection=7, keepalive_time_ms=11, keepalive_timeout_ms=12, max_connection_idle_ms=0,
                        max_connection_age_ms=13, max_connection_age_grace_ms=14)
    options = dict(server_options(settings))
    assert (options["grpc.max_concurrent_streams"], options["grpc.keepalive_time_ms"], options["grpc.keepalive_timeout_ms"]) == (7, 11, 12)
    assert (options["grpc.max_connection_age_ms"], options["grpc.max_connection_age_grace_ms"]) == (13, 14)
    assert "grpc.max_connection_idle_ms" not in options  # 0: no limit
    assert options["grpc.http2.max_pings_without_data"] == 0  # pings go on beside a quiet watch


def test_waiting_watches_hold_no_worker(pki, serve, stall_settings):
    running = serve(dataclasses.replace(stall_settings, workers=2, reserved_workers=0))
    running.use_cases.events.max_watchers = 6  # more watches than workers
    watch = qpb.WatchQuotasRequest(tpl_numbers=["9823.53.01"], quota_year=2026)
    channels, streams = [], []
    try:
        for party in ("importer", "importer-other", "admin", "admin", "customs", "customs"):
            channels.append(channel_as(pki, party, running.port))
            streams.append(quota_pb2_grpc.QuotaServiceStub(channels[-1]).WatchQuotas(watch, timeout=60))
            assert next(streams[-1]).kind == qpb.QUOTA_EVENT_KIND_SNAPSHOT
        # Six watches wait for events on two workers, and calls are still served.
        served_quickly(pki, running.port, "admin")
        claim_served_quickly(pki, running.port)
        assert all(stream.is_active() for stream in streams)
    finally:
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()


class SlowEcho(echo_pb2_grpc.EchoServiceServicer):
    def Echo(self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext) -> echo_pb2.EchoResponse:
        time.sleep(0.05)
        return echo_pb2.EchoResponse(payload=request.payload)


def test_calls_abandoned_while_their_handler_runs_leave_the_server_serving(pki, stall_settings, caplog):
    # The client goes away while a worker still runs the handler, which then logs the call (its peer
    # among it): that is read from what the call started with, not from the core's call, gone by then.
    caplog.set_level(logging.INFO, logger="ecert.rpc")  # each call's log line names its peer
    settings = dataclasses.replace(stall_settings, workers=2, reserved_workers=0, calls_per_identity=64)
    running = create_server(settings, address="127.0.0.1:0", credentials=server_credentials(pki.dir("service")),
                            extra_services=[lambda server: echo_pb2_grpc.add_EchoServiceServicer_to_server(SlowEcho(), server)])
    channel = channel_as(pki, "admin", running.port)
    try:
        echo = echo_pb2_grpc.EchoServiceStub(channel)
        calls = [echo.Echo.future(echo_pb2.EchoRequest(payload=b"x"), timeout=0.02) for _ in range(20)]
        for call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                call.result()
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.5)  # every handler has run to its end
        served_quickly(pki, running.port, "admin")
    finally:
        channel.close()
        running.stop(0)
