"""The partner's utilization feed: what one claim entry of the transparency log says about the use of
a certificate, and the feed's cursor.

The feed is the log's claim entries (log_entry.CLAIM_KINDS) in log-index order, so a position in it is
a log index: the cursor of an event is its index in decimal, and a feed resumed from it starts with the
next integrated entry, whichever replica serves it and however often the service restarted.
Pure: no storage.
"""
from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from contract.log_entry import CLAIM_KINDS, LogEntry
from server.domain.quantity import format_quantity

_CERTIFICATE = re.compile(r"(?P<country>[^/]+)/(?P<number>.+)@(?P<version>[0-9]+)")
_SUBJECT = re.compile(r"entry:(?P<entry>[^/]+)/(?P<line>[0-9]+)#(?P<revision>[0-9]+)")
_CURSOR = re.compile(r"[0-9]{1,18}")
REVERSAL = "REVERSAL"


@dataclass(frozen=True)
class CertificateRef:
    issuing_country: str
    number: str
    version: int

    def text(self) -> str:
        return f"{self.issuing_country}/{self.number}@{self.version}"


@dataclass(frozen=True)
class UsageEvent:
    log_index: int
    leaf_hash: bytes
    entry: bytes  # the entry's bytes exactly as hashed
    kind: str
    at: str  # ISO 8601 UTC instant, as the entry says it
    claim_id: str
    entry_number: str
    line_number: int
    revision: int
    certificate: CertificateRef
    decision: str  # empty for a REVERSAL
    granted_quantity: str  # what the claim holds on the certificate after this entry; empty for a REVERSAL
    returned_quantity: str  # what a REVERSAL gave back; empty otherwise
    unit: str
    tpl: str

    @property
    def cursor(self) -> str:
        return cursor_of(self.log_index)


def cursor_of(log_index: int) -> str:
    return str(log_index)


def parse_cursor(text: str) -> int:
    """The log index a cursor names; -1 for the empty cursor (the start). ValueError when it is not one."""
    if text == "":
        return -1
    if not _CURSOR.fullmatch(text):
        raise ValueError("a cursor is the decimal log index of the last event received, or empty")
    return int(text)


def parse_certificate(text: Any) -> CertificateRef | None:
    """"<country>/<number>@<version>" as claim entries name a certificate; None when it is not that."""
    match = _CERTIFICATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    return CertificateRef(match["country"], match["number"], int(match["version"]))


def claim_id_of(entry: LogEntry) -> str:
    value = entry.facts.get("claim_id")
    return value if isinstance(value, str) else ""


def usage_event(
    log_index: int, leaf_hash: bytes, data: bytes, entry: LogEntry, *,
    countries: Collection[str] | None, known: CertificateRef | None = None, known_unit: str = "",
) -> UsageEvent | None:
    """The event a decoded claim entry makes, or None when it is not about a certificate of one of
    `countries` (None: any country). A REVERSAL entry recorded before reversals named their certificate
    gets it from `known` (the claim's row) and its unit from `known_unit`."""
    if entry.kind not in CLAIM_KINDS:
        return None
    facts = entry.facts
    certificate = parse_certificate(facts.get("certificate")) or known
    if certificate is None or (countries is not None and certificate.issuing_country not in countries):
        return None
    subject = _SUBJECT.fullmatch(entry.subject)
    decision = granted = returned = ""
    unit = str(facts.get("unit") or known_unit)
    if entry.kind == REVERSAL:
        returned = _canonical(facts.get("returned_quantity"))
    else:
        decision = str(facts.get("decision", ""))
        granted, unit = _quantity(facts.get("granted"), unit)
    return UsageEvent(
        log_index=log_index,
        leaf_hash=leaf_hash,
        entry=data,
        kind=entry.kind,
        at=entry.at,
        claim_id=claim_id_of(entry),
        entry_number=subject["entry"] if subject else "",
        line_number=int(subject["line"]) if subject else 0,
        revision=int(subject["revision"]) if subject else 0,
        certificate=certificate,
        decision=decision,
        granted_quantity=granted,
        returned_quantity=returned,
        unit=unit,
        tpl=str(facts.get("tpl", "")),
    )


def _quantity(text: Any, unit: str) -> tuple[str, str]:
    """"600 KG" -> ("600", "KG")."""
    if not isinstance(text, str) or not text:
        return "", unit
    quantity, _, named = text.partition(" ")
    return quantity, named or unit


def _canonical(text: Any) -> str:
    """A quantity as canonical text ("100", never "1E+2" as reversal entries may write it)."""
    if not isinstance(text, str) or not text:
        return ""
    try:
        return format_quantity(Decimal(text))
    except (InvalidOperation, ValueError):
        return text
