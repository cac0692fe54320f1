"""Use cases of the internal API: decide, charge, reverse and report TPL claims.

Every charging use case is one database transaction: the certificate, the TPL and any aggregate
ceiling are each charged by an atomic conditional update, the decision is recorded and audited,
then the transaction commits. If a conditional update finds that another replica got there first,
the whole transaction is rolled back and decided again from fresh balances.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from sqlalchemy.exc import IntegrityError

from server.adapters.claim_repository import LevelRow
from server.adapters.prepared import Read
from server.adapters.database import Database
from server.domain.batch import critical_cap
from server.domain.claims import (
    CertificateOnFile,
    LAPSED_OFFER,
    Decision,
    OfferAnswer,
    QuotaContext,
    allocate,
    answer_offer,
    check_post_importation_window,
    corrected_presentation,
    holds_its_level,
    screen,
    status_at_presentation,
)
from server.domain.conversion import Conversion, convert
from server.domain.entry import (
    EntryLine,
    EntryLineDraft,
    canonical_entry_number,
    future_findings,
    line_digest,
    validate_entry_line,
)
from server.domain.errors import DomainError, ErrorKind, Finding
from server.domain.quantity import format_quantity, parse_quantity, storable_code
from server.domain.quota import Level
from server.domain.records import WAITING, ClaimRecord, VersionOnFile
from server.service.allotments import DIRECT, Allotments, NeedsAllotment
from server.service.batches import Batches, OpeningPending
from server.service.claim_facts import facts, subject
from server.service.clock import Clock, new_id
from server.service.quota import QuotaCalendar, QuotaEventBus
from server.service.reference import References, ReferenceStore
from server.service.transactions import LostRace, run_in_transaction
from server.service.unit_of_work import UnitOfWork

_T = TypeVar("_T")
CHARGED = (Decision.PREFERENTIAL.value, Decision.PARTIAL.value)
# What answering a prorated offer (or its lapse) changes of the claim.
ANSWERED_COLUMNS = ("decision", "reasons", "granted_quantity", "granted_measure", "certificate_remaining", "level_remaining", "aggregate_remaining")
# Lapsed offers given back per transaction.
LAPSE_CHUNK = 100


class ReversalKind(enum.Enum):
    CANCELED = "CANCELED"
    CORRECTED = "CORRECTED"



@dataclass(frozen=True)
class Plan:
    """A decision with the balances it was computed from, before anything is charged."""

    record: ClaimRecord
    levels: list[Level]
    # The certificate's current version as read: its charge is conditioned on it (the version the
    # claim relied on, on file at presentation, may have been replaced since).
    head_version: int = 0


class Unread(enum.Enum):
    """Not read yet: the callee reads it itself."""

    UNREAD = "UNREAD"


UNREAD = Unread.UNREAD


@dataclass(frozen=True)
class FirstReads:
    """What a new claim's transaction reads before deciding, read together where the engine can
    (ClaimUseCases._read_first); elsewhere each is read where its answer is first used."""

    revisions: Read[list[ClaimRecord]]
    parties: Read[tuple[str, str] | None]
    on_file: Read[VersionOnFile | None]
    level: Read[LevelRow | None] | None  # None: read later, where it always was


@dataclass(frozen=True)
class CertificateUsage:
    issuing_country: str
    certificate_number: str
    importer_of_record: str
    unit: str
    quantity: Decimal
    used_quantity: Decimal
    uses: list[ClaimRecord]


class ClaimUseCases:
    def __init__(
        self,
        database: Database,
        *,
        references: ReferenceStore,
        calendar: QuotaCalendar,
        clock: Clock,
        events: QuotaEventBus | None = None,
        allotments: Allotments | None = None,
    ):
        self.database = database
        self.allotments = allotments or Allotments(
            database, clock, enabled=False, share=Decimal("0.01"), critical_share=calendar.critical_share
        )
        self.references = references
        self.calendar = calendar
        self.clock = clock
        self.events = events
        self.batches = Batches(database, calendar, clock, self._nudge)

    # -- public use cases ---------------------------------------------------------------------------

    def match(self, draft: EntryLineDraft) -> tuple[ClaimRecord, bool]:
        line, digest = self._validated(draft)

        def attempt(uow: UnitOfWork, now: dt.datetime, references: References) -> tuple[ClaimRecord, bool]:
            read = self._read_first(uow, references, line)
            revisions = read.revisions.answer
            replay = next((r for r in revisions if r.request_digest == digest and not r.post_importation), None)
            if replay is not None:
                return revisions[-1] if revisions[-1].revision > replay.revision else replay, True
            if revisions:
                raise DomainError(
                    "CLAIM_ALREADY_DECIDED",
                    "this entry line was already decided with other data; correct it with ReverseClaim",
                    ErrorKind.ALREADY_EXISTS,
                    metadata={"claim_id": revisions[-1].claim_id},
                )
            self._check_entry_parties(uow, line, read.parties.answer)
            opened = self.batches.period_opened(uow, line.date_of_importation.year, line.tpl_number, now)
            plan = self._plan(uow, references, line, now, digest=digest, revision=1, post=False, opened=opened, read=read)
            return self._commit_plan(uow, plan, now), False

        return self._in_transaction(attempt)

    def check(self, draft: EntryLineDraft) -> ClaimRecord:
        """The decision `match` would make now; nothing is charged or recorded."""
        line, digest = self._validated(draft)
        now = self.clock.now()
        references = self.references.current()
        year = line.date_of_importation.year
        with UnitOfWork(self.database, write=False) as uow:
            opened = year in self.batches.opened_years or uow.quota.opening(year) is not None or now >= self.calendar.opening_final(year)
            plan = self._plan(uow, references, line, now, digest=digest, revision=0, post=False, opened=opened)
        return dataclasses.replace(plan.record, claim_id="")

    def file_post_importation(self, draft: EntryLineDraft) -> tuple[ClaimRecord, bool]:
        line, digest = self._validated(draft, post_importation=True)
        check_post_importation_window(line.date_of_importation, self.calendar_today())

        def attempt(uow: UnitOfWork, now: dt.datetime, references: References) -> tuple[ClaimRecord, bool]:
            revisions = uow.claims.revisions(line.entry_number, line.line_number)
            replay = next((r for r in revisions if r.request_digest == digest and r.post_importation), None)
            if replay is not None:
                return replay, True
            current = revisions[-1] if revisions else None
            if current is not None and current.reversed_at is None and current.decision not in (
                Decision.MFN_REQUIRED.value,
            ):
                raise DomainError(
                    "CLAIM_NOT_MFN",
                    f"the entry line's claim is {current.decision}; a post-importation claim is for a line that paid MFN",
                    ErrorKind.PRECONDITION,
                    metadata={"claim_id": current.claim_id},
                )
            if current is None:
                self._check_entry_parties(uow, line)
            opened = self.batches.period_opened(uow, line.date_of_importation.year, line.tpl_number, now)
            revision = current.revision + 1 if current else 1
            plan = self._plan(uow, references, line, now, digest=digest, revision=revision, post=True, opened=opened)
            return self._commit_plan(uow, plan, now), False

        return self._in_transaction(attempt)

    def reverse(
        self, entry_number: str, line_number: int, kind: ReversalKind | None, corrected: EntryLineDraft | None, reason: str
    ) -> tuple[ClaimRecord, ClaimRecord | None, bool]:
        if kind is None:
            raise _field_error("REVERSAL_KIND_MISSING", "kind", "must be CANCELED or CORRECTED")
        entry = canonical_entry_number(entry_number)
        if entry is None:
            raise _field_error("ENTRY_NUMBER_MALFORMED", "entry_number", "must be XXX-NNNNNNN-C with a valid check digit")
        corrected_line, corrected_digest = (None, "")
        if kind is ReversalKind.CORRECTED:
            if corrected is None:
                raise _field_error("FIELD_REQUIRED", "corrected_line", "is required for a correction")
            corrected_line, corrected_digest = self._validated(corrected, prefix="corrected_line")
            if (corrected_line.entry_number, corrected_line.line_number) != (entry, line_number):
                raise _field_error("CORRECTION_OF_ANOTHER_LINE", "corrected_line.entry_number", "must name the same entry and line")

        def attempt(uow: UnitOfWork, now: dt.datetime, references: References) -> tuple[ClaimRecord, ClaimRecord | None, bool]:
            revisions = uow.claims.revisions(entry, line_number)
            if not revisions:
                raise DomainError("CLAIM_NOT_FOUND", "no claim for this entry line", ErrorKind.NOT_FOUND)
            current = revisions[-1]
            if kind is ReversalKind.CANCELED and current.reversed_at is not None and current.reversal_kind == kind.value:
                return current, None, True
            if kind is ReversalKind.CORRECTED and len(revisions) > 1 and current.request_digest == corrected_digest:
                previous = revisions[-2]
                if previous.reversal_kind == ReversalKind.CORRECTED.value:
                    return previous, current, True
            if current.reversed_at is not None:
                raise DomainError("CLAIM_ALREADY_REVERSED", "the claim was already canceled", ErrorKind.PRECONDITION)
            self.batches.period_opened(uow, current.quota_year, current.tpl_number, now)
            reversed_record, reversal = self._release(uow, current, now, kind, reason)
            corrected_record = None
            if corrected_line is None:
                uow.audit.append(now, *reversal)
            else:
                year = corrected_line.date_of_importation.year
                opened = self.batches.period_opened(uow, year, corrected_line.tpl_number, now)
                plan = self._plan(
                    uow, references, corrected_line, now, digest=corrected_digest, revision=current.revision + 1,
                    post=current.post_importation, opened=opened,
                    presented=corrected_presentation(current.held_on_certificate, corrected_line.quantity, current.presentation_time),
                    field="corrected_line",
                )
                # The reversal's log entry goes with the correction's, after its charges (recording an
                # entry is one INSERT: no lock shared with other claims).
                corrected_record = self._commit_plan(uow, plan, now, commit=False, audit_before=[reversal])
            uow.commit()
            return reversed_record, corrected_record, False

        result = self._in_transaction(attempt)
        self._nudge()
        return result

    def answer_offer(self, entry_number: str, line_number: int, accepted_text: str) -> tuple[ClaimRecord, bool]:
        """The filer's answer to the line's prorated offer: `accepted_text` of it (0 declines). Answered
        once: the same answer again replays; another answer, or one after the deadline, is refused."""
        entry = canonical_entry_number(entry_number)
        if entry is None:
            raise _field_error("ENTRY_NUMBER_MALFORMED", "entry_number", "must be XXX-NNNNNNN-C with a valid check digit")
        if not accepted_text:
            raise _field_error("FIELD_REQUIRED", "accepted_quantity", "is required (0 declines the offer)")
        try:
            accepted = parse_quantity(accepted_text)
        except ValueError:
            raise _field_error("ACCEPTED_QUANTITY_INVALID", "accepted_quantity", "must be a whole number of units") from None

        def attempt(uow: UnitOfWork, now: dt.datetime, references: References) -> tuple[ClaimRecord, bool]:
            revisions = uow.claims.revisions(entry, line_number)
            if not revisions:
                raise DomainError("CLAIM_NOT_FOUND", "no claim for this entry line", ErrorKind.NOT_FOUND)
            current = revisions[-1]
            if current.decision != Decision.PRORATED_OFFER.value or current.reversed_at is not None:
                answered = "OFFER_ACCEPTED" in current.reasons or "OFFER_DECLINED" in current.reasons
                if answered and current.reversed_at is None and current.granted_quantity == accepted:
                    return current, True
                reason = "OFFER_LAPSED" if "OFFER_LAPSED" in current.reasons else "OFFER_ALREADY_ANSWERED" if answered else "NO_OFFER"
                raise DomainError(reason, f"the line holds no open prorated offer ({current.decision})", ErrorKind.PRECONDITION,
                                  metadata={"claim_id": current.claim_id})
            assert current.offer_expires_at is not None
            if now >= current.offer_expires_at:
                raise DomainError("OFFER_LAPSED", f"the offer lapsed at {current.offer_expires_at.isoformat()}", ErrorKind.PRECONDITION,
                                  metadata={"claim_id": current.claim_id, "expired_at": current.offer_expires_at.isoformat()})
            answer = answer_offer(current.granted_quantity, accepted, Decimal(current.conversion_factor))
            record = self._settle_offer(uow, current, answer, now, "DECLINED")
            uow.commit()
            return record, False

        result = self._in_transaction(attempt)
        self._nudge()
        return result

    def lapse_due_offers(self) -> int:
        """Give back every prorated offer whose deadline passed unanswered (a timer calls this), a chunk
        per transaction, each conditional on the offer being still open: resumable, and once per claim
        whichever replica runs it. How many lapsed."""
        lapsed = 0
        while True:
            def step(uow: UnitOfWork) -> int:
                due = uow.claims.offers_due(self.clock.now(), LAPSE_CHUNK)
                for claim in due:
                    self._settle_offer(uow, claim, LAPSED_OFFER, self.clock.now(), "LAPSE")
                uow.commit()
                return len(due)

            # Another replica settled one of them first (a lost race): the step looks again.
            count = run_in_transaction(self.database, step, between=lambda error: isinstance(error, IntegrityError))
            lapsed += count
            if count < LAPSE_CHUNK:
                break
        if lapsed:
            self._nudge()
        return lapsed

    def _settle_offer(self, uow: UnitOfWork, offer: ClaimRecord, answer: OfferAnswer, now: dt.datetime, kind: str) -> ClaimRecord:
        """Turn an open offer into its answer: store it (only while it is still an open offer), then
        give the part not accepted back to the levels and the certificate, each conditionally."""
        returned, returned_measure = offer.granted_quantity - answer.grant.quantity, offer.granted_measure - answer.grant.measure
        record = dataclasses.replace(
            offer, decision=answer.decision.value, reasons=answer.reasons,
            granted_quantity=answer.grant.quantity, granted_measure=answer.grant.measure,
        )
        if uow.claims.answer_offers([record], ANSWERED_COLUMNS) != 1:
            raise LostRace
        certificate_remaining = offer.certificate_remaining
        if returned > 0:
            entries = 1 if answer.grant.quantity == 0 else 0
            certificate_remaining = uow.certificate_ledger.release(offer.issuing_country, offer.certificate_number, returned, entries=entries)
            if certificate_remaining is None:
                raise LookupError(f"certificate {offer.issuing_country}/{offer.certificate_number} holds less than {returned}")
        balances: list[Decimal | None] = [offer.level_remaining, offer.aggregate_remaining]
        if returned_measure > 0:
            self.allotments.fold(uow, [(offer.tpl_number, offer.quota_year), *self._aggregate_key(uow, offer)])
            for n, level in enumerate(self._levels(uow, offer.tpl_number, offer.quota_year)):
                balances[n] = uow.quota.release(level.tpl_number, level.quota_year, returned_measure)
                if balances[n] is None:
                    raise LookupError(f"level {level.tpl_number}/{level.quota_year} has less than {returned_measure} charged")
                uow.quota.record(level.tpl_number, level.quota_year, now, -returned_measure, offer.claim_id, kind)
        uow.claims.set_balances(offer.claim_id, certificate_remaining, balances[0], balances[1])
        record = dataclasses.replace(
            record, certificate_remaining=certificate_remaining, level_remaining=balances[0], aggregate_remaining=balances[1]
        )
        uow.audit.append(now, "OFFER_" + ("LAPSED" if kind == "LAPSE" else "ANSWERED"), subject(record), {
            **facts(record), "offered": format_quantity(offer.granted_quantity), "returned_measure": format_quantity(returned_measure),
        })
        return record

    def get(self, entry_number: str, line_number: int) -> ClaimRecord:
        entry = canonical_entry_number(entry_number)
        if entry is None:
            raise _field_error("ENTRY_NUMBER_MALFORMED", "entry_number", "must be XXX-NNNNNNN-C with a valid check digit")
        with UnitOfWork(self.database, write=False) as uow:
            revisions = uow.claims.revisions(entry, line_number)
        if not revisions:
            raise DomainError("CLAIM_NOT_FOUND", "no claim for this entry line", ErrorKind.NOT_FOUND)
        return revisions[-1]

    def usage(self, country: str, number: str, viewer_importer: str | None = None) -> CertificateUsage:
        missing = [Finding("FIELD_REQUIRED", n, "is required") for n, v in (("issuing_country", country), ("certificate_number", number)) if not v]
        if missing:
            raise DomainError("FIELD_REQUIRED", "required fields are missing", ErrorKind.INVALID, missing)
        with UnitOfWork(self.database, write=False) as uow:
            found = uow.certificates.on_file(country, number)
            if found is None:
                raise DomainError("CERTIFICATE_NOT_FOUND", "no such certificate", ErrorKind.NOT_FOUND)
            certificate, head = found
            if viewer_importer is not None and viewer_importer != certificate.importer_of_record:
                raise DomainError(
                    "NOT_YOUR_CERTIFICATE", "an importer may only see the usage of certificates that name it", ErrorKind.PERMISSION
                )
            uses = [c for c in uow.claims.for_certificate(country, number) if c.held_on_certificate > 0]
        return CertificateUsage(country, number, certificate.importer_of_record, head.unit, head.quantity, head.used_quantity, uses)

    def allocate_due_openings(self) -> bool:
        """Allocate the current year's opening batch if its window has closed and any review is over
        (QuotaCalendar.opening_final; a timer calls this)."""
        return self.batches.allocate_due_openings()

    def run_due_batch(self) -> bool:
        """Run the latest passed daily cutoff's batch if it is due (a timer calls this)."""
        return self.batches.run_due_batch()

    def calendar_today(self) -> dt.date:
        return self.clock.now().astimezone(self.calendar.timezone).date()

    # -- deciding -------------------------------------------------------------------------------------

    def _validated(self, draft: EntryLineDraft, prefix: str = "line", *, post_importation: bool = False) -> tuple[EntryLine, str]:
        line, findings = validate_entry_line(draft, self.references.current().tpls.entry_types)
        if line is not None:
            findings = future_findings(line, self.clock.now(), self.calendar_today(), post_importation=post_importation)
        if findings:
            if prefix != "line":
                findings = [dataclasses.replace(f, field=prefix + f.field[len("line"):]) for f in findings]
            raise DomainError(findings[0].code, "the entry summary line has invalid fields", ErrorKind.INVALID, findings)
        assert line is not None
        return line, line_digest(draft)

    def _read_first(self, uow: UnitOfWork, references: References, line: EntryLine) -> FirstReads:
        """What a new claim's transaction reads before it decides, none depending on another: the
        line's revisions, the entry's parties, the certificate on file at presentation and the claim's
        level, read together on PostgreSQL (one round trip; plain reads, no lock), on SQLite each where
        it is first used, as before. The level only once this process knows its year's opening
        complete: before that, period_opened may share-lock the level first, and the level is read
        after that lock, as it always was."""
        revisions = uow.claims.revisions_read(line.entry_number, line.line_number)
        parties = uow.claims.entry_parties_read(line.entry_number)
        on_file = uow.certificates.on_file_at_read(line.country_of_origin, line.certificate_number, line.presentation_time())
        year = line.date_of_importation.year
        level = (uow.quota.level_read(line.tpl_number, year)
                 if year in self.batches.opened_years and references.tpls.tpl(line.tpl_number) is not None else None)
        uow.read_together(revisions, parties, on_file, *([level] if level is not None else []))
        return FirstReads(revisions, parties, on_file, level)

    def _check_entry_parties(self, uow: UnitOfWork, line: EntryLine, parties: tuple[str, str] | None | Unread = UNREAD) -> None:
        """The entry's parties on file (`parties`, if already read) must be the line's; the first line records them."""
        if isinstance(parties, Unread):
            parties = uow.claims.entry_parties(line.entry_number)
        if parties is None:
            uow.claims.add_entry(line.entry_number, line.importer_of_record, line.filer_code)
        elif parties != (line.importer_of_record, line.filer_code):
            raise DomainError(
                "ENTRY_NUMBER_REUSED",
                "this entry number belongs to another importer's entry; entry numbers are never reused",
                ErrorKind.ALREADY_EXISTS,
            )

    def _on_file(
        self, uow: UnitOfWork, line: EntryLine, presented: dt.datetime, found: VersionOnFile | None | Unread = UNREAD,
    ) -> tuple[CertificateOnFile | None, bool]:
        """The version on file at `presented` (`found`, if already read), and whether one arrived only
        later. A version replaced since still counts (it was on file); a cancellation, whenever it came,
        withdraws the certificate: nothing can be charged to it any more."""
        if isinstance(found, Unread):
            found = uow.certificates.on_file_at(line.country_of_origin, line.certificate_number, presented)
        if found is None:
            later = uow.certificates.head(line.country_of_origin, line.certificate_number) is not None
            return None, later
        head = found.head
        return CertificateOnFile(
            found.certificate, found.version, status_at_presentation(found.status, head.status), head.remaining_quantity,
            found.receipt_id, found.digest, head.version,
        ), False

    @staticmethod
    def _aggregate_key(uow: UnitOfWork, claim: ClaimRecord) -> list[tuple[str, int]]:
        row = uow.quota.level(claim.tpl_number, claim.quota_year)
        return [(row.aggregate, claim.quota_year)] if row is not None and row.aggregate else []

    def _levels(self, uow: UnitOfWork, tpl_number: str, year: int, row: LevelRow | None | Unread = UNREAD) -> list[Level]:
        """The claim's level and any aggregate ceiling; `row`: the level's row, if already read."""
        if isinstance(row, Unread):
            row = uow.quota.level(tpl_number, year)
        if row is None:
            return []
        levels = [self.calendar.level(row)]
        if row.aggregate:
            aggregate = uow.quota.level(row.aggregate, year)
            if aggregate is not None:
                levels.append(self.calendar.level(aggregate))
        return levels

    def _plan(
        self,
        uow: UnitOfWork,
        references: References,
        line: EntryLine,
        now: dt.datetime,
        *,
        digest: str,
        revision: int,
        post: bool,
        opened: bool,
        presented: dt.datetime | None = None,
        field: str = "line",
        read: FirstReads | None = None,
    ) -> Plan:
        """The decision on `line`, from what the transaction reads (`read`: what it read already, at the
        line's own presentation time)."""
        assert read is None or presented is None
        on_file, transmitted_later = self._on_file(uow, line, presented or line.presentation_time(), read.on_file.answer if read else UNREAD)
        tpl = references.tpls.tpl(line.tpl_number)
        measure_unit = tpl.measure_unit if tpl else ""
        # Collected as plain values and made into a record once at the end (dataclasses.replace on a
        # 31-field record, three times a claim, was a measurable share of its CPU).
        base: dict[str, object] = dict(
            claim_id=new_id("C"),
            entry_number=line.entry_number,
            line_number=line.line_number,
            revision=revision,
            request_digest=digest,
            filer_code=line.filer_code,
            importer_of_record=line.importer_of_record,
            issuing_country=line.country_of_origin,
            certificate_number=line.certificate_number,
            certificate_version=on_file.version if on_file else 0,
            certificate_receipt_id=on_file.receipt_id if on_file else "",
            certificate_digest=on_file.digest if on_file else "",
            tpl_number=line.tpl_number,
            quota_year=line.date_of_importation.year,
            decision="",
            reasons=(),
            mismatches=(),
            claimed_quantity=line.quantity,
            unit=line.unit,
            claimed_measure=Decimal(0),
            measure_unit=measure_unit,
            conversion_factor="",
            factor_version=references.conversion.version,
            granted_quantity=Decimal(0),
            granted_measure=Decimal(0),
            certificate_remaining=on_file.remaining if on_file else None,
            level_remaining=None,
            aggregate_remaining=None,
            presentation_time=presented or line.presentation_time(),
            decided_at=now,
            post_importation=post,
            proration_rate="",
            reversed_at=None,
            reversal_kind=None,
        )
        conversion: Conversion | None = None
        unconvertible: DomainError | None = None  # only an error if the claim gets as far as charging
        if tpl is not None:
            try:
                conversion = convert(references.conversion, line.quantity, line.unit, line.htsus_number, tpl.measure_unit)
            except DomainError as error:
                unconvertible = error
        if conversion is not None:
            unstorable = storable_code(conversion.measure)
            if unstorable is not None:
                # Refused before anything is written: the measure is what every balance is kept in.
                raise _field_error(
                    unstorable, f"{field}.quantity",
                    f"converts to {format_quantity(conversion.measure)} {measure_unit}, which cannot be charged exactly"
                    " (measures are kept below 10^12 with six decimal places)",
                )
            base.update(claimed_measure=conversion.measure, conversion_factor=str(conversion.factor))
        level_row = read.level.answer if read is not None and read.level is not None else UNREAD
        levels = self._levels(uow, line.tpl_number, line.date_of_importation.year, level_row) if tpl else []
        if levels:
            base.update(level_remaining=levels[0].remaining, aggregate_remaining=levels[1].remaining if len(levels) > 1 else None)

        screening = screen(line, references.tpls.partner(line.country_of_origin), on_file, transmitted_later=transmitted_later)
        if not screening.passed:
            assert screening.decision is not None
            base.update(
                decision=screening.decision.value,
                reasons=screening.reasons,
                mismatches=tuple((m.field, m.claimed, m.transmitted) for m in screening.mismatches),
            )
            return Plan(ClaimRecord(**base), levels, on_file.head_version if on_file else 0)  # type: ignore[arg-type]  # base: ClaimRecord fields
        if unconvertible is not None:
            raise unconvertible
        assert tpl is not None and conversion is not None
        if not levels:
            base.update(decision=Decision.MFN_REQUIRED.value, reasons=("PERIOD_CLOSED", "NO_LEVEL_FOR_YEAR"))
            return Plan(ClaimRecord(**base), levels, on_file.head_version if on_file else 0)  # type: ignore[arg-type]  # base: ClaimRecord fields
        # Not opened although the window has closed: headquarters' review of the opening batch (a
        # program's review delay; QuotaCalendar.opening_final).
        under_review = not opened and now >= self.calendar.window_closes(line.date_of_importation.year)
        context = QuotaContext(levels, now, opened, post, self.calendar.critical_share, under_review)
        allocation = allocate(line, conversion, context, presented)
        base.update(
            decision=allocation.decision.value,
            reasons=allocation.reasons,
            granted_quantity=allocation.grant.quantity,
            granted_measure=allocation.grant.measure,
            presentation_time=allocation.presentation_time,
        )
        return Plan(ClaimRecord(**base), levels, on_file.head_version if on_file else 0)  # type: ignore[arg-type]  # base: ClaimRecord fields

    # -- charging -------------------------------------------------------------------------------------

    def _commit_plan(
        self, uow: UnitOfWork, plan: Plan, now: dt.datetime, *, commit: bool = True,
        audit_before: Sequence[tuple[str, str, dict[str, object]]] = (),
    ) -> ClaimRecord:
        record = plan.record
        ledger = uow.certificate_ledger
        if record.decision in CHARGED:
            remaining = ledger.charge(
                record.issuing_country, record.certificate_number, record.granted_quantity, entries=1, version=plan.head_version
            )
            if remaining is None:
                raise LostRace
            level_remaining, aggregate_remaining = self._charge_levels(uow, plan.levels, record.granted_measure, record.claim_id, now, "CHARGE")
            record = dataclasses.replace(
                record, certificate_remaining=remaining, level_remaining=level_remaining, aggregate_remaining=aggregate_remaining
            )
        elif record.decision in WAITING:
            # Reserve the certificate now so that waiting claims can never overuse it; the opening
            # allocation or the cutoff batch gives back what it does not grant.
            remaining = ledger.charge(
                record.issuing_country, record.certificate_number, record.claimed_quantity, entries=1, version=plan.head_version
            )
            if remaining is None:
                raise LostRace
            record = dataclasses.replace(record, certificate_remaining=remaining)
            if holds_its_level(record.decision, record.reasons):  # (during the opening's review: Batches._hold_for_pending)
                self._hold(uow, plan.levels, now)
        uow.claims.add(record)
        uow.audit.append_many(now, [*audit_before, ("DECISION", subject(record), facts(record))])
        if commit:
            uow.commit()
            if record.decision in CHARGED:
                self._nudge()
        return record

    def _hold(self, uow: UnitOfWork, levels: list[Level], now: dt.datetime) -> None:
        """A claim waits for the cutoff batch: its level goes on hold, and so does any aggregate ceiling
        it also charges (else a claim of another member presented later could take the aggregate's room
        at once, ahead of this one). A level already on hold is share-locked until this claim commits,
        so that the batch that lifts holds sees this claim pending (server/service/batches.py, _lift_holds). Levels are taken in
        the order a batch step locks them (by TPL number), so that the two never wait for each other."""
        put: list[Level] = []
        for level in sorted(levels, key=lambda level: level.tpl_number):
            if level.held or not uow.quota.put_on_hold(level.tpl_number, level.quota_year, now):
                uow.quota.hold_level(level.tpl_number, level.quota_year)
            else:
                put.append(level)
        # No claim charges an allotment of a level on hold: whoever puts it on hold folds them back (no
        # room is carved while it is on hold). Only then: a share lock is never upgraded (deadlock).
        self.allotments.fold(uow, put)

    def _charge_levels(
        self, uow: UnitOfWork, levels: list[Level], measure: Decimal, claim_id: str, now: dt.datetime, kind: str
    ) -> tuple[Decimal, Decimal | None]:
        """Charge each level, conditionally on it not being on hold and on the charge staying within its
        critical share (else the claim starts again and waits for the batch); (the member's remaining,
        the aggregate's remaining or None)."""
        balances: list[Decimal] = []
        share = self.calendar.critical_share
        if self.allotments.charge(uow, levels, measure, now):
            # Charged to this process's allotments (server/service/allotments.py): the balances as this
            # transaction read them, less this charge (other replicas' charges meanwhile are not seen).
            balances = [level.remaining - measure for level in levels]
        else:
            self.allotments.fold(uow, levels)  # the level rows then hold every charge and no carved room
            for level in levels:
                remaining = uow.quota.charge_open(level.tpl_number, level.quota_year, measure, critical_cap(level.limit, share))
                if remaining is None:
                    raise LostRace
                balances.append(remaining)
        for level in levels:
            uow.quota.record(level.tpl_number, level.quota_year, now, measure, claim_id, kind)
        return balances[0], balances[1] if len(balances) > 1 else None

    def _release(
        self, uow: UnitOfWork, read: ClaimRecord, now: dt.datetime, kind: ReversalKind, reason: str
    ) -> tuple[ClaimRecord, tuple[str, str, dict[str, object]]]:
        """Reverse a live claim once: first mark it, conditionally on it being live with the decision
        read (a second reversal, or the opening deciding it meanwhile, makes this transaction start
        again from what is stored now); then give back what the marked row holds, each release
        conditional on the balance it changes."""
        claim = uow.claims.mark_reversed(read, now, kind.value)
        if claim is None:
            raise LostRace
        returned = claim.held_on_certificate
        certificate_remaining = claim.certificate_remaining
        if returned > 0:
            certificate_remaining = uow.certificate_ledger.release(claim.issuing_country, claim.certificate_number, returned, entries=1)
            if certificate_remaining is None:
                raise LookupError(f"certificate {claim.issuing_country}/{claim.certificate_number} holds less than {returned}")
        balances: list[Decimal | None] = [claim.level_remaining, claim.aggregate_remaining]
        if claim.granted_measure > 0:
            self.allotments.fold(uow, [(claim.tpl_number, claim.quota_year), *self._aggregate_key(uow, claim)])
            levels = self._levels(uow, claim.tpl_number, claim.quota_year)
            for n, level in enumerate(levels):
                balances[n] = uow.quota.release(level.tpl_number, level.quota_year, claim.granted_measure)
                if balances[n] is None:
                    raise LookupError(f"level {level.tpl_number}/{level.quota_year} has less than {claim.granted_measure} charged")
                # Unique per claim, level and kind: a claim is never released twice, whatever the code path.
                uow.quota.record(level.tpl_number, level.quota_year, now, -claim.granted_measure, claim.claim_id, "REVERSAL")
        uow.claims.set_balances(claim.claim_id, certificate_remaining, balances[0], balances[1])
        record = dataclasses.replace(
            claim, certificate_remaining=certificate_remaining, level_remaining=balances[0], aggregate_remaining=balances[1]
        )
        audit: tuple[str, str, dict[str, object]] = ("REVERSAL", subject(record), {
            "claim_id": claim.claim_id, "kind": kind.value, "reason": reason,
            "returned_quantity": str(returned), "returned_measure": str(claim.granted_measure),
            "certificate": f"{claim.issuing_country}/{claim.certificate_number}@{claim.certificate_version}", "unit": claim.unit,
        })
        return record, audit  # appended by the caller, last

    # -- plumbing -------------------------------------------------------------------------------------

    def _in_transaction(self, attempt: Callable[[UnitOfWork, dt.datetime, References], _T]) -> _T:
        """Run `attempt(uow, now, references)` in a write transaction; start again from fresh balances
        if it lost a race (a conditional update or a unique key found another transaction first).

        The reference tables are read before the transaction opens: a unit of work never opens
        another inside itself (that would take a second admission slot while holding one)."""
        references = [self.references.current()]

        def before_next_attempt(error: Exception) -> bool:
            if isinstance(error, NeedsAllotment):
                # One refill a call: if the room is gone again (or none could be spared), charge the
                # levels themselves, so that a claim never chases its own process's allotment.
                refilled = DIRECT.get() is False and self.allotments.refill(error.levels, error.measure)
                DIRECT.set(None if refilled else True)
            elif isinstance(error, OpeningPending):
                self.batches.run_opening(error.year)  # then decide this claim after the whole batch
            elif not isinstance(error, (LostRace, IntegrityError)):  # another transaction got there first
                return False
            references[0] = self.references.current()  # outside any unit of work
            return True

        direct = DIRECT.set(False)
        try:
            return run_in_transaction(
                self.database, lambda uow: attempt(uow, self.clock.now(), references[0]), between=before_next_attempt
            )
        except (LostRace, IntegrityError, NeedsAllotment, OpeningPending):
            raise DomainError("CONTENTION", "the balances kept changing; retry", ErrorKind.UNAVAILABLE) from None
        finally:
            DIRECT.reset(direct)

    def _nudge(self) -> None:
        if self.events is not None:
            self.events.nudge()


def _field_error(code: str, field: str, description: str) -> DomainError:
    return DomainError(code, f"{field} {description}", ErrorKind.INVALID, [Finding(code, field, description)])
