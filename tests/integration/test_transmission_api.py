"""TransmissionService against a real server on a real port and a real SQLite file."""
from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import json_format
from sqlalchemy import text

from contract.messages import receipt_from_proto
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import CANCEL, CREATE, NOW, REPLACE, certificate, envelope
from tests.grpc_errors import rich_error

TABLES = ("transmissions", "certificate_versions", "certificates")


def snapshot(server) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    with server.database.read_engine.connect() as connection:
        return {t: sorted(map(tuple, connection.execute(text(f"SELECT * FROM {t}")))) for t in TABLES}


def submit(stub, env):  # type: ignore[no-untyped-def]
    return stub.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env))


def rejected(stub, server, env):  # type: ignore[no-untyped-def]
    """Submit, expect a failure, and check that nothing stored changed."""
    before = snapshot(server)
    with pytest.raises(grpc.RpcError) as caught:
        submit(stub, env)
    assert snapshot(server) == before
    return rich_error(caught.value)


# -- actions ---------------------------------------------------------------------------------------


def test_create_stores_the_certificate_and_returns_a_signed_receipt(transmission, partner, receipt_public_key, clock):
    response = submit(transmission, envelope(partner.signer))
    receipt = response.receipt
    assert receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED
    assert (receipt.message_id, receipt.sender, receipt.recipient) == ("msg-0001", "MX", "US-CBP")
    assert receipt.received_at.ToDatetime(tzinfo=dt.timezone.utc) == clock.now()
    assert len(receipt.digest_sha256) == 32 and receipt.certificate_version == 1
    assert receipt_from_proto(receipt).verify(receipt_public_key)
    assert not response.replayed

    stored = transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-00000001")).certificate
    assert stored.version == 1 and stored.status == cpb.CERTIFICATE_STATUS_ACTIVE and stored.current
    assert stored.certificate.quantity == "1200" and stored.remaining_quantity == "1200"
    assert stored.certificate.htsus_number == "6109100012"
    assert stored.receipt_id == receipt.receipt_id and stored.digest_sha256 == receipt.digest_sha256


def test_replace_makes_a_new_version_and_keeps_the_old_one(transmission, partner):
    submit(transmission, envelope(partner.signer))
    replaced = submit(
        transmission,
        envelope(partner.signer, certificate(quantity="900.5"), message_id="msg-0002", action=REPLACE, replaces_version=1),
    )
    assert replaced.receipt.certificate_version == 2
    assert replaced.certificate.certificate.quantity == "900.5"
    v1 = transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-00000001", version=1))
    assert v1.certificate.certificate.quantity == "1200" and not v1.certificate.current
    latest = transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-00000001"))
    assert latest.certificate.version == 2 and latest.certificate.remaining_quantity == "900.5"


def test_cancel_marks_the_certificate_canceled(transmission, partner):
    submit(transmission, envelope(partner.signer))
    canceled = submit(
        transmission,
        envelope(partner.signer, cpb.Certificate(certificate_number="MX26-00000001", issuing_country="MX"),
                 message_id="msg-0002", action=CANCEL, replaces_version=1),
    )
    assert canceled.certificate.status == cpb.CERTIFICATE_STATUS_CANCELED
    assert canceled.certificate.version == 2
    # The canceled version keeps the certificate's elements for the record.
    assert canceled.certificate.certificate.tpl_number == "9823.53.01"


def test_warnings_are_accepted_and_named_in_the_receipt(transmission, partner):
    cert = certificate(exporter=cpb.Party(name="Textiles del Norte", address="Monterrey", tax_id=""))
    receipt = submit(transmission, envelope(partner.signer, cert)).receipt
    assert receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED_WITH_WARNINGS
    assert [(i.code, i.field, i.severity) for i in receipt.issues] == [
        ("TAX_ID_MISSING", "certificate.exporter.tax_id", tpb.SEVERITY_WARNING)
    ]


# -- validation rules, one field violation each ------------------------------------------------------

