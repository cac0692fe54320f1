"""Certificates of eligibility: their elements and the rules a transmitted one must meet."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from contract.certificate import CERTIFICATE_FIELDS, CertificateDraft, PartyDraft
from server.domain.errors import Finding, Severity
from server.domain.quantity import format_quantity, parse_quantity
from server.domain.quota import quota_period
from server.domain.reference import Partner, ReferenceData

# Codes are ASCII: [0-9], never \d, which also matches Arabic-Indic and every other Unicode digit
# (so does str.isdigit). A code that only looks right would be stored and never match anything.
# CBP importer of record number formats: IRS EIN with a 2-character suffix, CBP-assigned, SSN.
IMPORTER_OF_RECORD_PATTERNS = (
    re.compile(r"[0-9]{2}-[0-9]{7}[0-9A-Z]{2}"),
    re.compile(r"[0-9]{6}-[0-9]{5}"),
    re.compile(r"[0-9]{3}-[0-9]{2}-[0-9]{4}"),
)
HTSUS_PATTERN = re.compile(r"[0-9]{4}(\.?[0-9]{2}){1,3}")
COUNTRY_PATTERN = re.compile(r"[A-Z]{2}")
MAX_TEXT = 512  # longest free-text element accepted
EARLIEST_QUOTA_YEAR = 2020  # USMCA entered into force on 2020-07-01
LATEST_QUOTA_YEAR = 2100


# A party's elements are text that validation checks but never parses: the draft's party as transmitted.
Party = PartyDraft


@dataclass(frozen=True)
class Certificate:
    """A valid certificate: the draft's fields (contract/certificate.py), those with a type parsed."""

    certificate_number: str
    issuing_country: str
    tpl_number: str
    htsus_number: str  # digits only, 6 to 10
    goods_description: str
    quantity: Decimal
    unit: str
    importer_of_record: str
    exporter: Party
    producer: Party
    quota_year: int
    issue_date: dt.date
    last_valid_date: dt.date
    invoice_number: str


def normalize_htsus(text: str) -> str:
    return text.replace(".", "")


