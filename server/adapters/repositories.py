"""Repositories: the only code that knows how certificates and transmissions sit in tables."""
from __future__ import annotations

import collections
import datetime as dt
import json
from decimal import Decimal

from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from server.adapters.orm import CertificateRow, CertificateVersionRow, TransmissionRow
from server.adapters.prepared import PreparedRepository, Statements
from server.domain.certificate import Certificate, Party
from server.domain.errors import Finding, Severity
from server.domain.receipt import Outcome, Receipt
from server.domain.records import CANCELED, MATCHED, UNMATCHED, ActivityEntry, StoredVersion, TransmissionRecord, activity_condition
from server.domain.transmission import CertificateHead, CertificateStatus


def receipt_to_json(receipt: Receipt) -> str:
    return json.dumps(
        {
            "receipt_id": receipt.receipt_id,
            "message_id": receipt.message_id,
            "sender": receipt.sender,
            "recipient": receipt.recipient,
            "digest": receipt.digest.hex(),
            "received_at": receipt.received_at.isoformat(),
            "outcome": receipt.outcome.value,
            "issues": [[f.code, f.field, f.description, f.severity.value] for f in receipt.issues],
            "action": receipt.action,
            "certificate_number": receipt.certificate_number,
            "certificate_version": receipt.certificate_version,
            "signing_key_id": receipt.signing_key_id,
        }
    )


def receipt_from_json(text: str, signature: bytes) -> Receipt:
    data = json.loads(text)
    return Receipt(
        receipt_id=data["receipt_id"],
        message_id=data["message_id"],
        sender=data["sender"],
        recipient=data["recipient"],
        digest=bytes.fromhex(data["digest"]),
        received_at=dt.datetime.fromisoformat(data["received_at"]),
        outcome=Outcome(data["outcome"]),
        issues=tuple(Finding(c, f, d, Severity(s)) for c, f, d, s in data["issues"]),
        action=data["action"],
        certificate_number=data["certificate_number"],
        certificate_version=data["certificate_version"],
        signing_key_id=data["signing_key_id"],
        signature=signature,
    )


def _head(row: CertificateRow) -> CertificateHead:
    return CertificateHead(
        issuing_country=row.issuing_country,
        certificate_number=row.certificate_number,
        version=row.current_version,
        status=CertificateStatus(row.status),
        tpl_number=row.tpl_number,
        quota_year=row.quota_year,
        unit=row.unit,
        quantity=row.quantity,
        used_quantity=row.used_quantity,
    )


def _certificate(row: CertificateVersionRow) -> Certificate:
    return Certificate(
        certificate_number=row.certificate_number,
        issuing_country=row.issuing_country,
        tpl_number=row.tpl_number,
        htsus_number=row.htsus_number,
        goods_description=row.goods_description,
        quantity=row.quantity,
        unit=row.unit,
        importer_of_record=row.importer_of_record,
        exporter=Party(row.exporter_name, row.exporter_address, row.exporter_tax_id),
        producer=Party(row.producer_name, row.producer_address, row.producer_tax_id),
        quota_year=row.quota_year,
        issue_date=row.issue_date,
        last_valid_date=row.last_valid_date,
        invoice_number=row.invoice_number,
    )


class TransmissionRepository:
    def __init__(self, session: Session):
        self.session = session

    def get(self, sender: str, message_id: str) -> TransmissionRecord | None:
        row = self.session.scalars(
            select(TransmissionRow).where(TransmissionRow.sender == sender, TransmissionRow.message_id == message_id)
        ).one_or_none()
        if row is None:
            return None
        return TransmissionRecord(row.sender, row.message_id, row.digest, receipt_from_json(row.receipt_json, row.receipt_signature))

    def add(
        self,
        *,
        receipt: Receipt,
        issuing_country: str,
        sent_at: dt.datetime,
        key_id: str,
        signed_bytes: bytes,
        signature: bytes,
    ) -> int:
        row = TransmissionRow(
            sender=receipt.sender,
            message_id=receipt.message_id,
            digest=receipt.digest,
            action=receipt.action,
            issuing_country=issuing_country,
            certificate_number=receipt.certificate_number,
            certificate_version=receipt.certificate_version,
            sent_at=sent_at,
            received_at=receipt.received_at,
            key_id=key_id,
            signed_bytes=signed_bytes,
            signature=signature,
            receipt_id=receipt.receipt_id,
            receipt_json=receipt_to_json(receipt),
            receipt_signature=receipt.signature,
        )
        self.session.add(row)
        self.session.flush()  # the unique (sender, message_id) constraint fires here, not at commit
        return row.id


