"""Claims, quota levels with their ledger, the audit chain, reference versions: rows <-> domain."""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import BigInteger, bindparam, func, insert, select, type_coerce, update

from server.adapters.orm import (
    table_of,
    CertificateRow,
    ClaimRow,
    EntryRow,
    ExactQuantity,
    LogEntryRow,
    QuotaAllotmentRow,
    QuotaLedgerRow,
    QuotaBatchRow,
    QuotaLevelRow,
    QuotaOpeningRow,
    ReferenceVersionRow,
)
from server.adapters.prepared import PreparedRepository, Read, Statements
from contract.log_entry import LogEntry, entry as log_entry
from contract.merkle import leaf_hash
from server.domain.records import ClaimRecord


@dataclasses.dataclass(frozen=True)
class Opening:
    """A quota year's opening allocation: when it began, each TPL's rate, when it completed."""

    quota_year: int
    allocated_at: dt.datetime
    rates: dict[str, Fraction]
    completed_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Batch:
    """A daily cutoff batch: it decides the claims pending before `cutoff_at` that were recorded by
    `started_at`, in presentation-time order."""

    cutoff_at: dt.datetime
    started_at: dt.datetime
    completed_at: dt.datetime | None
    decided: int


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    """One row of the quota ledger: a change of a level's charged measure and the claim it was for."""

    tpl_number: str
    quota_year: int
    at: dt.datetime
    delta: Decimal
    claim_id: str
    kind: str


@dataclasses.dataclass(frozen=True)
class LevelRow:
    tpl_number: str
    quota_year: int
    label: str
    measure_unit: str
    limit: Decimal
    charged: Decimal
    aggregate: str | None
    held_since: dt.datetime | None = None
    escrowed: Decimal = Decimal(0)  # room and unfolded charges of its allotments (server/service/allotments.py)