INVALID_FIELDS = [
    ({"certificate_number": ""}, "envelope.certificate.certificate_number", "FIELD_REQUIRED"),
    ({"certificate_number": "12345"}, "envelope.certificate.certificate_number", "CERTIFICATE_NUMBER_MALFORMED"),
    ({"goods_description": ""}, "envelope.certificate.goods_description", "FIELD_REQUIRED"),
    ({"invoice_number": ""}, "envelope.certificate.invoice_number", "FIELD_REQUIRED"),
    ({"issuing_country": "GT"}, "envelope.certificate.issuing_country", "COUNTRY_NOT_SENDERS"),
    ({"tpl_number": "9823.99.99"}, "envelope.certificate.tpl_number", "TPL_UNKNOWN"),
    ({"tpl_number": "9823.53.03"}, "envelope.certificate.tpl_number", "TPL_NOT_FILEABLE"),
    ({"htsus_number": "61091"}, "envelope.certificate.htsus_number", "HTSUS_NUMBER_MALFORMED"),
    ({"htsus_number": "61091000123"}, "envelope.certificate.htsus_number", "HTSUS_NUMBER_MALFORMED"),
    ({"htsus_number": "6109.1A"}, "envelope.certificate.htsus_number", "HTSUS_NUMBER_MALFORMED"),
    ({"quantity": "0"}, "envelope.certificate.quantity", "QUANTITY_NOT_POSITIVE"),
    ({"quantity": "-5"}, "envelope.certificate.quantity", "QUANTITY_NOT_POSITIVE"),
    ({"quantity": "1e3"}, "envelope.certificate.quantity", "QUANTITY_MALFORMED"),
    ({"quantity": "NaN"}, "envelope.certificate.quantity", "QUANTITY_MALFORMED"),
    ({"quantity": "1.0000001"}, "envelope.certificate.quantity", "QUANTITY_MALFORMED"),
    ({"unit": "M2"}, "envelope.certificate.unit", "UNIT_NOT_ALLOWED"),
    ({"unit": ""}, "envelope.certificate.unit", "FIELD_REQUIRED"),
    ({"importer_of_record": ""}, "envelope.certificate.importer_of_record", "FIELD_REQUIRED"),
    ({"importer_of_record": "12345"}, "envelope.certificate.importer_of_record", "IMPORTER_OF_RECORD_MALFORMED"),
    ({"issue_date": "2026-02-30"}, "envelope.certificate.issue_date", "DATE_MALFORMED"),
    ({"issue_date": "2026-04-01"}, "envelope.certificate.issue_date", "ISSUE_DATE_IN_FUTURE"),
    ({"last_valid_date": "2026-01-01"}, "envelope.certificate.last_valid_date", "VALIDITY_INVERTED"),
    ({"quota_year": 2024}, "envelope.certificate.quota_year", "QUOTA_YEAR_MISMATCH"),
    ({"quota_year": 1999}, "envelope.certificate.quota_year", "QUOTA_YEAR_OUT_OF_RANGE"),
    ({"exporter": cpb.Party(name="", address="x")}, "envelope.certificate.exporter.name", "FIELD_REQUIRED"),
    ({"producer": cpb.Party(name="x", address="")}, "envelope.certificate.producer.address", "FIELD_REQUIRED"),
    ({"goods_description": "x" * 600}, "envelope.certificate.goods_description", "FIELD_TOO_LONG"),
]


