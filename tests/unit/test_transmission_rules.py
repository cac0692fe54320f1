"""Certificate validation, transmission rules, canonical bytes and receipts, in plain Python."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.certificate import CertificateDraft, PartyDraft
from contract.receipt import Outcome, Receipt
from contract.signing import Signer
from server.adapters.reference_files import load_reference_data
from server.domain.certificate import validate_certificate
from server.domain.errors import DomainError, ErrorKind, Severity
from server.domain.quantity import format_quantity, parse_quantity
from server.domain.transmission import Action, CertificateHead, CertificateStatus, Envelope, check_envelope, plan_transition
from server.domain.trust_store import TrustedKey, TrustStore

REFERENCE = load_reference_data()
TODAY = dt.date(2026, 3, 2)
UTC = dt.timezone.utc


def draft(**changes: object) -> CertificateDraft:
    base = CertificateDraft(
        certificate_number="MX26-00000001", issuing_country="MX", tpl_number="9823.53.01", htsus_number="6109.10.0012",
        goods_description="T-shirts", quantity="1200", unit="DOZ", importer_of_record="12-345678900",
        exporter=PartyDraft("Exporter", "Monterrey", "RFC1"), producer=PartyDraft("Producer", "León", "RFC2"),
        quota_year=2026, issue_date="2026-02-20", last_valid_date="2026-12-31", invoice_number="INV-1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_domain_imports_neither_grpc_nor_sqlalchemy():
    code = (
        "import sys, pkgutil, importlib, server.domain as d\n"
        "[importlib.import_module('server.domain.' + m.name) for m in pkgutil.iter_modules(d.__path__)]\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('grpc', 'sqlalchemy', 'google'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_valid_certificate_parses_exactly():
    certificate, findings = validate_certificate(draft(quantity="1200.50"), REFERENCE, "MX", TODAY)
    assert findings == [] and certificate is not None
    assert certificate.quantity == Decimal("1200.50") and certificate.htsus_number == "6109100012"


@pytest.mark.parametrize(
    "changes,field,code",
    [
        ({"quantity": "1,200"}, "certificate.quantity", "QUANTITY_MALFORMED"),
        ({"quantity": "0.0"}, "certificate.quantity", "QUANTITY_NOT_POSITIVE"),
        ({"unit": "KG", "tpl_number": "9823.53.06", "htsus_number": "5205.11"}, None, None),
        ({"unit": "DOZ", "tpl_number": "9823.53.06", "htsus_number": "5205.11"}, "certificate.unit", "UNIT_NOT_ALLOWED"),
        ({"certificate_number": "MX2600000001"}, "certificate.certificate_number", "CERTIFICATE_NUMBER_MALFORMED"),
        ({"issuing_country": "mx"}, "certificate.issuing_country", "COUNTRY_MALFORMED"),
        ({"importer_of_record": "123-45-6789"}, None, None),
        ({"importer_of_record": "260101-12345"}, None, None),
        ({"quota_year": 2036, "last_valid_date": "2036-12-31"}, "certificate.quota_year", "QUOTA_YEAR_NOT_OPEN"),
    ],
)
def test_field_rules(changes, field, code):
    certificate, findings = validate_certificate(draft(**changes), REFERENCE, "MX", TODAY)
    errors = [(f.field, f.code) for f in findings if f.severity is Severity.ERROR]
    if field is None:
        assert errors == []
    else:
        assert (field, code) in errors and certificate is None


def test_quantities_never_pass_through_float():
    assert parse_quantity("0.1") + parse_quantity("0.2") == Decimal("0.3")
    assert format_quantity(Decimal("12.500")) == "12.5" and format_quantity(Decimal("1E+3")) == "1000"
    for bad in ("1e3", "inf", " 1", "--1", "١٢", "0x10"):
        with pytest.raises(ValueError):
            parse_quantity(bad)


def head(version: int = 1, status: CertificateStatus = CertificateStatus.ACTIVE, used: str = "0") -> CertificateHead:
    return CertificateHead("MX", "MX26-00000001", version, status, "9823.53.01", 2026, "DOZ", Decimal(1200), Decimal(used))


RECEIVED = dt.datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SKEW, AGE = dt.timedelta(minutes=10), dt.timedelta(hours=2)


def sent(at: dt.datetime) -> Envelope:
    """An envelope whose only point of interest is its sent_at (microseconds kept)."""
    seconds = int(at.replace(microsecond=0).timestamp())
    return Envelope("msg-1", "MX", seconds, at.microsecond * 1000, Action.CREATE, 0, "k", b"s", draft())


def sent_at_codes(at: dt.datetime) -> list[tuple[str, str]]:
    return [(f.code, f.field) for f in check_envelope(sent(at), RECEIVED, SKEW, AGE)]


@pytest.mark.parametrize(
    "offset",
    [
        dt.timedelta(0),
        SKEW,  # ahead by exactly the skew
        -SKEW - dt.timedelta(seconds=1),  # older than the skew: an envelope held by a relay
        -dt.timedelta(minutes=25),  # a relay outage longer than the skew
        -AGE,  # exactly the age
    ],
)
def test_sent_at_within_the_skew_ahead_and_the_age_behind_is_accepted(offset):
    assert sent(RECEIVED + offset).sent_at == RECEIVED + offset
    assert sent_at_codes(RECEIVED + offset) == []


@pytest.mark.parametrize(
    "offset, description",
    [
        (SKEW + dt.timedelta(microseconds=1), "is ahead of customs' clock by more than 600 s"),
        (dt.timedelta(minutes=25), "is ahead of customs' clock by more than 600 s"),  # not symmetric: the future stays tight
        (-AGE - dt.timedelta(microseconds=1), "is more than 7200 s before customs' clock"),
        (-dt.timedelta(days=3), "is more than 7200 s before customs' clock"),
    ],
)
def test_sent_at_too_far_ahead_or_older_than_the_age_is_sender_clock_skew(offset, description):
    findings = check_envelope(sent(RECEIVED + offset), RECEIVED, SKEW, AGE)
    assert [(f.code, f.field, f.description) for f in findings] == [("SENDER_CLOCK_SKEW", "sent_at", description)]


def test_transitions():
    certificate, _ = validate_certificate(draft(), REFERENCE, "MX", TODAY)
    assert plan_transition(Action.CREATE, 0, certificate, None).version == 1
    assert plan_transition(Action.REPLACE, 3, certificate, head(3)).version == 4
    assert plan_transition(Action.CANCEL, 1, None, head()).status is CertificateStatus.CANCELED
    cases = [
        (Action.CREATE, 0, head(), "CERTIFICATE_ALREADY_EXISTS", ErrorKind.PRECONDITION),
        (Action.REPLACE, 1, None, "CERTIFICATE_NOT_FOUND", ErrorKind.NOT_FOUND),
        (Action.REPLACE, 1, head(2), "STALE_VERSION", ErrorKind.CONFLICT),
        (Action.REPLACE, 2, head(2, CertificateStatus.CANCELED), "CERTIFICATE_CANCELED", ErrorKind.PRECONDITION),
        (Action.CANCEL, 1, head(used="5"), "CERTIFICATE_IN_USE", ErrorKind.PRECONDITION),
    ]
    for action, replaces, current, reason, kind in cases:
        with pytest.raises(DomainError) as caught:
            plan_transition(action, replaces, certificate, current)
        assert (caught.value.reason, caught.value.kind) == (reason, kind)


def envelope(**changes: object) -> Envelope:
    base = Envelope("m-1", "MX", 1772463600, 0, Action.CREATE, 0, "k1", b"", draft())
    return replace(base, **changes)  # type: ignore[arg-type]


def test_canonical_bytes_cover_every_field_and_ignore_the_signature():
    reference = envelope().signed_bytes()
    assert envelope(signature=b"x" * 64).signed_bytes() == reference
    for change in ({"message_id": "m-2"}, {"sent_at_nanos": 1}, {"replaces_version": 1}, {"key_id": "k2"},
                   {"certificate": draft(quantity="1200.0")}, {"action": Action.REPLACE}):
        assert envelope(**change).signed_bytes() != reference, change
    assert reference.startswith(b"ecert.v1.SignedEnvelope\n")


def test_trust_store_checks_owner_window_and_signature():
    signer = Signer("k1", Ed25519PrivateKey.generate())
    start, end = dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC)
    store = TrustStore([TrustedKey("k1", "MX", signer.public_key, start, end)])
    data = envelope().signed_bytes()
    good = signer.sign(data)
    assert store.verify(sender="MX", key_id="k1", signature=good, data=data, signed_at=start).key_id == "k1"
    for kwargs, reason in (
        ({"sender": "GT"}, "SIGNING_KEY_NOT_SENDERS"),
        ({"signed_at": end + dt.timedelta(seconds=1)}, "SIGNING_KEY_EXPIRED"),
        ({"data": data + b" "}, "SIGNATURE_INVALID"),
        ({"key_id": "k9"}, "SIGNING_KEY_UNKNOWN"),
        ({"signature": b""}, "SIGNATURE_MISSING"),
    ):
        arguments = {"sender": "MX", "key_id": "k1", "signature": good, "data": data, "signed_at": start, **kwargs}
        with pytest.raises(DomainError) as caught:
            store.verify(**arguments)  # type: ignore[arg-type]
        assert caught.value.reason == reason


def test_receipts_verify_and_any_change_breaks_them():
    signer = Signer("cbp-1", Ed25519PrivateKey.generate())
    receipt = Receipt("R-1", "m-1", "MX", "US-CBP", b"\x01" * 32, dt.datetime(2026, 3, 2, tzinfo=UTC),
                      Outcome.ACCEPTED, (), "CREATE", "MX26-00000001", 1, "").signed_by(signer)
    assert receipt.signing_key_id == "cbp-1" and receipt.verify(signer.public_key)
    for change in ({"outcome": Outcome.REJECTED}, {"recipient": "US-CBQ"}, {"digest": b"\x02" * 32},
                   {"received_at": dt.datetime(2026, 3, 1, tzinfo=UTC)}):
        assert not replace(receipt, **change).verify(signer.public_key)  # type: ignore[arg-type]
