"""Repositories: the only code that knows how certificates and transmissions sit in tables."""
from __future__ import annotations

import collections
import datetime as dt
import json
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, insert, select, update

from contract.certificate import CERTIFICATE_FIELDS, PARTY_FIELDS, PARTY_ROLES, SCALAR_FIELDS
from contract.receipt import Outcome, Receipt
from server.adapters.orm import CertificateRow, CertificateVersionRow, TransmissionRow, table_of
from server.adapters.prepared import PreparedRepository, Read, Statements
from server.domain.certificate import Certificate, Party
from server.domain.errors import Finding, Severity
from server.domain.records import (
    CANCELED,
    MATCHED,
    UNMATCHED,
    ActivityEntry,
    SignedEvidence,
    StoredVersion,
    TransmissionRecord,
    VersionOnFile,
    activity_condition,
)
from server.domain.transmission import CertificateHead, CertificateStatus


def receipt_to_json(receipt: Receipt) -> str:
    data: dict[str, object] = {
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
    if receipt.signature_sha256:
        data["signature_sha256"] = receipt.signature_sha256.hex()
    return json.dumps(data)


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
        signature_sha256=bytes.fromhex(data.get("signature_sha256", "")),
    )


def _certificate(row: CertificateVersionRow) -> Certificate:
    """The certificate a stored version holds: the contract's field table names each column (a party's
    columns are its role, then its own field: exporter_name)."""
    values: dict[str, Any] = {name: getattr(row, name) for name in SCALAR_FIELDS}
    values.update({role: Party(*(getattr(row, f"{role}_{name}") for name in PARTY_FIELDS)) for role in PARTY_ROLES})
    return Certificate(**values)


def _certificate_values(c: Certificate) -> dict[str, object]:
    """A certificate's columns, by the same table."""
    return {name: getattr(c, name) for name in SCALAR_FIELDS} | {
        f"{role}_{name}": getattr(getattr(c, role), name) for role in PARTY_ROLES for name in PARTY_FIELDS
    }


_transmissions = table_of(TransmissionRow)
_versions = table_of(CertificateVersionRow)
_heads = table_of(CertificateRow)

# The submit path's statements: Prepared (server/adapters/prepared.py), like the claim path's.
_TRANSMISSION_COLUMNS = (
    "sender", "message_id", "digest", "action", "issuing_country", "certificate_number", "certificate_version", "sent_at",
    "received_at", "key_id", "signed_bytes", "signature", "receipt_id", "receipt_json", "receipt_signature",
)
TRANSMISSION_STATEMENTS = Statements(
    by_message=select(_transmissions.c.digest, _transmissions.c.receipt_json, _transmissions.c.receipt_signature).where(
        _transmissions.c.sender == bindparam("sender"), _transmissions.c.message_id == bindparam("message_id")
    ),
    insert=(insert(_transmissions).returning(_transmissions.c.id), _TRANSMISSION_COLUMNS),
)


class TransmissionRepository(PreparedRepository):
    statements = TRANSMISSION_STATEMENTS

    def get(self, sender: str, message_id: str) -> TransmissionRecord | None:
        row = self._first("by_message", {"sender": sender, "message_id": message_id})
        if row is None:
            return None
        digest, receipt_json, receipt_signature = row
        return TransmissionRecord(sender, message_id, digest, receipt_from_json(receipt_json, receipt_signature))

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
        # The unique (sender, message_id) constraint fires here, not at commit.
        row = self._first(
            "insert",
            {
                "sender": receipt.sender,
                "message_id": receipt.message_id,
                "digest": receipt.digest,
                "action": receipt.action,
                "issuing_country": issuing_country,
                "certificate_number": receipt.certificate_number,
                "certificate_version": receipt.certificate_version,
                "sent_at": sent_at,
                "received_at": receipt.received_at,
                "key_id": key_id,
                "signed_bytes": signed_bytes,
                "signature": signature,
                "receipt_id": receipt.receipt_id,
                "receipt_json": receipt_to_json(receipt),
                "receipt_signature": receipt.signature,
            },
        )
        assert row is not None
        return int(row[0])