# The claim path's statements, written once as Core statements on the mapped tables and run as
# Prepared statements on the driver's cursor (server/adapters/prepared.py: per call, SQLAlchemy's
# execution machinery cost more CPU than the database's work). They bypass the session's identity
# map, so every read of a balance or a claim in a claim's transaction is one of them too.
_certificates = table_of(CertificateRow)
_levels = table_of(QuotaLevelRow)
_claims = table_of(ClaimRow)
_entries = table_of(EntryRow)
_quantity = bindparam("amount", type_=ExactQuantity())
_certificate_key = (_certificates.c.issuing_country == bindparam("country"), _certificates.c.certificate_number == bindparam("number"))
_level_key = (_levels.c.tpl_number == bindparam("tpl"), _levels.c.quota_year == bindparam("year"))
_CLAIM_COLUMNS = tuple(f.name for f in dataclasses.fields(ClaimRecord))
_allotments = table_of(QuotaAllotmentRow)
# A level's charged total: what is folded into its row plus what its allotments' claims charged since.
_allotted_use = (
    select(func.coalesce(func.sum(_allotments.c.used), 0))
    .where(_allotments.c.tpl_number == _levels.c.tpl_number, _allotments.c.quota_year == _levels.c.quota_year)
    .scalar_subquery()
)
_level_columns = select(*(
    type_coerce(_levels.c.charged + _allotted_use, ExactQuantity()).label("charged") if f.name == "charged" else _levels.c[f.name]
    for f in dataclasses.fields(LevelRow)
))
# What a level has given out: charges and the room carved into allotments (never above its limit).
_committed = _levels.c.charged + _levels.c.escrowed
# A claim is reversed once: the UPDATE matches only a live claim with the decision the reversal read
# (a queued claim decided meanwhile by the opening is read again, with what it now holds).
_MARK_REVERSED = (
    update(_claims)
    .where(_claims.c.claim_id == bindparam("id"), _claims.c.reversed_at.is_(None), _claims.c.decision == bindparam("decision"))
    .values(reversed_at=bindparam("at", type_=_claims.c.reversed_at.type), reversal_kind=bindparam("kind"))
    .returning(*(_claims.c[name] for name in _CLAIM_COLUMNS))
)
_SET_BALANCES = ("certificate_remaining", "level_remaining", "aggregate_remaining")
STATEMENTS = Statements(
    claim_revisions=select(*(_claims.c[name] for name in _CLAIM_COLUMNS))
    .where(_claims.c.entry_number == bindparam("entry"), _claims.c.line_number == bindparam("line"))
    .order_by(_claims.c.revision),
    # Locked until the step commits (PostgreSQL): a reversal of one of them waits, then sees it decided.
    # With each claim's certificate balance (its row locked too): the step reads them all at once.
    queued_claims=select(*(_claims.c[name] for name in _CLAIM_COLUMNS), _certificates.c.quantity, _certificates.c.used_quantity)
    .join(_certificates, (_certificates.c.issuing_country == _claims.c.issuing_country)
          & (_certificates.c.certificate_number == _claims.c.certificate_number))
    .where(_claims.c.quota_year == bindparam("year"), _claims.c.decision == "QUEUED", _claims.c.reversed_at.is_(None))
    .order_by(_claims.c.claim_id)
    .limit(bindparam("limit"))
    .with_for_update(),
    offers_due=select(*(_claims.c[name] for name in _CLAIM_COLUMNS))
    .where(
        _claims.c.decision == "PRORATED_OFFER", _claims.c.reversed_at.is_(None),
        _claims.c.offer_expires_at <= bindparam("now", type_=_claims.c.offer_expires_at.type),
    )
    .order_by(_claims.c.offer_expires_at, _claims.c.claim_id)
    .limit(bindparam("limit"))
    .with_for_update(),
    # A batch's claims, locked until its step commits (PostgreSQL): a reversal of one waits, then sees it decided.
    pending_claims=select(*(_claims.c[name] for name in _CLAIM_COLUMNS))
    .where(_claims.c.decision == "PENDING", _claims.c.reversed_at.is_(None),
           _claims.c.presentation_time < bindparam("cutoff", type_=_claims.c.presentation_time.type),
           _claims.c.decided_at <= bindparam("started", type_=_claims.c.decided_at.type),
           _claims.c.quota_year != bindparam("skip_year"))
    .order_by(_claims.c.presentation_time, _claims.c.claim_id)
    .limit(bindparam("limit"))
    .with_for_update(),
    # The rest of one instant's group, so that a step never splits simultaneous claims.
    pending_at=select(*(_claims.c[name] for name in _CLAIM_COLUMNS))
    .where(_claims.c.decision == "PENDING", _claims.c.reversed_at.is_(None),
           _claims.c.presentation_time == bindparam("at", type_=_claims.c.presentation_time.type),
           _claims.c.decided_at <= bindparam("started", type_=_claims.c.decided_at.type),
           _claims.c.quota_year != bindparam("skip_year"))
    .order_by(_claims.c.claim_id)
    .with_for_update(),
    pending_any=select(_claims.c.claim_id).where(_claims.c.decision == "PENDING", _claims.c.reversed_at.is_(None),
                                                _claims.c.presentation_time < bindparam("before", type_=_claims.c.presentation_time.type),
                                                _claims.c.quota_year != bindparam("skip_year")).limit(1),
    # The TPLs of a year's pending claims (lines presented while the opening batch was under review).
    pending_tpls=select(_claims.c.tpl_number).distinct()
    .where(_claims.c.decision == "PENDING", _claims.c.reversed_at.is_(None), _claims.c.quota_year == bindparam("year")),
    queued_demand=select(_claims.c.tpl_number, type_coerce(func.sum(_claims.c.claimed_measure), ExactQuantity()))
    .where(_claims.c.quota_year == bindparam("year"), _claims.c.decision == "QUEUED", _claims.c.reversed_at.is_(None))
    .group_by(_claims.c.tpl_number),
    certificate_claims=select(*(_claims.c[name] for name in _CLAIM_COLUMNS))
    .where(_claims.c.issuing_country == bindparam("country"), _claims.c.certificate_number == bindparam("number"))
    .order_by(_claims.c.decided_at, _claims.c.entry_number, _claims.c.line_number, _claims.c.revision),
    entry_parties=select(_entries.c.importer_of_record, _entries.c.filer_code).where(_entries.c.entry_number == bindparam("entry")),
    insert_entry=(insert(_entries), ("entry_number", "importer_of_record", "filer_code")),
    insert_claim=(insert(_claims), _CLAIM_COLUMNS),
    mark_reversed=_MARK_REVERSED,
    set_balances=update(_claims).where(_claims.c.claim_id == bindparam("id"))
    .values({name: bindparam(f"new_{name}", type_=_claims.c[name].type) for name in _SET_BALANCES}),
    # Conditional on the version the claim was matched against too: an amendment stored meanwhile
    # makes the claim start again and match the new version.
    charge_certificate=update(_certificates)
    .where(*_certificate_key, _certificates.c.status == "ACTIVE", _certificates.c.current_version == bindparam("version"),
           _certificates.c.used_quantity + _quantity <= _certificates.c.quantity)
    .values(used_quantity=_certificates.c.used_quantity + _quantity, matched_entries=_certificates.c.matched_entries + bindparam("entries"))
    .returning(_certificates.c.quantity, _certificates.c.used_quantity),
    release_certificate=update(_certificates)
    .where(*_certificate_key, _certificates.c.used_quantity >= _quantity)
    .values(used_quantity=_certificates.c.used_quantity - _quantity, matched_entries=_certificates.c.matched_entries - bindparam("entries"))
    .returning(_certificates.c.quantity, _certificates.c.used_quantity),
    lock_certificate=select(_certificates.c.quantity, _certificates.c.used_quantity).where(*_certificate_key).with_for_update(),
    give_back_certificate=update(_certificates)
    .where(*_certificate_key, _certificates.c.used_quantity >= _quantity)
    .values(used_quantity=_certificates.c.used_quantity - _quantity, matched_entries=_certificates.c.matched_entries - bindparam("entries")),
    level=_level_columns.where(*_level_key),
    # A claim that waits for its period's opening holds this (PostgreSQL) until it commits: the opening
    # locks the year's levels before it sums the queue, so it sees every claim queued before it began,
    # and a claim queued after sees the opening (README, "Invariants").
    share_level=_level_columns.where(*_level_key).with_for_update(read=True),
    year_levels=_level_columns.where(_levels.c.quota_year == bindparam("year")).order_by(_levels.c.tpl_number),
    lock_year_levels=_level_columns.where(_levels.c.quota_year == bindparam("year")).order_by(_levels.c.tpl_number).with_for_update(),
    all_levels=_level_columns,
    charge_level=update(_levels)
    .where(*_level_key, _committed + _quantity <= _levels.c.limit)
    .values(charged=_levels.c.charged + _quantity)
    .returning(_levels.c.limit, _levels.c.charged),
    # A claim decided at once (its level not on hold): conditional on the level still not being on hold
    # and on the charge staying within its critical share, as read (else the claim must wait).
    charge_open_level=update(_levels)
    .where(*_level_key, _levels.c.held_since.is_(None), _committed + _quantity <= bindparam("cap", type_=ExactQuantity()),
           _committed + _quantity <= _levels.c.limit)
    .values(charged=_levels.c.charged + _quantity)
    .returning(_levels.c.limit, _levels.c.charged),
    put_on_hold=update(_levels).where(*_level_key, _levels.c.held_since.is_(None))
    .values(held_since=bindparam("at", type_=_levels.c.held_since.type)),
    # Open again: only while what is charged stays within the critical share (the batch locked the row).
    lift_hold=update(_levels).where(*_level_key, _committed <= bindparam("cap", type_=ExactQuantity())).values(held_since=None),
    release_level=update(_levels)
    .where(*_level_key, _levels.c.charged >= _quantity)
    .values(charged=_levels.c.charged - _quantity)
    .returning(_levels.c.limit, _levels.c.charged),
    # A new limit is written only if what is charged fits under it, judged on the row as it is when
    # the update runs (it waits for any charge in flight), never on an earlier read.
    set_limit=update(_levels)
    .where(*_level_key, _committed <= bindparam("new_limit", type_=ExactQuantity()))
    .values(limit=bindparam("new_limit", type_=ExactQuantity()), label=bindparam("new_label"),
            measure_unit=bindparam("new_unit"), aggregate=bindparam("new_aggregate"))
    .returning(_levels.c.charged),
    record_ledger=(insert(table_of(QuotaLedgerRow)), ("tpl_number", "quota_year", "at", "delta", "claim_id", "kind")),
    # One INSERT per entry and no row that other writers need: the sequencer gives it its index later.
    record_log_entry=(insert(table_of(LogEntryRow)), ("kind", "subject", "entry", "leaf_hash")),
)


