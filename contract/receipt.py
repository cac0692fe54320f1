"""Receipts: customs' signed statement of what it received, from whom, when, and what it decided.

Its canonical bytes, its signature by customs' receipt key, and the offline check any sender can run
with customs' published public key."""
from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contract.canonical import RECEIPT_TAG, canonical_json, instant
from contract.findings import Finding
from contract.signing import Signer, signature_valid


class Outcome(enum.Enum):
    ACCEPTED = "ACCEPTED"
    ACCEPTED_WITH_WARNINGS = "ACCEPTED_WITH_WARNINGS"
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class Receipt:
    receipt_id: str
    message_id: str
    sender: str
    recipient: str
    digest: bytes
    received_at: dt.datetime
    outcome: Outcome
    issues: tuple[Finding, ...]
    action: str
    certificate_number: str
    certificate_version: int
    signing_key_id: str
    signature: bytes = field(default=b"", compare=False)
    # SHA-256 of the envelope signature this receipt judged. A relay that sends a genuine envelope
    # with a damaged signature gets a rejection naming that signature, which cannot be mistaken for
    # a judgement of the genuine one. Empty on receipts issued before the field existed.
    signature_sha256: bytes = b""
    # The nanoseconds of received_at as carried by a Timestamp read back from a receipt (a datetime
    # holds microseconds only). Signed as carried, so that a change below the microsecond is caught;
    # None: the datetime's own microseconds, as customs issues them.
    received_at_nanos: int | None = field(default=None, compare=False)

    def signing_bytes(self) -> bytes:
        seconds = int(self.received_at.timestamp())
        nanos = self.received_at.microsecond * 1000 if self.received_at_nanos is None else self.received_at_nanos
        body: dict[str, object] = {
            "receipt_id": self.receipt_id,
            "message_id": self.message_id,
            "sender": self.sender,
            "recipient": self.recipient,
            "digest_sha256": self.digest.hex(),
            "received_at": instant(seconds, nanos),
            "outcome": self.outcome.value,
            "issues": [
                {"code": f.code, "field": f.field, "description": f.description, "severity": f.severity.value}
                for f in self.issues
            ],
            "action": self.action,
            "certificate_number": self.certificate_number,
            "certificate_version": self.certificate_version,
            "signing_key_id": self.signing_key_id,
        }
        if self.signature_sha256:  # absent from older receipts, whose signed bytes stay as they were
            body["signature_sha256"] = self.signature_sha256.hex()
        return RECEIPT_TAG + canonical_json(body)

    def signed_by(self, signer: Signer) -> "Receipt":
        unsigned = replace(self, signing_key_id=signer.key_id, signature=b"")
        return replace(unsigned, signature=signer.sign(unsigned.signing_bytes()))

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        return signature_valid(public_key, self.signature, self.signing_bytes())