# A stored version's certificate columns, in the contract's field order (a party: one column per field).
_VERSION_COLUMNS = tuple(
    column
    for name in CERTIFICATE_FIELDS
    for column in ((f"{name}_{field}" for field in PARTY_FIELDS) if name in PARTY_ROLES else (name,))
)
# Reads like a CertificateVersionRow. (mypy wants a literal field list; the columns' one source is the tuple.)
_VersionColumns = collections.namedtuple("_VersionColumns", _VERSION_COLUMNS)  # type: ignore[misc]  # mypy wants a literal field list (see above)
_HEAD_COLUMNS = ("current_version", "status", "tpl_number", "quota_year", "unit", "quantity", "used_quantity")
_STORED_COLUMNS = (
    *(_versions.c[n] for n in _VERSION_COLUMNS), _versions.c.version, _versions.c.status,
    _transmissions.c.received_at, _transmissions.c.message_id, _transmissions.c.receipt_id, _transmissions.c.digest,
    _transmissions.c.sender, _heads.c.current_version, _heads.c.quantity, _heads.c.used_quantity,
)
_certificate_key = (_heads.c.issuing_country == bindparam("country"), _heads.c.certificate_number == bindparam("number"))
# Versions with their transmission and their certificate's head: what GetCertificate and ListCertificates answer.
_stored = (
    select(*_STORED_COLUMNS)
    .select_from(_heads)
    .join(_versions, and_(
        _versions.c.issuing_country == _heads.c.issuing_country,
        _versions.c.certificate_number == _heads.c.certificate_number,
    ))
    .join(_transmissions, _transmissions.c.id == _versions.c.transmission_id)
)
_head_select = select(*(_heads.c[n] for n in _HEAD_COLUMNS)).where(*_certificate_key)
_NEW_HEAD_COLUMNS = ("current_version", "status", "tpl_number", "quota_year", "unit", "importer_of_record", "quantity", "updated_at")
CERTIFICATE_STATEMENTS = Statements(
    # What matching reads for every claim: the current version and the head that charges it, in one statement.
    on_file=select(*(_versions.c[n] for n in _VERSION_COLUMNS), *(_heads.c[n] for n in _HEAD_COLUMNS))
    .join(_versions, and_(
        _versions.c.issuing_country == _heads.c.issuing_country,
        _versions.c.certificate_number == _heads.c.certificate_number,
        _versions.c.version == _heads.c.current_version,
    ))
    .where(*_certificate_key),
    # The version customs had received at a claim's presentation time (19 CFR 132.12 / the eCERT notice:
    # the transmission must be on file upon entry summary), with the receipt and digest it came with and
    # the certificate's head (its balance and the version a charge is conditioned on).
    on_file_at=select(
        *(_versions.c[n] for n in _VERSION_COLUMNS), _versions.c.version, _versions.c.status,
        _transmissions.c.receipt_id, _transmissions.c.digest, *(_heads.c[n] for n in _HEAD_COLUMNS),
    )
    .select_from(_heads)
    .join(_versions, and_(
        _versions.c.issuing_country == _heads.c.issuing_country,
        _versions.c.certificate_number == _heads.c.certificate_number,
    ))
    .join(_transmissions, _transmissions.c.id == _versions.c.transmission_id)
    .where(*_certificate_key, _transmissions.c.received_at <= bindparam("presented", type_=_transmissions.c.received_at.type))
    .order_by(_versions.c.version.desc())
    .limit(1),
    head=_head_select,
    # Rendered only by dialects that lock rows (PostgreSQL); SQLite's single writer is already alone.
    head_for_update=_head_select.with_for_update(),
    stored_version=_stored.where(*_certificate_key, _versions.c.version == bindparam("version")),
    stored_latest=_stored.where(*_certificate_key, _versions.c.version == _heads.c.current_version),
    evidence=select(_transmissions.c.signed_bytes, _transmissions.c.signature, _transmissions.c.key_id)
    .select_from(_versions)
    .join(_transmissions, _transmissions.c.id == _versions.c.transmission_id)
    .where(
        _versions.c.issuing_country == bindparam("country"),
        _versions.c.certificate_number == bindparam("number"),
        _versions.c.version == bindparam("version"),
    ),
    insert_version=(
        insert(_versions),
        (*_VERSION_COLUMNS, "version", "status", "transmission_id"),
    ),
    insert_head=(
        insert(_heads),
        ("issuing_country", "certificate_number", *_NEW_HEAD_COLUMNS, "used_quantity", "matched_entries"),
    ),
    # The head follows the new version; usage (used_quantity, matched_entries) stays with the certificate.
    update_head=(update(_heads).where(*_certificate_key), _NEW_HEAD_COLUMNS),
)


def _head(country: str, number: str, row: tuple) -> CertificateHead:  # type: ignore[type-arg]  # a row of the head query's columns, of mixed types
    """A CertificateHead from a row of _HEAD_COLUMNS."""
    version, status, tpl_number, quota_year, unit, quantity, used = row
    return CertificateHead(country, number, version, CertificateStatus(status), tpl_number, quota_year, unit, quantity, used)


def _stored_version(row: tuple[object, ...]) -> StoredVersion:
    """A StoredVersion from a row of _STORED_COLUMNS."""
    certificate = _certificate(_VersionColumns(*row[: len(_VERSION_COLUMNS)]))  # type: ignore[arg-type]  # row values are typed object
    (version, status, received_at, message_id, receipt_id, digest, sender,
     current_version, head_quantity, used_quantity) = row[len(_VERSION_COLUMNS):]
    current = version == current_version
    return StoredVersion(
        certificate=certificate,
        version=version,  # type: ignore[arg-type]  # row values are object; the column order gives their types
        status=CertificateStatus(status),
        # Usage is tracked on the certificate, not per version: older versions show what it had.
        remaining_quantity=(head_quantity - used_quantity) if current else certificate.quantity,  # type: ignore[operator]  # Decimals, typed object
        received_at=received_at,  # type: ignore[arg-type]  # row values are object; the column order gives their types
        message_id=message_id,  # type: ignore[arg-type]  # row values are object; the column order gives their types
        receipt_id=receipt_id,  # type: ignore[arg-type]  # row values are object; the column order gives their types
        digest=digest,  # type: ignore[arg-type]  # row values are object; the column order gives their types
        sender=sender,  # type: ignore[arg-type]  # row values are object; the column order gives their types
        current=current,
    )