# No quota year: what `skip_year` is when no year's claims are to be left out.
NO_YEAR = -1


def _set_claim_while(decision: str, columns: tuple[str, ...]):  # type: ignore[no-untyped-def]  # a SQLAlchemy Update statement
    """UPDATE of these columns of one claim that still has `decision` and is not reversed."""
    return (
        update(_claims)
        .where(_claims.c.claim_id == bindparam("id"), _claims.c.decision == decision, _claims.c.reversed_at.is_(None))
        .values({name: bindparam(f"new_{name}", type_=_claims.c[name].type) for name in columns})
    )




@functools.lru_cache(maxsize=512)
def _reasons(text: str) -> tuple[str, ...]:
    """A claim's stored reasons (a JSON list): a few dozen combinations recur across all claims, so
    each text is parsed once (a batch step reads hundreds of claims)."""
    return tuple(json.loads(text))


@functools.lru_cache(maxsize=512)
def _mismatches(text: str) -> tuple[tuple[str, ...], ...]:
    """A claim's stored mismatches (a JSON list of lists), parsed once per text, as _reasons."""
    return tuple(tuple(m) for m in json.loads(text))


_REASONS = _CLAIM_COLUMNS.index("reasons")
_MISMATCHES = _CLAIM_COLUMNS.index("mismatches")