@pytest.mark.parametrize("changes,field,reason", INVALID_FIELDS, ids=[r for _, _, r in INVALID_FIELDS])
def test_each_invalid_field_is_rejected_with_its_violation(transmission, server, partner, receipt_public_key, changes, field, reason):
    error = rejected(transmission, server, envelope(partner.signer, certificate(**changes)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.fields.get(field) == reason
    assert error.receipt is not None and error.receipt.outcome == tpb.TRANSMISSION_OUTCOME_REJECTED
    assert receipt_from_proto(error.receipt).verify(receipt_public_key)


ENVELOPE_RULES = [
    ({"message_id": ""}, "envelope.message_id", "MESSAGE_ID_MISSING"),
    ({"message_id": "has spaces in it"}, "envelope.message_id", "MESSAGE_ID_MALFORMED"),
    ({"action": tpb.TRANSMISSION_ACTION_UNSPECIFIED}, "envelope.action", "ACTION_MISSING"),
    ({"action": CREATE, "replaces_version": 3}, "envelope.replaces_version", "REPLACES_VERSION_UNEXPECTED"),
    ({"action": REPLACE, "replaces_version": 0}, "envelope.replaces_version", "REPLACES_VERSION_MISSING"),
]


@pytest.mark.parametrize("fields,field,reason", ENVELOPE_RULES, ids=[r for _, _, r in ENVELOPE_RULES])
def test_envelope_rules(transmission, server, partner, fields, field, reason):
    error = rejected(transmission, server, envelope(partner.signer, **fields))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.fields.get(field) == reason


# -- signatures ------------------------------------------------------------------------------------


def test_unsigned_envelope_is_rejected(transmission, server, partner):
    env = envelope(partner.signer)
    env.ClearField("signature")
    error = rejected(transmission, server, env)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_MISSING")
    assert error.fields == {"envelope.signature": "SIGNATURE_MISSING"}


def test_unknown_key_is_rejected(transmission, server):
    from tests.factories import new_signer

    error = rejected(transmission, server, envelope(new_signer("mx-stolen-1")))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIGNING_KEY_UNKNOWN")


def test_expired_key_is_rejected(transmission, server, partner):
    error = rejected(transmission, server, envelope(partner.expired_signer))
    assert error.reason == "SIGNING_KEY_EXPIRED"


def test_key_of_another_partner_is_rejected(transmission, server, partner):
    error = rejected(transmission, server, envelope(partner.other_partner_signer))
    assert error.reason == "SIGNING_KEY_NOT_SENDERS"


def test_signature_by_the_wrong_key_is_rejected(transmission, server, partner):
    env = envelope(partner.signer)
    env.signature = partner.other_partner_signer.sign(b"something else")
    assert rejected(transmission, server, env).reason == "SIGNATURE_INVALID"


@pytest.mark.parametrize("path", ["certificate.quantity", "certificate.importer_of_record", "message_id", "replaces_version"])
def test_one_bit_changed_after_signing_is_caught(transmission, server, partner, path):
    env = envelope(partner.signer)
    if path == "replaces_version":
        env.replaces_version ^= 1
    else:
        owner, name = (env.certificate, path.split(".")[1]) if "." in path else (env, path)
        value = bytearray(getattr(owner, name).encode())
        value[-1] ^= 0x01
        setattr(owner, name, value.decode())
    error = rejected(transmission, server, env)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_INVALID")


# -- idempotency, replay, clock -----------------------------------------------------------------------


def test_retry_returns_the_original_receipt_and_stores_nothing_twice(transmission, server, partner, clock):
    env = envelope(partner.signer)
    first = submit(transmission, env)
    after_first = snapshot(server)
    clock.advance(seconds=30)
    again = submit(transmission, env)
    assert again.replayed and again.receipt == first.receipt
    assert snapshot(server) == after_first


def test_retry_is_replayed_even_once_its_sent_at_is_older_than_the_accepted_age(transmission, server, partner, clock):
    env = envelope(partner.signer)
    first = submit(transmission, env)
    after_first = snapshot(server)
    clock.advance(hours=2, seconds=1)  # sent as a new message now, it would be refused (SENDER_CLOCK_SKEW)
    again = submit(transmission, env)
    assert again.replayed and again.receipt == first.receipt
    assert snapshot(server) == after_first


def test_message_id_reused_with_other_content_is_already_exists(transmission, server, partner):
    submit(transmission, envelope(partner.signer))
    error = rejected(transmission, server, envelope(partner.signer, certificate(quantity="1300")))
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "MESSAGE_ID_REUSED")
    assert error.metadata["receipt_id"]


@pytest.mark.parametrize("offset", [dt.timedelta(minutes=10, seconds=1), -dt.timedelta(hours=2, seconds=1)])
def test_sent_at_ahead_of_the_skew_or_older_than_the_age_is_rejected(transmission, server, partner, offset):
    error = rejected(transmission, server, envelope(partner.signer, sent_at=NOW + offset))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SENDER_CLOCK_SKEW")
    assert error.fields == {"envelope.sent_at": "SENDER_CLOCK_SKEW"}


@pytest.mark.parametrize("offset", [dt.timedelta(minutes=9), -dt.timedelta(minutes=9), -dt.timedelta(minutes=25), -dt.timedelta(hours=2)])
def test_sent_at_within_the_skew_ahead_or_the_age_behind_is_accepted(transmission, partner, offset):
    # 25 minutes old: held by a relay through an outage longer than the skew, still genuine and new.
    assert submit(transmission, envelope(partner.signer, sent_at=NOW + offset)).receipt.certificate_version == 1


# -- state preconditions -------------------------------------------------------------------------------


def test_create_of_an_existing_number_is_failed_precondition(transmission, server, partner):
    submit(transmission, envelope(partner.signer))
    error = rejected(transmission, server, envelope(partner.signer, message_id="msg-0002"))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CERTIFICATE_ALREADY_EXISTS")
    assert error.receipt is not None


def test_replace_of_a_stale_version_is_aborted(transmission, server, partner):
    submit(transmission, envelope(partner.signer))
    submit(transmission, envelope(partner.signer, message_id="msg-0002", action=REPLACE, replaces_version=1))
    error = rejected(transmission, server, envelope(partner.signer, certificate(quantity="5"), message_id="msg-0003", action=REPLACE, replaces_version=1))
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "STALE_VERSION")
    assert error.metadata == {"current_version": "2", "replaces_version": "1"}


