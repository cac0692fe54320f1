"""The tamper-evident decision log: each record carries the hash of the one before it.

Changing, removing or reordering any record breaks every hash after it, so `first_broken_link`
finds the first record that no longer fits the chain.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from server.domain.canonical import canonical_json

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: str  # ISO-8601 UTC instant
    kind: str  # DECISION, CHARGE, REVERSAL, ALLOCATION, REFERENCE_DATA
    subject: str  # what it is about, e.g. "entry:ABC-1234567-8/1"
    payload: str  # canonical JSON of the facts
    prev_hash: str
    hash: str


def link_hash(prev_hash: str, seq: int, at: str, kind: str, subject: str, payload: str) -> str:
    return hashlib.sha256(canonical_json([prev_hash, seq, at, kind, subject, payload])).hexdigest()


def first_broken_link(records: Iterable[AuditRecord]) -> tuple[int | None, int]:
    """(seq of the first record that does not verify, or None; number of records checked)."""
    expected_prev, expected_seq, checked = GENESIS, 1, 0
    for record in records:
        checked += 1
        if record.seq != expected_seq or record.prev_hash != expected_prev:
            return record.seq, checked
        if link_hash(record.prev_hash, record.seq, record.at, record.kind, record.subject, record.payload) != record.hash:
            return record.seq, checked
        expected_prev, expected_seq = record.hash, record.seq + 1
    return None, checked