def _record(row: tuple) -> ClaimRecord:  # type: ignore[type-arg]  # a row of the claim query's columns, of mixed types
    """A claim from a row of its columns in _CLAIM_COLUMNS order (ClaimRecord's own field order)."""
    values = list(row[: len(_CLAIM_COLUMNS)])
    values[_REASONS] = _reasons(values[_REASONS])
    values[_MISMATCHES] = _mismatches(values[_MISMATCHES])
    return ClaimRecord(*values)


def _revisions(rows: list[tuple]) -> list[ClaimRecord]:  # type: ignore[type-arg]  # rows of the claim query's columns
    return [_record(row) for row in rows]


def _parties(rows: list[tuple]) -> tuple[str, str] | None:  # type: ignore[type-arg]  # rows of (importer, filer)
    return None if not rows else (rows[0][0], rows[0][1])


def _level(rows: list[tuple]) -> LevelRow | None:  # type: ignore[type-arg]  # rows of LevelRow's columns
    return None if not rows else LevelRow(*rows[0])


class _Repository(PreparedRepository):
    statements = STATEMENTS


class ClaimRepository(_Repository):
    def revisions(self, entry_number: str, line_number: int) -> list[ClaimRecord]:
        return self.revisions_read(entry_number, line_number).answer

    def revisions_read(self, entry_number: str, line_number: int) -> Read[list[ClaimRecord]]:
        """`revisions`, as a read to run with others (server/adapters/prepared.py, read_together)."""
        return self._read("claim_revisions", {"entry": entry_number, "line": line_number}, _revisions)

    def entry_parties(self, entry_number: str) -> tuple[str, str] | None:
        """(importer of record, filer code) already on file for this entry number, if any."""
        return self.entry_parties_read(entry_number).answer

    def entry_parties_read(self, entry_number: str) -> Read[tuple[str, str] | None]:
        """`entry_parties`, as a read to run with others."""
        return self._read("entry_parties", {"entry": entry_number}, _parties)

    def add_entry(self, entry_number: str, importer_of_record: str, filer_code: str) -> None:
        """The entry number's parties; a concurrent first line of the same entry loses on the primary key
        (the unit of work is then run again and reads the winner's). Held and sent with the next
        statement on PostgreSQL (Prepared.defer): its IntegrityError comes from that statement, or the commit."""
        self._defer("insert_entry", {"entry_number": entry_number, "importer_of_record": importer_of_record, "filer_code": filer_code})

    def add(self, record: ClaimRecord) -> None:
        values = {name: getattr(record, name) for name in _CLAIM_COLUMNS}
        values["reasons"] = json.dumps(list(record.reasons))
        values["mismatches"] = json.dumps([list(m) for m in record.mismatches])
        # The unique (entry, line, revision) constraint fires when this is sent: here, or with the commit
        # on PostgreSQL (server/adapters/deferred_writes.py).
        self._defer("insert_claim", values)

    def mark_reversed(self, claim: ClaimRecord, at: dt.datetime, kind: str) -> ClaimRecord | None:
        """Mark the claim reversed if it is still live with the decision read; the claim as it now is,
        or None if another transaction reversed or decided it first (the caller reads it again)."""
        row = self._first("mark_reversed", {"id": claim.claim_id, "decision": claim.decision, "at": at, "kind": kind})
        return None if row is None else _record(row)

    def set_balances(self, claim_id: str, certificate: Decimal | None, level: Decimal | None, aggregate: Decimal | None) -> None:
        """The balances a reversal left (shown with the claim; the ledger and the rows are the truth)."""
        self._execute(
            "set_balances",
            {"id": claim_id, "new_certificate_remaining": certificate, "new_level_remaining": level, "new_aggregate_remaining": aggregate},
        )

    def queued(self, quota_year: int, limit: int) -> tuple[list[ClaimRecord], dict[tuple[str, str], tuple[Decimal, Decimal]]]:
        """The first `limit` of the year's QUEUED claims, in a stable order (claim id): the allocation
        treats them as simultaneous, and decides them in this order; and the (quantity, used quantity)
        of their certificates, each row locked until this transaction ends (PostgreSQL), as `held` reads."""
        claims, held = [], {}
        for row in self._all("queued_claims", {"year": quota_year, "limit": limit}):
            claim = _record(row)
            claims.append(claim)
            held[(claim.issuing_country, claim.certificate_number)] = (row[-2], row[-1])
        return claims, held

    def pending(self, cutoff: dt.datetime, started: dt.datetime, limit: int, skip_year: int = NO_YEAR) -> list[ClaimRecord]:
        """The first `limit` claims pending before `cutoff` and recorded by `started`, in presentation-time
        order (then claim id), with the rest of the last one's instant: a batch step's claims. Claims
        of `skip_year` are left (its opening batch is not final yet)."""
        values = {"cutoff": cutoff, "started": started, "limit": limit, "skip_year": skip_year}
        chunk = [_record(row) for row in self._all("pending_claims", values)]
        if len(chunk) == limit:
            last = chunk[-1]
            seen = {c.claim_id for c in chunk}
            same_instant = {"at": last.presentation_time, "started": started, "skip_year": skip_year}
            chunk += [c for c in (_record(row) for row in self._all("pending_at", same_instant)) if c.claim_id not in seen]
        return chunk

    def any_pending(self, before: dt.datetime, skip_year: int = NO_YEAR) -> bool:
        """Whether a live claim presented before `before` is pending (of a year other than `skip_year`)."""
        return self._first("pending_any", {"before": before, "skip_year": skip_year}) is not None

    def pending_tpls(self, quota_year: int) -> list[str]:
        """The TPLs with a live claim of `quota_year` pending."""
        return [row[0] for row in self._all("pending_tpls", {"year": quota_year})]

    def decide_pending(self, records: list[ClaimRecord], columns: tuple[str, ...]) -> int:
        """Store these columns of each record, claims still PENDING and not reversed; how many were stored."""
        return self._decide_while("PENDING", records, columns)

    def decide_queued(self, records: list[ClaimRecord], columns: tuple[str, ...]) -> int:
        """Store these columns of each record, claims still QUEUED and not reversed, in one driver call;
        how many were stored (fewer than given: another transaction reversed or decided one first)."""
        return self._decide_while("QUEUED", records, columns)

    def answer_offers(self, records: list[ClaimRecord], columns: tuple[str, ...]) -> int:
        """Store these columns of each record, claims still PRORATED_OFFER and not reversed; how many
        were stored (fewer: another transaction answered, let lapse or reversed one first)."""
        return self._decide_while("PRORATED_OFFER", records, columns)

    def offers_due(self, now: dt.datetime, limit: int) -> list[ClaimRecord]:
        """Live offers whose deadline has passed, earliest deadline (then claim id) first."""
        return [_record(row) for row in self._all("offers_due", {"now": now, "limit": limit})]

    def _decide_while(self, decision: str, records: list[ClaimRecord], columns: tuple[str, ...]) -> int:
        columns = tuple(sorted(columns))
        statement = self.statements.get(
            f"decide:{decision}:{','.join(columns)}", self.connection.dialect, lambda: _set_claim_while(decision, columns)
        )
        rows = []
        for record in records:
            values: dict[str, object] = {f"new_{name}": getattr(record, name) for name in columns}
            if "reasons" in columns:
                values["new_reasons"] = json.dumps(list(record.reasons))
            rows.append({"id": record.claim_id, **values})
        return statement.execute_many(self.connection, rows)

    def queued_demand(self, quota_year: int) -> dict[str, Decimal]:
        """What the year's QUEUED claims ask in all, per TPL, in the level's measure."""
        return {tpl: measure for tpl, measure in self._all("queued_demand", {"year": quota_year})}

    def for_certificate(self, country: str, number: str) -> list[ClaimRecord]:
        rows = self._all("certificate_claims", {"country": country, "number": number})
        return [_record(row) for row in rows]