_versions = CertificateVersionRow.__table__
_heads = CertificateRow.__table__
_VERSION_COLUMNS = (
    "certificate_number", "issuing_country", "tpl_number", "htsus_number", "goods_description", "quantity", "unit",
    "importer_of_record", "exporter_name", "exporter_address", "exporter_tax_id", "producer_name", "producer_address",
    "producer_tax_id", "quota_year", "issue_date", "last_valid_date", "invoice_number",
)
_VersionColumns = collections.namedtuple("_VersionColumns", _VERSION_COLUMNS)  # reads like a CertificateVersionRow
_HEAD_COLUMNS = ("current_version", "status", "tpl_number", "quota_year", "unit", "quantity", "used_quantity")
# What matching reads for every claim: the current version and the head that charges it, in one statement.
CERTIFICATE_STATEMENTS = Statements(
    on_file=select(*(_versions.c[n] for n in _VERSION_COLUMNS), *(_heads.c[n] for n in _HEAD_COLUMNS))
    .join(_versions, and_(
        _versions.c.issuing_country == _heads.c.issuing_country,
        _versions.c.certificate_number == _heads.c.certificate_number,
        _versions.c.version == _heads.c.current_version,
    ))
    .where(_heads.c.issuing_country == bindparam("country"), _heads.c.certificate_number == bindparam("number")),
)


