"""The one mapping of a certificate's fields (contract/certificate.py): it names every field of the proto's
Certificate and Party, the domain's Certificate and the SDK's have exactly its fields, and a certificate
goes proto -> draft -> domain -> proto (and through the SDK's model) unchanged."""
from __future__ import annotations

import datetime as dt
from dataclasses import fields

from google.protobuf.descriptor import FieldDescriptor

from client.sdk.models import Certificate as SdkCertificate
from contract.certificate import CERTIFICATE_FIELDS, PARTY_FIELDS, PARTY_ROLES, SCALAR_FIELDS, CertificateDraft, PartyDraft
from contract.messages import draft_from_proto, draft_to_proto
from ecert.v1 import certificate_pb2 as cpb
from server.adapters.reference_files import load_reference_data
from server.api.converters import certificate_to_proto
from server.domain.certificate import Certificate, draft_of, validate_certificate
from tests.factories import certificate

TODAY = dt.date(2026, 3, 2)


def _names(descriptor: object) -> list[str]:
    return [f.name for f in sorted(descriptor.fields, key=lambda f: f.number)]  # type: ignore[attr-defined]


def test_the_mapping_names_every_field_of_the_proto_certificate_in_its_order():
    assert list(CERTIFICATE_FIELDS) == _names(cpb.Certificate.DESCRIPTOR)
    assert list(PARTY_FIELDS) == _names(cpb.Party.DESCRIPTOR)
    parties = [f.name for f in cpb.Certificate.DESCRIPTOR.fields if f.type == FieldDescriptor.TYPE_MESSAGE]
    assert list(PARTY_ROLES) == parties
    assert all(cpb.Certificate.DESCRIPTOR.fields_by_name[r].message_type is cpb.Party.DESCRIPTOR for r in PARTY_ROLES)
    assert set(SCALAR_FIELDS) | set(PARTY_ROLES) == set(CERTIFICATE_FIELDS)


def test_the_domain_and_the_sdk_certificates_have_the_mappings_fields():
    assert tuple(f.name for f in fields(Certificate)) == CERTIFICATE_FIELDS
    assert tuple(f.name for f in fields(SdkCertificate)) == CERTIFICATE_FIELDS
    assert tuple(f.name for f in fields(PartyDraft)) == PARTY_FIELDS


def _every_field_set() -> cpb.Certificate:
    """The factory's certificate, written as the service writes it back (HTSUS digits only), every field set."""
    message = certificate(htsus_number="6109100012")
    for name in CERTIFICATE_FIELDS:
        assert message.HasField(name) if name in PARTY_ROLES else getattr(message, name), name
    for role in PARTY_ROLES:
        assert all(getattr(getattr(message, role), name) for name in PARTY_FIELDS), role
    return message


def test_proto_to_draft_and_back_is_the_same_message():
    message = _every_field_set()
    draft = draft_from_proto(message)
    assert isinstance(draft, CertificateDraft) and isinstance(draft.exporter, PartyDraft)
    assert draft.exporter.tax_id == message.exporter.tax_id and draft.quota_year == message.quota_year
    assert draft_to_proto(draft) == message
    assert draft_to_proto(draft).SerializeToString(deterministic=True) == message.SerializeToString(deterministic=True)


def test_proto_to_domain_and_back_is_the_same_message():
    message = _every_field_set()
    parsed, findings = validate_certificate(draft_from_proto(message), load_reference_data(), "MX", TODAY)
    assert parsed is not None, findings
    assert certificate_to_proto(parsed) == message
    assert draft_of(parsed) == draft_from_proto(message)


def test_the_domain_writes_its_typed_fields_as_the_wire_carries_them():
    parsed, _ = validate_certificate(
        draft_from_proto(certificate(quantity="1200.50", htsus_number="6109.10.0012")), load_reference_data(), "MX", TODAY,
    )
    assert parsed is not None
    written = certificate_to_proto(parsed)
    assert (written.quantity, written.htsus_number) == ("1200.5", "6109100012")
    assert (written.issue_date, written.last_valid_date) == ("2026-02-20", "2026-12-31")


def test_the_sdk_certificate_goes_through_the_same_mapping():
    message = _every_field_set()
    model = SdkCertificate.from_proto(message)
    assert isinstance(model, CertificateDraft) and model.to_proto() == message
    assert SdkCertificate("MX26-1").issuing_country == "MX"  # the SDK's defaults