class CertificateLedger(_Repository):
    """Atomic conditional updates of a certificate's used quantity (eCERT 2.0 decrement)."""

    def charge(self, country: str, number: str, quantity: Decimal, entries: int, version: int) -> Decimal | None:
        """Use `quantity` of the certificate, still at `version`; the new remaining quantity, or None if
        that would overuse it or it changed (canceled, amended) since it was read."""
        result = self._first(
            "charge_certificate", {"country": country, "number": number, "amount": quantity, "entries": entries, "version": version}
        )
        return None if result is None else result[0] - result[1]

    def release(self, country: str, number: str, quantity: Decimal, entries: int) -> Decimal | None:
        """Give back `quantity`; the new remaining quantity, or None if the certificate holds less."""
        result = self._first("release_certificate", {"country": country, "number": number, "amount": quantity, "entries": entries})
        return None if result is None else result[0] - result[1]

    def held(self, country: str, number: str) -> tuple[Decimal, Decimal]:
        """(quantity, used quantity), the row locked until this transaction ends (PostgreSQL)."""
        row = self._first("lock_certificate", {"country": country, "number": number})
        if row is None:
            raise LookupError(f"no certificate {country}/{number}")
        return row[0], row[1]

    def give_back_many(self, returns: list[tuple[str, str, Decimal, int]]) -> None:
        """(country, number, quantity, entries) given back to each certificate, in one driver call; the
        caller checked each against what `held` read."""
        rows = [{"country": country, "number": number, "amount": quantity, "entries": entries} for country, number, quantity, entries in returns]
        if self._execute_many("give_back_certificate", rows) != len(rows):
            raise LookupError("a certificate holds less than the opening allocation gives back")


