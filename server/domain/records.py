"""Read models of what is stored: a certificate version with its provenance, a receipted transmission."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from contract.receipt import Receipt
from server.domain.certificate import Certificate
from server.domain.transmission import CertificateHead, CertificateStatus


@dataclass(frozen=True)
class SignedEvidence:
    """What a partner signed for one version, exactly as received."""

    signed_bytes: bytes
    signature: bytes
    key_id: str


@dataclass(frozen=True)
class StoredVersion:
    certificate: Certificate
    version: int
    status: CertificateStatus
    remaining_quantity: Decimal
    received_at: dt.datetime
    message_id: str
    receipt_id: str
    digest: bytes
    sender: str
    current: bool
    evidence: SignedEvidence | None = None  # read only where asked for (GetCertificate)


@dataclass(frozen=True)
class VersionOnFile:
    """The version of a certificate customs had on file at an instant, and what proves it."""

    certificate: Certificate
    version: int
    status: CertificateStatus
    receipt_id: str  # customs' receipt for the transmission that made this version
    digest: str  # hex SHA-256 of the canonical bytes of that transmission
    head: CertificateHead  # the certificate as it stands now (balance, current version)


@dataclass(frozen=True)
class TransmissionRecord:
    sender: str
    message_id: str
    digest: bytes
    receipt: Receipt


@dataclass(frozen=True)
class ActivityEntry:
    certificate_number: str
    condition: int  # eCERT condition code: 10 matched, 11 unmatched, 12 canceled
    version: int
    tpl_number: str
    quota_year: int
    quantity: Decimal
    remaining_quantity: Decimal
    unit: str
    importer_of_record: str


# eCERT activity-report condition codes.
MATCHED, UNMATCHED, CANCELED = 10, 11, 12


def activity_condition(status: CertificateStatus, matched_entries: int) -> int:
    if status is CertificateStatus.CANCELED:
        return CANCELED
    return MATCHED if matched_entries > 0 else UNMATCHED


# Decisions of claims that wait for a batch, their certificate quantity reserved (server.domain.claims.Decision values).
WAITING = ("QUEUED", "PENDING")


@dataclass(frozen=True)
class ClaimRecord:
    """A decided claim as stored: everything needed to answer, replay or audit it."""

    claim_id: str
    entry_number: str
    line_number: int
    revision: int
    request_digest: str
    filer_code: str
    importer_of_record: str
    issuing_country: str
    certificate_number: str
    certificate_version: int
    tpl_number: str
    quota_year: int
    decision: str  # a server.domain.claims.Decision value
    reasons: tuple[str, ...]
    mismatches: tuple[tuple[str, str, str], ...]  # (field, claimed, transmitted)
    claimed_quantity: Decimal
    unit: str
    claimed_measure: Decimal
    measure_unit: str
    conversion_factor: str
    factor_version: str
    granted_quantity: Decimal
    granted_measure: Decimal
    certificate_remaining: Decimal | None
    level_remaining: Decimal | None
    aggregate_remaining: Decimal | None
    presentation_time: dt.datetime
    decided_at: dt.datetime
    post_importation: bool
    proration_rate: str
    reversed_at: dt.datetime | None
    reversal_kind: str | None
    # The evidence the decision relied on: customs' receipt id and the transmission's digest (hex) of
    # the certificate version on file at the presentation time; empty when none was.
    certificate_receipt_id: str = ""
    certificate_digest: str = ""
    # A prorated offer's deadline: unanswered by then, it lapses and its share returns to the level.
    offer_expires_at: dt.datetime | None = None
    # The cutoff of the batch that decided a claim that was pending near fill.
    batch_cutoff: dt.datetime | None = None

    @property
    def held_on_certificate(self) -> Decimal:
        """What this claim takes from its certificate: the grant, or all it asked while it waits for the
        opening allocation or a cutoff batch (queued and pending claims reserve their quantity). A
        reversal gives exactly this back."""
        return self.claimed_quantity if self.decision in WAITING else self.granted_quantity

    @property
    def mfn_quantity(self) -> Decimal:
        return self.claimed_quantity - self.granted_quantity

    @property
    def mfn_measure(self) -> Decimal:
        return self.claimed_measure - self.granted_measure
