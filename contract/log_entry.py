"""The transparency log's entries: the exact bytes each leaf of the Merkle tree hashes.

An entry is the domain tag "ecert.v1.LogEntry" and a newline, then the canonical JSON (keys sorted, no
insignificant whitespace, UTF-8; contract/canonical.py) of an object with four members:

    {"at": "<ISO 8601 UTC instant>", "facts": {...}, "kind": "<KIND>", "subject": "<what it is about>"}

Kinds: RECEIPT (a transmission receipt, accepted or rejected), DECISION, ALLOCATION, REVERSAL (claims),
REFERENCE_DATA (a loaded reference table). Its leaf hash is SHA-256(0x00 || entry) (RFC 6962).

A receipt's entry is made from the signed receipt alone (`receipt_entry`), so whoever holds a receipt
can rebuild its entry and leaf hash offline, without asking customs for anything but the proof.
Pure: no storage.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from contract.canonical import canonical_json
from contract.merkle import leaf_hash
from contract.receipt import Receipt

ENTRY_TAG = b"ecert.v1.LogEntry\n"
RECEIPT = "RECEIPT"
# OFFER_ANSWERED / OFFER_LAPSED: a prorated offer turned into its grant (or none); they carry the
# claim's new decision like DECISION and ALLOCATION do.
CLAIM_KINDS = ("DECISION", "ALLOCATION", "REVERSAL", "OFFER_ANSWERED", "OFFER_LAPSED")


@dataclass(frozen=True)
class LogEntry:
    kind: str
    subject: str
    at: str  # ISO 8601 UTC instant, as written in the entry
    facts: dict[str, Any]

    def encode(self) -> bytes:
        return ENTRY_TAG + canonical_json({"at": self.at, "facts": self.facts, "kind": self.kind, "subject": self.subject})

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> LogEntry:
        """The entry these bytes encode; ValueError when they are not one (or not canonical)."""
        if not data.startswith(ENTRY_TAG):
            raise ValueError("not a log entry: the bytes do not start with the entry tag")
        try:
            body = json.loads(data[len(ENTRY_TAG):].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a log entry: {exc}") from None
        if not isinstance(body, dict) or set(body) != {"at", "facts", "kind", "subject"} or not isinstance(body["facts"], dict):
            raise ValueError("not a log entry: expected the members at, facts, kind and subject")
        entry = cls(str(body["kind"]), str(body["subject"]), str(body["at"]), body["facts"])
        if entry.encode() != data:
            raise ValueError("not a log entry: the bytes are not canonical")
        return entry


def claim_subject(entry_number: str, line_number: int, revision: int) -> str:
    """The subject of a claim revision's entries (DECISION, ALLOCATION, REVERSAL)."""
    return f"entry:{entry_number}/{line_number}#{revision}"


def instant_text(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).isoformat()


def entry(at: dt.datetime, kind: str, subject: str, facts: dict[str, Any]) -> LogEntry:
    return LogEntry(kind, subject, instant_text(at), facts)


def receipt_entry(receipt: Receipt) -> LogEntry:
    """The entry of a signed receipt: what it says, the SHA-256 of the bytes customs signed and of the
    signature itself. Accepted and rejected receipts alike."""
    return LogEntry(
        RECEIPT,
        f"receipt:{receipt.receipt_id}",
        instant_text(receipt.received_at),
        {
            "receipt_id": receipt.receipt_id,
            "message_id": receipt.message_id,
            "sender": receipt.sender,
            "outcome": receipt.outcome.value,
            "action": receipt.action,
            "certificate_number": receipt.certificate_number,
            "certificate_version": receipt.certificate_version,
            "digest_sha256": receipt.digest.hex(),
            "receipt_sha256": hashlib.sha256(receipt.signing_bytes()).hexdigest(),
            "receipt_signature_sha256": hashlib.sha256(receipt.signature).hexdigest(),
        },
    )