def test_cancel_of_a_stale_version_is_aborted(transmission, server, partner):
    submit(transmission, envelope(partner.signer))
    submit(transmission, envelope(partner.signer, message_id="msg-0002", action=REPLACE, replaces_version=1))
    error = rejected(transmission, server, envelope(partner.signer, message_id="msg-0003", action=CANCEL, replaces_version=1))
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "STALE_VERSION")


def test_replace_of_an_unknown_certificate_is_not_found(transmission, server, partner):
    error = rejected(transmission, server, envelope(partner.signer, action=REPLACE, replaces_version=1))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "CERTIFICATE_NOT_FOUND")


def test_replace_after_cancel_is_failed_precondition(transmission, server, partner):
    submit(transmission, envelope(partner.signer))
    submit(transmission, envelope(partner.signer, message_id="msg-0002", action=CANCEL, replaces_version=1))
    error = rejected(transmission, server, envelope(partner.signer, message_id="msg-0003", action=REPLACE, replaces_version=2))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CERTIFICATE_CANCELED")


# -- dry run -----------------------------------------------------------------------------------------


def test_validate_reports_findings_with_severities_and_stores_nothing(transmission, server, partner):
    before = snapshot(server)
    cert = certificate(htsus_number="61091", exporter=cpb.Party(name="n", address="a", tax_id=""))
    report = transmission.ValidateCertificate(tpb.ValidateCertificateRequest(envelope=envelope(partner.signer, cert)))
    assert not report.valid
    assert {(i.field, i.code, i.severity) for i in report.issues} == {
        ("envelope.certificate.htsus_number", "HTSUS_NUMBER_MALFORMED", tpb.SEVERITY_ERROR),
        ("envelope.certificate.exporter.tax_id", "TAX_ID_MISSING", tpb.SEVERITY_WARNING),
    }
    good = transmission.ValidateCertificate(tpb.ValidateCertificateRequest(envelope=envelope(partner.signer)))
    assert good.valid and not good.issues and len(good.digest_sha256) == 32
    assert snapshot(server) == before


def test_validate_sees_state_conflicts(transmission, partner):
    submit(transmission, envelope(partner.signer))
    report = transmission.ValidateCertificate(tpb.ValidateCertificateRequest(envelope=envelope(partner.signer, message_id="msg-0002")))
    assert not report.valid and [i.code for i in report.issues] == ["CERTIFICATE_ALREADY_EXISTS"]


# -- reading -----------------------------------------------------------------------------------------


