"""Bulk loading of stored certificates and claims straight through SQL (SQLite), for the growth and
opening-day measurements: a million rows through the API would take hours, and the point is what a
claim costs when the tables are big, not how they got big.

Rows are written in the formats SQLAlchemy itself writes (server/adapters/orm.py): quantities as
integer micro-units, instants as UTC 'YYYY-MM-DD HH:MM:SS.ffffff', dates as 'YYYY-MM-DD', HTSUS numbers
as digits only (as the service stores them).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterator

from bench.workload import EXPORTER, IMPORTER, PRODUCER, Good, certificate_number
from contract.entry_number import make_entry_number
from server.adapters.orm import CertificateVersionRow, ClaimRow, TransmissionRow

MICRO = 1_000_000
CHUNK = 20_000


def _instant(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _insert(row: type) -> str:
    """INSERT naming every column in the mapping's order (the tuples below follow it)."""
    columns = [c.name for c in row.__table__.columns]  # type: ignore[attr-defined]  # row is a SQLAlchemy mapped class
    return f"INSERT INTO {row.__tablename__} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # type: ignore[attr-defined]  # ORM class


def _chunks(total: int) -> Iterator[range]:
    for start in range(0, total, CHUNK):
        yield range(start, min(total, start + CHUNK))


def load_certificates(
    path: str, good: Good, *, first: int, count: int, quantity: int, quota_year: int, at: dt.datetime
) -> None:
    """`count` ACTIVE certificates numbered from `first`, each with its version and transmission."""
    connection = sqlite3.connect(path)
    # Received a day before `at`: a claim counts only a transmission on file at its presentation time,
    # and the runs present their claims from `at` on (an hour earlier at most).
    stamp = _instant(at - dt.timedelta(days=1))
    try:
        connection.execute("PRAGMA synchronous=OFF")  # a loader: durability comes from the final commit
        next_id = connection.execute("SELECT coalesce(max(id), 0) + 1 FROM transmissions").fetchone()[0]
        for chunk in _chunks(count):
            transmissions, versions, heads = [], [], []
            for i in chunk:
                number = certificate_number(quota_year, first + i)
                row_id = next_id + i
                digest = hashlib.sha256(number.encode()).digest()
                transmissions.append((
                    row_id, "MX", f"bulk-{quota_year}-{first + i}", digest, "CREATE", "MX", number, 1, stamp, stamp,
                    "bulk", b"", b"", f"R-bulk-{quota_year}-{first + i}", "{}", b"",
                ))
                versions.append((
                    "MX", number, 1, "ACTIVE", good.tpl_number, good.htsus_number.replace(".", ""), good.description, quantity * MICRO,
                    good.unit, IMPORTER, *EXPORTER, *PRODUCER, quota_year, f"{quota_year - 1}-12-01", f"{quota_year}-12-31",
                    "INV-BULK", row_id,
                ))
                heads.append(("MX", number, 1, "ACTIVE", good.tpl_number, quota_year, good.unit, IMPORTER, quantity * MICRO, 0, 0, stamp))
            connection.executemany(_insert(TransmissionRow), transmissions)
            connection.executemany(_insert(CertificateVersionRow), versions)
            connection.executemany(
                "INSERT INTO certificates (issuing_country, certificate_number, current_version, status, tpl_number,"
                " quota_year, unit, importer_of_record, quantity, used_quantity, matched_entries, updated_at)"
                f" VALUES ({','.join('?' * 12)})",
                heads,
            )
        connection.commit()
    finally:
        connection.close()


def load_claims(path: str, good: Good, *, count: int, certificates: tuple[int, int], quota_year: int, at: dt.datetime, filer: str) -> None:
    """`count` decided (PREFERENTIAL) claims of one unit each, spread over the given certificates;
    entry numbers from filer `filer`, so that live claims (another filer) never collide with them."""
    first, how_many = certificates
    connection = sqlite3.connect(path)
    stamp = _instant(at)
    try:
        connection.execute("PRAGMA synchronous=OFF")
        for chunk in _chunks(count):
            rows = []
            for i in chunk:
                number = certificate_number(quota_year, first + i % how_many)
                rows.append((
                    f"C-bulk-{i:012d}", make_entry_number(filer, i + 1), 1, 1, hashlib.sha256(str(i).encode()).hexdigest(),
                    filer, IMPORTER, "MX", number, 1, good.tpl_number, quota_year, "PREFERENTIAL", "[]", "[]",
                    1 * MICRO, good.unit, 6 * MICRO, "SME", "6.0", "bulk", 1 * MICRO, 6 * MICRO, None, None, None,
                    stamp, stamp, 0, "", None, None, f"R-bulk-{quota_year}-{first + i % how_many}", "", None, None,
                ))
            connection.executemany(_insert(ClaimRow), rows)
        connection.commit()
    finally:
        connection.close()