class QuotaRepository(_Repository):
    def level(self, tpl_number: str, quota_year: int) -> LevelRow | None:
        return self.level_read(tpl_number, quota_year).answer

    def level_read(self, tpl_number: str, quota_year: int) -> Read[LevelRow | None]:
        """`level`, as a read to run with others (server/adapters/prepared.py, read_together)."""
        return self._read("level", {"tpl": tpl_number, "year": quota_year}, _level)

    def levels(self, quota_year: int, *, lock: bool = False) -> list[LevelRow]:
        """The year's levels; `lock`: until this transaction ends (PostgreSQL; SQLite writes are serial)."""
        return [LevelRow(*row) for row in self._all("lock_year_levels" if lock else "year_levels", {"year": quota_year})]

    def all_levels(self) -> list[LevelRow]:
        return [LevelRow(*row) for row in self._all("all_levels")]

    def set_level(self, level: LevelRow) -> Decimal | None:
        """Create the level, or give it a new limit (and label, unit, aggregate) if what is charged fits
        under it. None: the level exists and holds more than the new limit (nothing written); else
        what it has charged."""
        values = {"tpl": level.tpl_number, "year": level.quota_year, "new_limit": level.limit, "new_label": level.label,
                  "new_unit": level.measure_unit, "new_aggregate": level.aggregate}
        result = self._first("set_limit", values)
        if result is not None:
            return Decimal(result[0])
        if self._first("level", {"tpl": level.tpl_number, "year": level.quota_year}) is not None:
            # Another replica loading the same table may have committed the row between the UPDATE (which
            # could not see it yet) and this read: write again, now that it is visible. Still nothing: the
            # level holds more than the new limit.
            result = self._first("set_limit", values)
            return None if result is None else Decimal(result[0])
        self.session.add(QuotaLevelRow(**dataclasses.asdict(level)))
        self.session.flush()  # a concurrent load of the same level loses on the primary key and retries
        return level.charged

    def charge(self, tpl_number: str, quota_year: int, measure: Decimal) -> Decimal | None:
        """Add `measure` to the level; its new remaining, or None if that would exceed the limit."""
        result = self._first("charge_level", {"tpl": tpl_number, "year": quota_year, "amount": measure})
        return None if result is None else result[0] - result[1]

    def charge_open(self, tpl_number: str, quota_year: int, measure: Decimal, cap: Decimal) -> Decimal | None:
        """Add `measure` to a level that is not on hold, if it stays within `cap` (its critical share) and
        its limit; the new remaining, or None (on hold meanwhile, or it would pass the cap: the claim waits)."""
        result = self._first("charge_open_level", {"tpl": tpl_number, "year": quota_year, "amount": measure, "cap": cap})
        return None if result is None else result[0] - result[1]

    def put_on_hold(self, tpl_number: str, quota_year: int, at: dt.datetime) -> bool:
        """Put the level on hold from `at`, unless it already is; True if this call did."""
        return self._execute("put_on_hold", {"tpl": tpl_number, "year": quota_year, "at": at}) == 1

    def lift_hold(self, tpl_number: str, quota_year: int, cap: Decimal) -> bool:
        """Take the level off hold if it holds no more than `cap`; True if it is off hold now."""
        return self._execute("lift_hold", {"tpl": tpl_number, "year": quota_year, "cap": cap}) == 1

    def batch(self, cutoff: dt.datetime, *, lock: bool = False) -> Batch | None:
        """The batch of this cutoff, if begun; `lock`: until this transaction ends (PostgreSQL), so that
        two replicas never take the same step."""
        row = self.session.get(QuotaBatchRow, cutoff, with_for_update=lock or None, populate_existing=True)
        return None if row is None else Batch(row.cutoff_at, row.started_at, row.completed_at, row.decided)

    def begin_batch(self, cutoff: dt.datetime, at: dt.datetime) -> None:
        self.session.add(QuotaBatchRow(cutoff_at=cutoff, started_at=at, decided=0))
        self.session.flush()  # a concurrent batch runner loses on the primary key here

    def advance_batch(self, cutoff: dt.datetime, decided: int, completed_at: dt.datetime | None) -> None:
        row = self.session.get(QuotaBatchRow, cutoff)
        if row is None:
            raise LookupError(f"no batch of {cutoff.isoformat()}")
        row.decided += decided
        row.completed_at = completed_at
        self.session.flush()

    def release(self, tpl_number: str, quota_year: int, measure: Decimal) -> Decimal | None:
        """Take `measure` off the level; its new remaining, or None if less than that is charged."""
        result = self._first("release_level", {"tpl": tpl_number, "year": quota_year, "amount": measure})
        return None if result is None else result[0] - result[1]

    def hold_level(self, tpl_number: str, quota_year: int) -> None:
        """Share-lock the level until this transaction ends (PostgreSQL; SQLite's writer is alone)."""
        self._first("share_level", {"tpl": tpl_number, "year": quota_year})

    def record(self, tpl_number: str, quota_year: int, at: dt.datetime, delta: Decimal, claim_id: str, kind: str) -> None:
        self._defer(
            "record_ledger",
            {"tpl_number": tpl_number, "quota_year": quota_year, "at": at, "delta": delta, "claim_id": claim_id, "kind": kind},
        )

    def record_many(self, entries: list[LedgerEntry]) -> None:
        """Ledger rows in the order given (their ids follow it), in one driver call."""
        self._execute_many("record_ledger", [vars(entry) for entry in entries])

    def charged_as_of(self, tpl_number: str, quota_year: int, at: dt.datetime) -> Decimal:
        total = self.session.scalar(
            select(type_coerce(func.coalesce(func.sum(QuotaLedgerRow.delta), 0), BigInteger)).where(
                QuotaLedgerRow.tpl_number == tpl_number, QuotaLedgerRow.quota_year == quota_year, QuotaLedgerRow.at <= at
            )
        )
        # Summed as raw micro-units, then scaled once.
        return (Decimal(int(total or 0)) / Decimal(1_000_000)).normalize()

    def ledger_sum(self, tpl_number: str, quota_year: int) -> Decimal:
        return self.charged_as_of(tpl_number, quota_year, dt.datetime.max.replace(tzinfo=dt.timezone.utc))

    def opening(self, quota_year: int, *, lock: bool = False) -> Opening | None:
        """The year's opening allocation, if begun; `lock`: until this transaction ends (PostgreSQL),
        so that two replicas never decide the same chunk of the queue."""
        row = self.session.get(QuotaOpeningRow, quota_year, with_for_update=lock or None, populate_existing=True)
        if row is None:
            return None
        rates = {tpl: Fraction(rate) for tpl, rate in json.loads(row.rates).items()}
        return Opening(row.quota_year, row.allocated_at, rates, row.completed_at)

    def begin_opening(self, quota_year: int, at: dt.datetime, rates: dict[str, Fraction]) -> None:
        text = json.dumps({tpl: f"{rate.numerator}/{rate.denominator}" for tpl, rate in sorted(rates.items())})
        self.session.add(QuotaOpeningRow(quota_year=quota_year, allocated_at=at, rates=text))
        self.session.flush()  # a concurrent allocator loses on the primary key here

    def complete_opening(self, quota_year: int, at: dt.datetime) -> None:
        row = self.session.get(QuotaOpeningRow, quota_year)
        if row is None:
            raise LookupError(f"no opening of {quota_year} to complete")
        row.completed_at = at
        self.session.flush()