class CertificateRepository(PreparedRepository):
    statements = CERTIFICATE_STATEMENTS

    def on_file(self, country: str, number: str) -> tuple[Certificate, CertificateHead] | None:
        """The current version of a certificate and its head (status, balance), read together."""
        row = self._first("on_file", {"country": country, "number": number})
        if row is None:
            return None
        certificate = _certificate(_VersionColumns(*row[: len(_VERSION_COLUMNS)]))  # type: ignore[arg-type]
        version, status, tpl_number, quota_year, unit, quantity, used = row[len(_VERSION_COLUMNS):]
        head = CertificateHead(country, number, version, CertificateStatus(status), tpl_number, quota_year, unit, quantity, used)
        return certificate, head

    def head(self, country: str, number: str, *, for_update: bool = False) -> CertificateHead | None:
        """The latest state; `for_update` locks the row until commit (PostgreSQL; SQLite's writer is
        already alone), so a decision taken on what was read still holds when it is written."""
        row = self.session.get(CertificateRow, (country, number), with_for_update=for_update or None)
        return None if row is None else _head(row)

    def add_version(
        self,
        *,
        certificate: Certificate,
        version: int,
        status: CertificateStatus,
        transmission_id: int,
        at: dt.datetime,
    ) -> None:
        c = certificate
        self.session.add(
            CertificateVersionRow(
                issuing_country=c.issuing_country,
                certificate_number=c.certificate_number,
                version=version,
                status=status.value,
                tpl_number=c.tpl_number,
                htsus_number=c.htsus_number,
                goods_description=c.goods_description,
                quantity=c.quantity,
                unit=c.unit,
                importer_of_record=c.importer_of_record,
                exporter_name=c.exporter.name,
                exporter_address=c.exporter.address,
                exporter_tax_id=c.exporter.tax_id,
                producer_name=c.producer.name,
                producer_address=c.producer.address,
                producer_tax_id=c.producer.tax_id,
                quota_year=c.quota_year,
                issue_date=c.issue_date,
                last_valid_date=c.last_valid_date,
                invoice_number=c.invoice_number,
                transmission_id=transmission_id,
            )
        )
        row = self.session.get(CertificateRow, (c.issuing_country, c.certificate_number))
        if row is None:
            row = CertificateRow(
                issuing_country=c.issuing_country,
                certificate_number=c.certificate_number,
                used_quantity=Decimal(0),
                matched_entries=0,
            )
            self.session.add(row)
        row.current_version = version
        row.status = status.value
        row.tpl_number = c.tpl_number
        row.quota_year = c.quota_year
        row.unit = c.unit
        row.importer_of_record = c.importer_of_record
        row.quantity = c.quantity
        row.updated_at = at
        self.session.flush()

    def version(self, country: str, number: str, version: int = 0) -> StoredVersion | None:
        head = self.session.get(CertificateRow, (country, number))
        if head is None:
            return None
        wanted = version or head.current_version
        result = self.session.execute(
            select(CertificateVersionRow, TransmissionRow)
            .join(TransmissionRow, TransmissionRow.id == CertificateVersionRow.transmission_id)
            .where(
                CertificateVersionRow.issuing_country == country,
                CertificateVersionRow.certificate_number == number,
                CertificateVersionRow.version == wanted,
            )
        ).one_or_none()
        if result is None:
            return None
        return self._stored(result[0], result[1], head)

    def _stored(self, row: CertificateVersionRow, transmission: TransmissionRow, head: CertificateRow) -> StoredVersion:
        current = row.version == head.current_version
        return StoredVersion(
            certificate=_certificate(row),
            version=row.version,
            status=CertificateStatus(row.status),
            # Usage is tracked on the certificate, not per version: older versions show what it had.
            remaining_quantity=(head.quantity - head.used_quantity) if current else row.quantity,
            received_at=transmission.received_at,
            message_id=transmission.message_id,
            receipt_id=transmission.receipt_id,
            digest=transmission.digest,
            sender=transmission.sender,
            current=current,
        )

    def list_latest(
        self,
        country: str,
        *,
        after: str,
        limit: int,
        status: CertificateStatus | None,
        quota_year: int,
        tpl_number: str,
    ) -> list[StoredVersion]:
        """Latest versions in certificate-number order, strictly after `after` (keyset pagination)."""
        query = (
            select(CertificateVersionRow, TransmissionRow, CertificateRow)
            .join(
                CertificateRow,
                and_(
                    CertificateRow.issuing_country == CertificateVersionRow.issuing_country,
                    CertificateRow.certificate_number == CertificateVersionRow.certificate_number,
                    CertificateRow.current_version == CertificateVersionRow.version,
                ),
            )
            .join(TransmissionRow, TransmissionRow.id == CertificateVersionRow.transmission_id)
            .where(CertificateRow.issuing_country == country, CertificateRow.certificate_number > after)
            .order_by(CertificateRow.certificate_number)
            .limit(limit)
        )
        if status is not None:
            query = query.where(CertificateRow.status == status.value)
        if quota_year:
            query = query.where(CertificateRow.quota_year == quota_year)
        if tpl_number:
            query = query.where(CertificateRow.tpl_number == tpl_number)
        return [self._stored(v, t, h) for v, t, h in self.session.execute(query)]

    def activity(self, country: str, *, condition: int, quota_year: int, after: str, limit: int) -> list[ActivityEntry]:
        query = (
            select(CertificateRow)
            .where(CertificateRow.issuing_country == country, CertificateRow.certificate_number > after)
            .order_by(CertificateRow.certificate_number)
            .limit(limit)
        )
        if condition == CANCELED:
            query = query.where(CertificateRow.status == CertificateStatus.CANCELED.value)
        else:
            query = query.where(CertificateRow.status == CertificateStatus.ACTIVE.value)
            if condition == MATCHED:
                query = query.where(CertificateRow.matched_entries > 0)
            elif condition == UNMATCHED:
                query = query.where(CertificateRow.matched_entries == 0)
        if quota_year:
            query = query.where(CertificateRow.quota_year == quota_year)
        return [
            ActivityEntry(
                certificate_number=row.certificate_number,
                condition=activity_condition(CertificateStatus(row.status), row.matched_entries),
                version=row.current_version,
                tpl_number=row.tpl_number,
                quota_year=row.quota_year,
                quantity=row.quantity,
                remaining_quantity=row.quantity - row.used_quantity,
                unit=row.unit,
                importer_of_record=row.importer_of_record,
            )
            for row in self.session.scalars(query)
        ]