def parse_iso_date(text: str) -> dt.date:
    """A calendar date written exactly YYYY-MM-DD; ValueError otherwise."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        raise ValueError("not YYYY-MM-DD")
    return dt.date.fromisoformat(text)


def validate_certificate(
    draft: CertificateDraft, reference: ReferenceData, sender: str, today: dt.date
) -> tuple[Certificate | None, list[Finding]]:
    """Check every element; return the certificate (when no error) and all findings, by field."""
    findings: list[Finding] = []

    def error(code: str, name: str, description: str) -> None:
        findings.append(Finding(code, f"certificate.{name}", description))

    def warning(code: str, name: str, description: str) -> None:
        findings.append(Finding(code, f"certificate.{name}", description, Severity.WARNING))

    required = {
        "certificate_number": draft.certificate_number,
        "issuing_country": draft.issuing_country,
        "tpl_number": draft.tpl_number,
        "htsus_number": draft.htsus_number,
        "goods_description": draft.goods_description,
        "quantity": draft.quantity,
        "unit": draft.unit,
        "importer_of_record": draft.importer_of_record,
        "issue_date": draft.issue_date,
        "last_valid_date": draft.last_valid_date,
        "invoice_number": draft.invoice_number,
        "exporter.name": draft.exporter.name,
        "exporter.address": draft.exporter.address,
        "producer.name": draft.producer.name,
        "producer.address": draft.producer.address,
    }
    for name, value in required.items():
        if not value.strip():
            error("FIELD_REQUIRED", name, "is required")
        elif len(value) > MAX_TEXT:
            error("FIELD_TOO_LONG", name, f"is longer than {MAX_TEXT} characters")
    for name, value in (("exporter.tax_id", draft.exporter.tax_id), ("producer.tax_id", draft.producer.tax_id)):
        if not value.strip():
            warning("TAX_ID_MISSING", name, "no tax id given for the party")
        elif len(value) > MAX_TEXT:
            error("FIELD_TOO_LONG", name, f"is longer than {MAX_TEXT} characters")

    partner: Partner | None = None
    if draft.issuing_country:
        if not COUNTRY_PATTERN.fullmatch(draft.issuing_country):
            error("COUNTRY_MALFORMED", "issuing_country", "must be an ISO 3166-1 alpha-2 code")
        elif draft.issuing_country != sender:
            error("COUNTRY_NOT_SENDERS", "issuing_country", f"a partner may only transmit its own certificates ({sender})")
        else:
            partner = reference.partner(draft.issuing_country)
            if partner is None:
                error("PARTNER_UNKNOWN", "issuing_country", "not a partner registered for eCERT")

    if draft.certificate_number and partner is not None and not partner.certificate_number_ok(draft.certificate_number):
        error(
            "CERTIFICATE_NUMBER_MALFORMED",
            "certificate_number",
            f"does not match {partner.country}'s certificate number format",
        )

    tpl = reference.tpl(draft.tpl_number) if draft.tpl_number else None
    if draft.tpl_number:
        if tpl is None or (partner is not None and tpl.partner != partner.country):
            error("TPL_UNKNOWN", "tpl_number", "not a known Chapter 98 TPL number for this partner")
            tpl = None
        elif not tpl.fileable:
            error("TPL_NOT_FILEABLE", "tpl_number", "an aggregate ceiling; certify the member TPL instead")

    htsus = normalize_htsus(draft.htsus_number)
    if draft.htsus_number:
        if not HTSUS_PATTERN.fullmatch(draft.htsus_number):
            error("HTSUS_NUMBER_MALFORMED", "htsus_number", "must be 6 to 10 digits (dots allowed between groups)")
        elif tpl is not None and tpl.htsus_chapters and not htsus.startswith(tpl.htsus_chapters):
            warning("HTSUS_OUTSIDE_TPL", "htsus_number", "goods are not in a chapter usually covered by this TPL")

    quantity: Decimal | None = None
    if draft.quantity:
        try:
            quantity = parse_quantity(draft.quantity)
        except ValueError as exc:
            error("QUANTITY_MALFORMED", "quantity", f"must be a plain decimal number: {exc}")
        else:
            if quantity <= 0:
                error("QUANTITY_NOT_POSITIVE", "quantity", "must be greater than zero")
                quantity = None

    if draft.unit and tpl is not None and draft.unit not in tpl.allowed_units:
        allowed = ", ".join(tpl.allowed_units)
        error("UNIT_NOT_ALLOWED", "unit", f"{tpl.label} certificates are issued in {allowed}")

    if draft.importer_of_record and not any(p.fullmatch(draft.importer_of_record) for p in IMPORTER_OF_RECORD_PATTERNS):
        error(
            "IMPORTER_OF_RECORD_MALFORMED",
            "importer_of_record",
            "must be an importer of record number: NN-NNNNNNNXX, NNNNNN-NNNNN or NNN-NN-NNNN",
        )

    dates: dict[str, dt.date] = {}
    for name, text in (("issue_date", draft.issue_date), ("last_valid_date", draft.last_valid_date)):
        if text:
            try:
                dates[name] = parse_iso_date(text)
            except ValueError:
                error("DATE_MALFORMED", name, "must be a calendar date YYYY-MM-DD")
    issued, last_valid = dates.get("issue_date"), dates.get("last_valid_date")
    if issued and issued > today:
        error("ISSUE_DATE_IN_FUTURE", "issue_date", "a certificate cannot be issued after it is received")
    if issued and last_valid and last_valid < issued:
        error("VALIDITY_INVERTED", "last_valid_date", "is before the issue date")

    year_ok = EARLIEST_QUOTA_YEAR <= draft.quota_year <= LATEST_QUOTA_YEAR
    if not year_ok:
        error("QUOTA_YEAR_OUT_OF_RANGE", "quota_year", f"must be a calendar year from {EARLIEST_QUOTA_YEAR}")
    elif issued and last_valid and last_valid >= issued:
        # The validity window must overlap the quota year the certificate is charged to.
        first_day, last_day = quota_period(draft.quota_year)
        if issued > last_day or last_valid < first_day:
            error("QUOTA_YEAR_MISMATCH", "quota_year", "the certificate is not valid during its quota year")
    if year_ok and tpl is not None and tpl.annual_limits and draft.quota_year not in tpl.annual_limits:
        error("QUOTA_YEAR_NOT_OPEN", "quota_year", f"no {tpl.label} level is defined for this year")

    if any(f.severity is Severity.ERROR for f in findings):
        return None, findings
    assert quantity is not None and issued is not None and last_valid is not None
    as_transmitted = {name: getattr(draft, name) for name in CERTIFICATE_FIELDS}
    parsed: dict[str, Any] = {"htsus_number": htsus, "quantity": quantity, "issue_date": issued, "last_valid_date": last_valid}
    return Certificate(**{**as_transmitted, **parsed}), findings


def draft_of(certificate: Certificate) -> CertificateDraft:
    """The certificate's elements written as the wire carries them: quantities in their canonical form,
    dates YYYY-MM-DD, the HTSUS number as stored (digits only)."""
    return CertificateDraft(**{name: _written(getattr(certificate, name)) for name in CERTIFICATE_FIELDS})


def _written(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_quantity(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