@dataclasses.dataclass(frozen=True)
class RecordedEntry:
    """An entry as recorded in the transparency log (its index comes later, from the sequencer)."""

    entry: LogEntry
    data: bytes  # the canonical bytes the leaf hashes
    leaf_hash: bytes

    @property
    def kind(self) -> str:
        return self.entry.kind

    @property
    def subject(self) -> str:
        return self.entry.subject


def recorded(made: LogEntry) -> RecordedEntry:
    data = made.encode()  # once: the leaf hashes these very bytes
    return RecordedEntry(made, data, leaf_hash(data))


class AuditRepository(_Repository):
    """Audited facts become transparency-log entries (contract/log_entry.py): one INSERT each,
    no lock that another writer needs (the hash chain's tip row, which every audited write of every
    replica took in turn, is gone)."""

    def append(self, at: dt.datetime, kind: str, subject: str, facts: dict[str, object]) -> RecordedEntry:
        return self.append_many(at, [(kind, subject, facts)])[0]

    def append_many(self, at: dt.datetime, entries: list[tuple[str, str, dict[str, object]]]) -> list[RecordedEntry]:
        """Entries (kind, subject, facts) recorded in the order given (their ids, then their indices, follow it)."""
        return self.record([recorded(log_entry(at, kind, subject, facts)) for kind, subject, facts in entries])

    def record(self, entries: list[RecordedEntry]) -> list[RecordedEntry]:
        rows = [{"kind": e.kind, "subject": e.subject, "entry": e.data, "leaf_hash": e.leaf_hash} for e in entries]
        if len(rows) == 1:
            self._defer("record_log_entry", rows[0])
        elif rows:
            self._execute_many("record_log_entry", rows)
        recorded_by_unit = getattr(self._transaction, "recorded", None)
        if isinstance(recorded_by_unit, list):
            recorded_by_unit.extend(entries)
        return entries


