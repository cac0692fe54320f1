"""Reference data versions: loaded into the database, cached in each process, audited on change."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError

from server.adapters.claim_repository import LevelRow
from server.adapters.database import Database
from server.adapters.reference_files import PACKAGED, PACKAGED_CONVERSION, parse_conversion_table, parse_reference_data
from server.domain.conversion import ConversionTable
from server.domain.errors import DomainError, ErrorKind, Finding
from server.domain.reference import ReferenceData
from server.service.clock import Clock
from server.service.transactions import run_in_transaction
from server.service.unit_of_work import UnitOfWork

KINDS = ("tpls", "conversion")


@dataclass(frozen=True)
class References:
    tpls: ReferenceData
    conversion: ConversionTable


@dataclass(frozen=True)
class LoadResult:
    kind: str
    version: str
    loaded: bool  # False when the identical version was already loaded
    levels: int


def _invalid(message: str) -> DomainError:
    return DomainError("REFERENCE_DATA_INVALID", message, ErrorKind.INVALID, [Finding("REFERENCE_DATA_INVALID", "document", message)])


def parse(document: dict[str, Any]) -> ReferenceData | ConversionTable:
    try:
        kind = document["kind"]
        if kind == "tpls":
            return parse_reference_data(document)
        if kind == "conversion":
            return parse_conversion_table(document)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise _invalid(f"not a valid reference document: {exc!r}") from exc
    raise _invalid(f"unknown reference kind {kind!r}; expected one of {', '.join(KINDS)}")


def _readable_conversion(text: str) -> bool:
    try:
        parse_conversion_table(json.loads(text))
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return False
    return True


class ReferenceStore:
    """The newest version of each reference table. Every process re-reads when another loads one."""

    RECHECK_SECONDS = 1.0

    def __init__(self, database: Database, clock: Clock):
        self.database = database
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: References | None = None
        self._cached_id = -1
        self._checked_at = 0.0

    def ensure_defaults(self) -> None:
        """A fresh database gets the packaged tables (TPLs; the conversion table by statistical line).

        A database whose newest conversion table is in the retired heading-level form (htsus_prefixes,
        which this code refuses to read) gets the packaged table too: otherwise no claim could be
        converted after the upgrade. The old version stays stored, and claims keep the version they used.
        """
        with UnitOfWork(self.database, write=False) as uow:
            missing = [kind for kind in KINDS if uow.references.latest(kind) is None]
            conversion = uow.references.latest("conversion")
        if conversion is not None and not _readable_conversion(conversion[1]):
            missing.append("conversion")
        for kind in missing:
            path = PACKAGED if kind == "tpls" else PACKAGED_CONVERSION
            self.load(path.read_text(encoding="utf-8"))

    def current(self) -> References:
        now = time.monotonic()
        if self._cached is not None and now - self._checked_at < self.RECHECK_SECONDS:
            return self._cached
        with self._lock:
            with UnitOfWork(self.database, write=False) as uow:
                newest = uow.references.newest_id()
                if self._cached is None or newest != self._cached_id:
                    tpls, conversion = uow.references.latest("tpls"), uow.references.latest("conversion")
                    if tpls is None or conversion is None:
                        raise DomainError("REFERENCE_DATA_MISSING", "no reference data loaded", ErrorKind.UNAVAILABLE)
                    self._cached = References(
                        parse_reference_data(json.loads(tpls[1])), parse_conversion_table(json.loads(conversion[1]))
                    )
                    self._cached_id = newest
            self._checked_at = now
            return self._cached

    def load(self, text: str) -> LoadResult:
        """Store a new version of a table. TPL versions also set each level's limit per year.

        Replicas starting together on one database may load the same defaults at once: the loser of
        that race finds the winner's identical version on its second try.
        """
        try:
            return self._load(text)
        except IntegrityError:
            return self._load(text)

    def _load(self, text: str) -> LoadResult:
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise _invalid(f"not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise _invalid("not a JSON object")
        parsed = parse(document)
        kind, version = document["kind"], str(document["version"])
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
        now = self.clock.now()

        def store(uow: UnitOfWork) -> LoadResult:
            existing = uow.references.find(kind, version)
            if existing is not None:
                if existing.digest == digest:
                    return LoadResult(kind, version, False, 0)
                raise DomainError(
                    "REFERENCE_VERSION_EXISTS",
                    f"{kind} version {version} is already loaded with other content; give the new table a new version",
                    ErrorKind.ALREADY_EXISTS,
                )
            levels = 0
            if isinstance(parsed, ReferenceData):
                levels = self._set_levels(uow, parsed)
            uow.references.add(kind, version, str(document.get("source", "")), json.dumps(document), digest, now)
            uow.audit.append(now, "REFERENCE_DATA", f"reference:{kind}:{version}", {"kind": kind, "version": version, "digest": digest})
            uow.commit()
            return LoadResult(kind, version, True, levels)

        # Deadlocks and serialization failures (a level locked by claims in flight) are retried.
        result = run_in_transaction(self.database, store)
        if not result.loaded:
            return result
        with self._lock:
            self._checked_at = 0.0
        return result

    @staticmethod
    def _set_levels(uow: UnitOfWork, reference: ReferenceData) -> int:
        count = 0
        # Every level of the table locked first, by TPL number (the order claims, refills and holds lock
        # them: no deadlock), its allotments folded back: each limit is judged on the exact balance.
        for tpl_number, year in sorted((t.tpl_number, y) for t in reference.tpls.values() for y in t.annual_limits):
            uow.allotments.fold(tpl_number, year)
        aggregates = {tpl.aggregate for tpl in reference.tpls.values() if tpl.aggregate}
        for tpl in sorted(reference.tpls.values(), key=lambda t: t.tpl_number in aggregates):
            for year, limit in tpl.annual_limits.items():
                # Conditional on what is charged when the write runs (claims may be charging the level
                # right now): a limit is never set below it, and nothing of this load is kept if one is.
                level = LevelRow(tpl.tpl_number, year, tpl.label, tpl.measure_unit, limit, Decimal(0), tpl.aggregate)
                if uow.quota.set_level(level) is None:
                    current = uow.quota.level(tpl.tpl_number, year)
                    raise DomainError(
                        "LIMIT_BELOW_CHARGED",
                        f"{tpl.label} {year}: the new limit {limit} is below what is already charged"
                        f" ({current.charged if current else '?'})",
                        ErrorKind.PRECONDITION,
                        metadata={"tpl_number": tpl.tpl_number, "quota_year": str(year)},
                    )
                count += 1
        return count

    def history(self) -> list[tuple[int, str, str, str, dt.datetime]]:
        with UnitOfWork(self.database, write=False) as uow:
            return uow.references.history()
