"""A certificate exactly as transmitted: text, unparsed, as a partner signs it.

The envelope's canonical bytes cover these fields as sent; the server's validation (server/domain/
certificate.py) turns a draft into a Certificate.

These dataclasses are the one mapping of a certificate's fields: their names are the proto's (ecert.v1.
Certificate and Party), in the proto's order, and every reader and writer of a certificate (the
protobuf messages in contract/messages.py, the server's domain Certificate, the SDK's model) goes by
CERTIFICATE_FIELDS, PARTY_ROLES and PARTY_FIELDS below. A new certificate field is added here, in the
proto and in the stored row.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class PartyDraft:
    name: str = ""
    address: str = ""
    tax_id: str = ""


@dataclass(frozen=True)
class CertificateDraft:
    """A certificate exactly as transmitted: text, unparsed. Validation turns it into a Certificate."""

    certificate_number: str = ""
    issuing_country: str = ""
    tpl_number: str = ""
    htsus_number: str = ""
    goods_description: str = ""
    quantity: str = ""
    unit: str = ""
    importer_of_record: str = ""
    exporter: PartyDraft = field(default_factory=PartyDraft)
    producer: PartyDraft = field(default_factory=PartyDraft)
    quota_year: int = 0
    issue_date: str = ""
    last_valid_date: str = ""
    invoice_number: str = ""


# The certificate's fields by their wire names, in the proto's order; the parties among them; a party's own.
CERTIFICATE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CertificateDraft))
PARTY_ROLES: tuple[str, ...] = tuple(f.name for f in fields(CertificateDraft) if f.type == PartyDraft.__name__)
PARTY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PartyDraft))
# The fields that are not parties: each one value, carried as is.
SCALAR_FIELDS: tuple[str, ...] = tuple(name for name in CERTIFICATE_FIELDS if name not in PARTY_ROLES)
