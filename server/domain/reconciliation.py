"""Balances recomputed from the records that justify them (issue 12, "balances provable from the ledger").

A level's `charged` is a running total; the quota ledger holds every change to it, and the live
claims hold every grant. A certificate's `used_quantity` and `matched_entries` are running totals of
what its live claims hold. Each stored total must equal its recomputation and lie within its bounds;
anything else is drift, named here with both values. Pure: the service gathers the sums.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from server.domain.quantity import format_quantity

LevelKey = tuple[str, int]  # (TPL number, quota year)
CertificateKey = tuple[str, str]  # (issuing country, certificate number)


@dataclass(frozen=True)
class LevelBalance:
    tpl_number: str
    quota_year: int
    limit: Decimal
    charged: Decimal
    aggregate: str | None  # the aggregate ceiling its members' grants also charge
    # Per-replica allotments (escrow): what the level's row escrows, and the room and unfolded charges
    # its allotment rows hold (`charged` above includes those charges).
    escrowed: Decimal = Decimal(0)
    allotted_room: Decimal = Decimal(0)
    allotted_used: Decimal = Decimal(0)


@dataclass(frozen=True)
class CertificateBalance:
    issuing_country: str
    certificate_number: str
    quantity: Decimal
    used_quantity: Decimal
    matched_entries: int


@dataclass(frozen=True)
class Drift:
    kind: str  # LEVEL_OUT_OF_BOUNDS, LEVEL_LEDGER_DRIFT, LEVEL_CLAIMS_DRIFT, LEVEL_ESCROW_DRIFT, CERTIFICATE_*, LINE_HELD_TWICE
    subject: str  # "level:9823.53.01/2026", "certificate:MX/MX26-00000001", "entry:B76-0000001-4/1"
    stored: str
    expected: str

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}: stored {self.stored}, expected {self.expected}"


def _q(value: Decimal) -> str:
    return format_quantity(value)


def level_drifts(
    levels: list[LevelBalance], ledger_sums: dict[LevelKey, Decimal], granted_by_tpl: dict[LevelKey, Decimal]
) -> list[Drift]:
    """`ledger_sums`: the quota ledger's deltas summed per level; `granted_by_tpl`: the granted measure
    of live claims summed per claim TPL (an aggregate level is charged what its members grant)."""
    granted: dict[LevelKey, Decimal] = defaultdict(Decimal)
    aggregate_of = {(lv.tpl_number, lv.quota_year): lv.aggregate for lv in levels}
    for (tpl, year), measure in granted_by_tpl.items():
        granted[(tpl, year)] += measure
        aggregate = aggregate_of.get((tpl, year))
        if aggregate:
            granted[(aggregate, year)] += measure
    drifts = []
    for level in levels:
        key = (level.tpl_number, level.quota_year)
        subject = f"level:{level.tpl_number}/{level.quota_year}"
        if not Decimal(0) <= level.charged + level.allotted_room <= level.limit:
            # Charges plus the room carved out for replicas never pass the limit.
            drifts.append(Drift("LEVEL_OUT_OF_BOUNDS", subject, _q(level.charged + level.allotted_room), f"0..{_q(level.limit)}"))
        if level.escrowed != level.allotted_room + level.allotted_used:
            drifts.append(Drift("LEVEL_ESCROW_DRIFT", subject, _q(level.escrowed), _q(level.allotted_room + level.allotted_used)))
        if level.charged != ledger_sums.get(key, Decimal(0)):
            drifts.append(Drift("LEVEL_LEDGER_DRIFT", subject, _q(level.charged), _q(ledger_sums.get(key, Decimal(0)))))
        if level.charged != granted.get(key, Decimal(0)):
            drifts.append(Drift("LEVEL_CLAIMS_DRIFT", subject, _q(level.charged), _q(granted.get(key, Decimal(0)))))
    known = {(lv.tpl_number, lv.quota_year) for lv in levels}
    for key in sorted(set(ledger_sums) - known):
        if ledger_sums[key]:
            drifts.append(Drift("LEVEL_LEDGER_DRIFT", f"level:{key[0]}/{key[1]}", "no level", _q(ledger_sums[key])))
    return drifts


def certificate_drifts(
    certificates: list[CertificateBalance], held: dict[CertificateKey, tuple[Decimal, int]]
) -> list[Drift]:
    """`held`: per certificate, what its live claims hold (a grant, or all a queued claim asked) and
    how many of them hold anything."""
    drifts = []
    for certificate in certificates:
        key = (certificate.issuing_country, certificate.certificate_number)
        subject = f"certificate:{key[0]}/{key[1]}"
        quantity, entries = held.get(key, (Decimal(0), 0))
        if not Decimal(0) <= certificate.used_quantity <= certificate.quantity:
            drifts.append(Drift("CERTIFICATE_OUT_OF_BOUNDS", subject, _q(certificate.used_quantity), f"0..{_q(certificate.quantity)}"))
        if certificate.used_quantity != quantity:
            drifts.append(Drift("CERTIFICATE_USE_DRIFT", subject, _q(certificate.used_quantity), _q(quantity)))
        if certificate.matched_entries != entries:
            drifts.append(Drift("CERTIFICATE_ENTRIES_DRIFT", subject, str(certificate.matched_entries), str(entries)))
    return drifts


def line_drifts(held_lines: dict[tuple[str, int], int]) -> list[Drift]:
    """`held_lines`: entry lines with more than one live claim that holds quantity, and how many."""
    return [
        Drift("LINE_HELD_TWICE", f"entry:{entry}/{line}", str(count), "1")
        for (entry, line), count in sorted(held_lines.items()) if count > 1
    ]