class ReferenceRepository(_Repository):
    def latest(self, kind: str) -> tuple[int, str] | None:
        """(id, document) of the newest loaded version of `kind`."""
        row = self.session.execute(
            select(ReferenceVersionRow.id, ReferenceVersionRow.document)
            .where(ReferenceVersionRow.kind == kind)
            .order_by(ReferenceVersionRow.id.desc())
            .limit(1)
        ).one_or_none()
        return None if row is None else (row[0], row[1])

    def newest_id(self) -> int:
        return int(self.session.scalar(select(func.coalesce(func.max(ReferenceVersionRow.id), 0))) or 0)

    def find(self, kind: str, version: str) -> ReferenceVersionRow | None:
        return self.session.scalars(
            select(ReferenceVersionRow).where(ReferenceVersionRow.kind == kind, ReferenceVersionRow.version == version)
        ).one_or_none()

    def add(self, kind: str, version: str, source: str, document: str, digest: str, at: dt.datetime) -> int:
        row = ReferenceVersionRow(kind=kind, version=version, source=source, document=document, digest=digest, loaded_at=at)
        self.session.add(row)
        self.session.flush()
        return row.id

    def history(self) -> list[tuple[int, str, str, str, dt.datetime]]:
        rows = self.session.execute(
            select(
                ReferenceVersionRow.id, ReferenceVersionRow.kind, ReferenceVersionRow.version,
                ReferenceVersionRow.digest, ReferenceVersionRow.loaded_at,
            ).order_by(ReferenceVersionRow.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]  # each row holds the five columns selected, in the declared order
