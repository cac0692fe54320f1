"""A certificate exactly as transmitted: text, unparsed, as a partner signs it.

The envelope's canonical bytes cover these fields as sent; the server's validation (server/domain/
certificate.py) turns a draft into a Certificate.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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
