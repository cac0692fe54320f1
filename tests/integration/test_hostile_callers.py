"""Attacks by callers who hold a valid client certificate (issue 15), against a real server."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json

import grpc
import pytest

from grpc_status import rpc_status

from client.sdk import OperatorClient
from ecert.relay.v1 import relay_pb2 as rpb
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from gateway_sim.gateway.gateway import Gateway
from gateway_sim.gateway.register import Register, SendState
from server.api.converters import envelope_from_proto, receipt_from_proto
from server.domain.canonical import ENVELOPE_TAG
from tests.factories import certificate, claim_line, envelope
from tests.grpc_errors import rich_error
from tests.integration.test_security_usage import USAGE, certified  # noqa: F401  (fixture)
from tests.integration.test_transmission_api import rejected, snapshot, submit
from tests.tls_fixtures import channel_as, pki, secure_server  # noqa: F401  (fixtures)

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
