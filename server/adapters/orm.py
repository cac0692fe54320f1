"""Database rows (SQLAlchemy 2 typed mappings), kept apart from the domain's dataclasses.

Quantities are stored as integers of micro-units (1 unit = 1,000,000): exact on every engine,
and the atomic conditional updates that charge certificates and levels stay integer arithmetic.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MICRO = Decimal(1_000_000)


class ExactQuantity(TypeDecorator[Decimal]):
    """A Decimal with up to six fractional digits, stored as a BigInteger of micro-units."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: object) -> int | None:
        if value is None:
            return None
        scaled = value * MICRO
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than six decimal places")
        return int(scaled)

    def process_result_value(self, value: int | None, dialect: object) -> Decimal | None:
        return None if value is None else (Decimal(value) / MICRO).normalize()


def to_micro(value: Decimal) -> int:
    return int(value * MICRO)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC instants on every engine (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table_of(row: type[Base]) -> Table:
    """A mapped class's table, typed as the Table it is (`__table__` is declared as a FromClause)."""
    return cast(Table, row.__table__)


class TransmissionRow(Base):
    """One accepted transmission exactly as received, with the receipt customs gave for it."""

    __tablename__ = "transmissions"
    __table_args__ = (UniqueConstraint("sender", "message_id", name="uq_transmissions_sender_message"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sender: Mapped[str] = mapped_column(String(8))
    message_id: Mapped[str] = mapped_column(String(128))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    action: Mapped[str] = mapped_column(String(16))
    issuing_country: Mapped[str] = mapped_column(String(8))
    certificate_number: Mapped[str] = mapped_column(String(64))
    certificate_version: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    key_id: Mapped[str] = mapped_column(String(128))
    # The canonical bytes the partner signed, and its signature: the evidence, kept verbatim.
    signed_bytes: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    receipt_id: Mapped[str] = mapped_column(String(64), unique=True)
    # The signed receipt's canonical JSON and signature, returned unchanged to a retry.
    receipt_json: Mapped[str] = mapped_column(Text)
    receipt_signature: Mapped[bytes] = mapped_column(LargeBinary)


class CertificateVersionRow(Base):
    """Every version of every certificate, never overwritten."""

    __tablename__ = "certificate_versions"

    issuing_country: Mapped[str] = mapped_column(String(8), primary_key=True)
    certificate_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    tpl_number: Mapped[str] = mapped_column(String(16))
    htsus_number: Mapped[str] = mapped_column(String(16))
    goods_description: Mapped[str] = mapped_column(Text)
    quantity: Mapped[Decimal] = mapped_column(ExactQuantity())
    unit: Mapped[str] = mapped_column(String(8))
    importer_of_record: Mapped[str] = mapped_column(String(16))
    exporter_name: Mapped[str] = mapped_column(Text)
    exporter_address: Mapped[str] = mapped_column(Text)
    exporter_tax_id: Mapped[str] = mapped_column(Text)
    producer_name: Mapped[str] = mapped_column(Text)
    producer_address: Mapped[str] = mapped_column(Text)
    producer_tax_id: Mapped[str] = mapped_column(Text)
    quota_year: Mapped[int] = mapped_column(Integer)
    issue_date: Mapped[dt.date] = mapped_column(Date)
    last_valid_date: Mapped[dt.date] = mapped_column(Date)
    invoice_number: Mapped[str] = mapped_column(Text)
    transmission_id: Mapped[int] = mapped_column(ForeignKey("transmissions.id"))


class CertificateRow(Base):
    """The latest state of each certificate: what matching reads and charges."""

    __tablename__ = "certificates"
    __table_args__ = (
        Index("ix_certificates_listing", "issuing_country", "status", "quota_year", "tpl_number"),
        # The ledger's invariants, kept by the database whatever path writes (README, "Invariants").
        CheckConstraint("used_quantity >= 0", name="used_not_negative"),
        CheckConstraint("used_quantity <= quantity", name="used_within_quantity"),
        CheckConstraint("matched_entries >= 0", name="matched_not_negative"),
    )

    issuing_country: Mapped[str] = mapped_column(String(8), primary_key=True)
    certificate_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    current_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    tpl_number: Mapped[str] = mapped_column(String(16))
    quota_year: Mapped[int] = mapped_column(Integer)
    unit: Mapped[str] = mapped_column(String(8))
    importer_of_record: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[Decimal] = mapped_column(ExactQuantity())
    # Charged by entries (eCERT 2.0 decrement); never above `quantity`.
    used_quantity: Mapped[Decimal] = mapped_column(ExactQuantity(), default=Decimal(0))
    # Entries currently holding a charge on the certificate (activity report condition 10).
    matched_entries: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class ReferenceVersionRow(Base):
    """A loaded version of a reference table (TPLs and partners, or conversion factors), kept forever."""

    __tablename__ = "reference_versions"
    __table_args__ = (UniqueConstraint("kind", "version", name="uq_reference_versions_kind_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    document: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class QuotaLevelRow(Base):
    """One TPL's level for one quota year, with its running charged total (the ledger's sum)."""

    __tablename__ = "quota_levels"
    __table_args__ = (
        CheckConstraint('charged >= 0', name="charged_not_negative"),
        # Charges plus the room carved out into allotments never pass the limit, at any instant.
        CheckConstraint('charged + escrowed <= "limit"', name="charged_within_limit"),
        CheckConstraint("escrowed >= 0", name="escrowed_not_negative"),
    )

    tpl_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    quota_year: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(32))
    measure_unit: Mapped[str] = mapped_column(String(8))
    limit: Mapped[Decimal] = mapped_column(ExactQuantity())
    charged: Mapped[Decimal] = mapped_column(ExactQuantity(), default=Decimal(0))
    aggregate: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Since when the level is on hold near fill (its claims wait for the cutoff batch); NULL: claims that
    # fit below the critical share are decided at once.
    held_since: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The room and the charges of its allotments not folded back yet (their sum over QuotaAllotmentRow):
    # the level's charged total is `charged` plus what its allotments used (the quota_usage view).
    escrowed: Mapped[Decimal] = mapped_column(ExactQuantity(), default=Decimal(0), server_default="0")


class QuotaAllotmentRow(Base):
    """Room carved from an open level for one serving process (escrow): its claims charge this row, not
    the level's, so claims at different replicas share no lock (server/service/allotments.py)."""

    __tablename__ = "quota_allotments"
    __table_args__ = (
        CheckConstraint("room >= 0", name="room_not_negative"),
        CheckConstraint("used >= 0", name="used_not_negative"),
        ForeignKeyConstraint(["tpl_number", "quota_year"], ["quota_levels.tpl_number", "quota_levels.quota_year"]),
    )

    tpl_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    quota_year: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(40), primary_key=True)
    room: Mapped[Decimal] = mapped_column(ExactQuantity())  # carved and not charged yet
    used: Mapped[Decimal] = mapped_column(ExactQuantity())  # charged by its claims, not folded into the level yet
    touched_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class QuotaBatchRow(Base):
    """A daily cutoff batch: begun once (by whoever gets there first), then run in resumable steps that
    decide the claims pending before its cutoff, in presentation-time order (server/domain/batch.py)."""

    __tablename__ = "quota_batches"

    cutoff_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), primary_key=True)
    # Claims recorded after this belong to the next batch, whatever their presentation time.
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    completed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    decided: Mapped[int] = mapped_column(Integer, default=0)


class QuotaOpeningRow(Base):
    """A quota year's opening allocation: begun once (by whoever gets there first) with each TPL's
    rate, completed when the last queued claim of the year was decided at that rate."""

    __tablename__ = "quota_openings"

    quota_year: Mapped[int] = mapped_column(Integer, primary_key=True)
    allocated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    rates: Mapped[str] = mapped_column(Text, server_default="{}")  # JSON: TPL -> exact rate "numerator/denominator"
    completed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class QuotaLedgerRow(Base):
    """Every change to a level's charged quantity: charges, reversals, opening allocations."""

    __tablename__ = "quota_ledger"
    __table_args__ = (
        Index("ix_quota_ledger_level_at", "tpl_number", "quota_year", "at"),
        # A claim is charged (or allocated) once and reversed once per level: a second release of the
        # same claim is refused by the database, not only by the code that remembered to check.
        UniqueConstraint("claim_id", "tpl_number", "kind", name="uq_quota_ledger_claim_level_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tpl_number: Mapped[str] = mapped_column(String(16))
    quota_year: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    delta: Mapped[Decimal] = mapped_column(ExactQuantity())
    claim_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))


class EntryRow(Base):
    """Who an entry number belongs to: an entry number is never reused for another importer's entry.
    Its primary key decides between two first lines of one new entry filed at once."""

    __tablename__ = "entries"

    entry_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    importer_of_record: Mapped[str] = mapped_column(String(16))
    filer_code: Mapped[str] = mapped_column(String(8))


LIVE_HOLD = text("reversed_at IS NULL AND decision IN ('PREFERENTIAL', 'PARTIAL', 'QUEUED', 'PENDING', 'PRORATED_OFFER')")
PENDING = text("decision = 'PENDING'")
OFFERED = text("decision = 'PRORATED_OFFER'")


class ClaimRow(Base):
    """The decision on one entry summary line (a correction or a refund claim adds a revision)."""

    __tablename__ = "claims"
    __table_args__ = (
        UniqueConstraint("entry_number", "line_number", "revision", name="uq_claims_entry_line_revision"),
        Index("ix_claims_certificate", "issuing_country", "certificate_number"),
        # What the opening allocation reads: the year's queued claims in claim-id order, a chunk at a time.
        Index("ix_claims_queue", "quota_year", "decision", "claim_id"),
        # What the offers timer reads: open offers by deadline.
        Index("ix_claims_offers", "offer_expires_at", "claim_id", sqlite_where=OFFERED, postgresql_where=OFFERED),
        # What a cutoff batch reads: the pending claims in presentation-time order.
        Index("ix_claims_pending", "presentation_time", "claim_id", sqlite_where=PENDING, postgresql_where=PENDING),
        # One live claim that holds quantity per entry line: a correction reverses the old revision
        # before its new one is stored; a post-importation claim follows only an MFN or reversed one.
        Index(
            "uq_claims_live_hold", "entry_number", "line_number", unique=True,
            sqlite_where=LIVE_HOLD, postgresql_where=LIVE_HOLD,
        ),
    )

    claim_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    entry_number: Mapped[str] = mapped_column(String(16))
    line_number: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer)
    request_digest: Mapped[str] = mapped_column(String(64))
    filer_code: Mapped[str] = mapped_column(String(8))
    importer_of_record: Mapped[str] = mapped_column(String(16))
    issuing_country: Mapped[str] = mapped_column(String(8))
    certificate_number: Mapped[str] = mapped_column(String(64))
    certificate_version: Mapped[int] = mapped_column(Integer, default=0)
    tpl_number: Mapped[str] = mapped_column(String(16))
    quota_year: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(24))
    reasons: Mapped[str] = mapped_column(Text)  # JSON list
    mismatches: Mapped[str] = mapped_column(Text)  # JSON list of [field, claimed, transmitted]
    claimed_quantity: Mapped[Decimal] = mapped_column(ExactQuantity())
    unit: Mapped[str] = mapped_column(String(8))
    claimed_measure: Mapped[Decimal] = mapped_column(ExactQuantity())
    measure_unit: Mapped[str] = mapped_column(String(8))
    conversion_factor: Mapped[str] = mapped_column(String(24))
    factor_version: Mapped[str] = mapped_column(String(64))
    granted_quantity: Mapped[Decimal] = mapped_column(ExactQuantity())
    granted_measure: Mapped[Decimal] = mapped_column(ExactQuantity())
    certificate_remaining: Mapped[Decimal | None] = mapped_column(ExactQuantity(), nullable=True)
    level_remaining: Mapped[Decimal | None] = mapped_column(ExactQuantity(), nullable=True)
    aggregate_remaining: Mapped[Decimal | None] = mapped_column(ExactQuantity(), nullable=True)
    presentation_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    decided_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    post_importation: Mapped[bool] = mapped_column(default=False)
    proration_rate: Mapped[str] = mapped_column(String(24), default="")
    reversed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    reversal_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    certificate_receipt_id: Mapped[str] = mapped_column(String(64), default="")
    certificate_digest: Mapped[str] = mapped_column(String(64), default="")
    offer_expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The cutoff of the batch that decided a claim pending near fill.
    batch_cutoff: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class LogEntryRow(Base):
    """One entry of the transparency log (contract/log_entry.py), recorded by the transaction that
    made it: one INSERT, no row that other writers need. The sequencer gives it its index later."""

    __tablename__ = "log_entries"
    __table_args__ = (
        # The tree's order: each index once (NULL until the sequencer integrates the entry).
        UniqueConstraint("log_index", name="uq_log_entries_log_index"),
        Index("ix_log_entries_subject", "subject"),
        Index("ix_log_entries_leaf_hash", "leaf_hash"),
        # What the sequencer reads each tick: the entries not integrated yet, by id.
        Index("ix_log_entries_pending", "id", sqlite_where=text("log_index IS NULL"), postgresql_where=text("log_index IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(24))
    subject: Mapped[str] = mapped_column(String(128))
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    log_index: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class LogNodeRow(Base):
    """A complete subtree of the log's Merkle tree: (level, index) covers leaves [index * 2^level,
    (index + 1) * 2^level); level 0 holds the leaf hashes (server/domain/log_tree.py)."""

    __tablename__ = "log_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column("idx", BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogCheckpointRow(Base):
    """A signed checkpoint (C2SP tlog-checkpoint) of the tree at one size."""

    __tablename__ = "log_checkpoints"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class LogCosignatureRow(Base):
    """A witness's cosignature line over the checkpoint of one size, one per witness key name."""

    __tablename__ = "log_cosignatures"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    key_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    line: Mapped[str] = mapped_column(Text)
    added_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class AuditRecordRow(Base):
    """The hash chain that preceded the transparency log, kept as it was and no longer written:
    migration 0008 copied its records into log_entries, in chain order, and dropped its tip."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(24))
    subject: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