def test_list_paginates_with_opaque_tokens_and_filters(transmission, partner):
    for n in range(7):
        cert = certificate(f"MX26-{n:08d}", tpl_number="9823.53.02" if n % 2 else "9823.53.01")
        submit(transmission, envelope(partner.signer, cert, message_id=f"m-{n}"))
    seen, token, pages = [], "", 0
    while True:
        page = transmission.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", page_size=3, page_token=token))
        seen += [c.certificate.certificate_number for c in page.certificates]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3 and seen == [f"MX26-{n:08d}" for n in range(7)]
    wool = transmission.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", tpl_number="9823.53.02"))
    assert [c.certificate.certificate_number for c in wool.certificates] == ["MX26-00000001", "MX26-00000003", "MX26-00000005"]
    assert not transmission.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", quota_year=2025)).certificates


def test_page_token_is_checked(transmission, partner):
    for n in range(3):
        submit(transmission, envelope(partner.signer, certificate(f"MX26-{n:08d}"), message_id=f"m-{n}"))
    token = transmission.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", page_size=1)).next_page_token
    with pytest.raises(grpc.RpcError) as caught:
        transmission.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", page_size=1, page_token=token, tpl_number="9823.53.02"))
    assert rich_error(caught.value).fields == {"page_token": "PAGE_TOKEN_INVALID"}
    with pytest.raises(grpc.RpcError) as caught:
        transmission.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", page_token="garbage!"))
    assert rich_error(caught.value).reason == "PAGE_TOKEN_INVALID"
    with pytest.raises(grpc.RpcError) as caught:
        transmission.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", page_size=-1))
    assert rich_error(caught.value).reason == "PAGE_SIZE_NEGATIVE"


def test_get_errors(transmission, partner):
    with pytest.raises(grpc.RpcError) as caught:
        transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-99999999"))
    assert (caught.value.code(), rich_error(caught.value).reason) == (grpc.StatusCode.NOT_FOUND, "CERTIFICATE_NOT_FOUND")
    with pytest.raises(grpc.RpcError) as caught:
        transmission.GetCertificate(tpb.GetCertificateRequest())
    assert rich_error(caught.value).fields == {"issuing_country": "FIELD_REQUIRED", "certificate_number": "FIELD_REQUIRED"}
    submit(transmission, envelope(partner.signer))
    with pytest.raises(grpc.RpcError) as caught:
        transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-00000001", version=2))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_activity_report_by_condition(transmission, partner):
    for n in range(3):
        submit(transmission, envelope(partner.signer, certificate(f"MX26-{n:08d}"), message_id=f"m-{n}"))
    submit(transmission, envelope(partner.signer, cpb.Certificate(certificate_number="MX26-00000001", issuing_country="MX"),
                                  message_id="m-cancel", action=CANCEL, replaces_version=1))

    def report(condition):  # type: ignore[no-untyped-def]
        r = transmission.GetActivityReport(tpb.GetActivityReportRequest(issuing_country="MX", condition=condition))
        return [(e.certificate_number, e.condition) for e in r.entries]

    assert report(tpb.CERTIFICATE_CONDITION_UNMATCHED) == [("MX26-00000000", 11), ("MX26-00000002", 11)]
    assert report(tpb.CERTIFICATE_CONDITION_CANCELED) == [("MX26-00000001", 12)]
    assert report(tpb.CERTIFICATE_CONDITION_MATCHED) == []
    with pytest.raises(grpc.RpcError) as caught:
        transmission.GetActivityReport(tpb.GetActivityReportRequest(issuing_country="MX"))
    assert rich_error(caught.value).fields == {"condition": "CONDITION_MISSING"}


# -- receipts offline ----------------------------------------------------------------------------------


def test_receipt_verifies_offline_and_fails_when_altered(transmission, partner, receipt_public_key):
    receipt = submit(transmission, envelope(partner.signer)).receipt
    assert receipt_from_proto(receipt).verify(receipt_public_key)
    for name, value in (("sender", "GT"), ("message_id", "msg-9999"), ("certificate_version", 2)):
        altered = tpb.Receipt()
        altered.CopyFrom(receipt)
        setattr(altered, name, value)
        assert not receipt_from_proto(altered).verify(receipt_public_key), name
    altered = tpb.Receipt()
    altered.CopyFrom(receipt)
    altered.received_at.seconds -= 3600  # back-dating a receipt must not verify
    assert not receipt_from_proto(altered).verify(receipt_public_key)
    assert json_format.MessageToJson(receipt)  # the form `ecert receipt verify` reads