class CertificateRepository(PreparedRepository):
    statements = CERTIFICATE_STATEMENTS

    def on_file(self, country: str, number: str) -> tuple[Certificate, CertificateHead] | None:
        """The current version of a certificate and its head (status, balance), read together."""
        row = self._first("on_file", {"country": country, "number": number})
        if row is None:
            return None
        certificate = _certificate(_VersionColumns(*row[: len(_VERSION_COLUMNS)]))  # type: ignore[arg-type]  # row values are typed object
        return certificate, _head(country, number, row[len(_VERSION_COLUMNS):])

    def on_file_at(self, country: str, number: str, presented: dt.datetime) -> VersionOnFile | None:
        """The newest version received no later than `presented`, with its receipt and the head."""
        return self.on_file_at_read(country, number, presented).answer

    def on_file_at_read(self, country: str, number: str, presented: dt.datetime) -> Read[VersionOnFile | None]:
        """`on_file_at`, as a read to run with others (server/adapters/prepared.py, read_together)."""

        def answer(rows: list[tuple[Any, ...]]) -> VersionOnFile | None:
            if not rows:
                return None
            row = rows[0]
            certificate = _certificate(_VersionColumns(*row[: len(_VERSION_COLUMNS)]))  # type: ignore[arg-type]  # row values are typed object
            version, status, receipt_id, digest = row[len(_VERSION_COLUMNS): len(_VERSION_COLUMNS) + 4]
            head = _head(country, number, row[len(_VERSION_COLUMNS) + 4:])
            return VersionOnFile(certificate, version, CertificateStatus(status), receipt_id, bytes(digest).hex(), head)

        return self._read("on_file_at", {"country": country, "number": number, "presented": presented}, answer)

    def head(self, country: str, number: str, *, for_update: bool = False) -> CertificateHead | None:
        """The latest state; `for_update` locks the row until commit (PostgreSQL; SQLite's writer is
        already alone), so a decision taken on what was read still holds when it is written."""
        row = self._first("head_for_update" if for_update else "head", {"country": country, "number": number})
        return None if row is None else _head(country, number, row)

    def add_version(
        self,
        *,
        certificate: Certificate,
        version: int,
        status: CertificateStatus,
        transmission_id: int,
        at: dt.datetime,
        head: CertificateHead | None,
    ) -> None:
        """Store `version` and make it the head's current one. `head` is the head as read (locked) in
        this transaction: None inserts it (a twin inserting it too fails on the primary key)."""
        c = certificate
        values = {
            **_certificate_values(c),
            "version": version,
            "status": status.value,
            "transmission_id": transmission_id,
        }
        self._execute("insert_version", values)
        head_values = {
            "country": c.issuing_country,
            "number": c.certificate_number,
            "current_version": version,
            "status": status.value,
            "tpl_number": c.tpl_number,
            "quota_year": c.quota_year,
            "unit": c.unit,
            "importer_of_record": c.importer_of_record,
            "quantity": c.quantity,
            "updated_at": at,
        }
        if head is None:
            self._execute("insert_head", head_values | {
                "issuing_country": c.issuing_country,
                "certificate_number": c.certificate_number,
                "used_quantity": Decimal(0),
                "matched_entries": 0,
            })
        elif self._execute("update_head", head_values) != 1:
            raise LookupError(f"certificate {c.issuing_country}/{c.certificate_number} has no head to update")

    def version(self, country: str, number: str, version: int = 0) -> StoredVersion | None:
        """One version (0: the current one) as stored, with its transmission."""
        key = {"country": country, "number": number}
        row = self._first("stored_version", key | {"version": version}) if version else self._first("stored_latest", key)
        return None if row is None else _stored_version(row)

    def evidence(self, country: str, number: str, version: int) -> SignedEvidence | None:
        """The signed bytes, signature and key id of the transmission that made a version."""
        row = self._first("evidence", {"country": country, "number": number, "version": version})
        return None if row is None else SignedEvidence(bytes(row[0]), bytes(row[1]), row[2])

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
            _stored.where(
                _versions.c.version == _heads.c.current_version,
                _heads.c.issuing_country == country,
                _heads.c.certificate_number > after,
            )
            .order_by(_heads.c.certificate_number)
            .limit(limit)
        )
        if status is not None:
            query = query.where(_heads.c.status == status.value)
        if quota_year:
            query = query.where(_heads.c.quota_year == quota_year)
        if tpl_number:
            query = query.where(_heads.c.tpl_number == tpl_number)
        return [_stored_version(tuple(row)) for row in self.connection.execute(query)]

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
