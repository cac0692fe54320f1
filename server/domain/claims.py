"""Deciding a TPL claim: match the entry line against the partner's transmission, then the levels."""
from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from server.domain.batch import BatchDecision, BatchOutcome, must_wait
from server.domain.certificate import Certificate
from server.domain.conversion import Conversion
from server.domain.entry import EntryLine
from server.domain.errors import DomainError, ErrorKind, Finding
from server.domain.quantity import format_quantity
from server.domain.quota import Grant, Level, grant_first_come, opening_grant
from server.domain.reference import Partner
from server.domain.transmission import CertificateStatus


class Decision(enum.Enum):
    PREFERENTIAL = "PREFERENTIAL"
    PARTIAL = "PARTIAL"
    MFN_REQUIRED = "MFN_REQUIRED"
    ECERT_NOT_REQUIRED = "ECERT_NOT_REQUIRED"
    QUEUED = "QUEUED"
    # An oversubscribed opening's prorated share, reserved (level and certificate) for the filer to
    # accept in all, in part or not at all within five business days (CSMS 16-000886); not a grant.
    PRORATED_OFFER = "PRORATED_OFFER"
    # Its level is on hold near fill: recorded, the certificate quantity reserved, nothing charged; decided
    # at the next daily cutoff batch in presentation-time order (server/domain/batch.py).
    PENDING = "PENDING"


@dataclass(frozen=True)
class Mismatch:
    field: str
    claimed: str
    transmitted: str


@dataclass(frozen=True)
class CertificateOnFile:
    """The certificate version customs had received at the claim's presentation time, with the
    certificate's balance and status as they stand now."""

    certificate: Certificate
    version: int
    status: CertificateStatus
    remaining: Decimal
    receipt_id: str = ""
    digest: str = ""
    # The certificate's current version: a charge is written only if it is still the current one.
    head_version: int = 0


@dataclass(frozen=True)
class Screening:
    """The outcome of matching before any quota is looked at: final unless `passed`."""

    decision: Decision | None
    reasons: tuple[str, ...] = ()
    mismatches: tuple[Mismatch, ...] = ()

    @property
    def passed(self) -> bool:
        return self.decision is None


@dataclass(frozen=True)
class Allocation:
    decision: Decision
    reasons: tuple[str, ...]
    grant: Grant
    presentation_time: dt.datetime


def status_at_presentation(version_status: CertificateStatus, current_status: CertificateStatus) -> CertificateStatus:
    """The status a claim is screened with: that of the version on file at its presentation time, except
    that a cancellation withdraws the certificate whenever it came (nothing can be charged to a
    certificate the partner canceled; README "Claims and quota")."""
    return CertificateStatus.CANCELED if current_status is CertificateStatus.CANCELED else version_status


def mismatches(line: EntryLine, certificate: Certificate) -> list[Mismatch]:
    """Every element of the claim that the transmission does not support, by field."""
    found = []

    def differ(name: str, claimed: object, transmitted: object) -> None:
        found.append(Mismatch(name, str(claimed), str(transmitted)))

    if line.country_of_origin != certificate.issuing_country:
        differ("country_of_origin", line.country_of_origin, certificate.issuing_country)
    if line.tpl_number != certificate.tpl_number:
        differ("tpl_number", line.tpl_number, certificate.tpl_number)
    # A certificate may name the goods at 6 or 8 digits; the entry's 10-digit number must fall under it.
    if not line.htsus_number.startswith(certificate.htsus_number):
        differ("htsus_number", line.htsus_number, certificate.htsus_number)
    if line.importer_of_record != certificate.importer_of_record:
        differ("importer_of_record", line.importer_of_record, certificate.importer_of_record)
    if line.unit != certificate.unit:
        differ("unit", line.unit, certificate.unit)
    if not certificate.issue_date <= line.date_of_importation <= certificate.last_valid_date:
        differ(
            "date_of_importation",
            line.date_of_importation.isoformat(),
            f"{certificate.issue_date.isoformat()}..{certificate.last_valid_date.isoformat()}",
        )
    if line.date_of_importation.year != certificate.quota_year:
        differ("quota_year", line.date_of_importation.year, certificate.quota_year)
    return found


def screen(
    line: EntryLine, partner: Partner | None, on_file: CertificateOnFile | None, *, transmitted_later: bool = False
) -> Screening:
    """Matching before quota. `on_file` is the version customs had received at the claim's
    presentation time (the eCERT notice: the transmission must be on file upon entry summary, else the
    MFN rate applies); `transmitted_later` says a transmission arrived only after that instant, which
    does not count for this claim (a re-filed entry summary would get a new presentation time)."""
    if partner is not None and line.date_of_importation < partner.ecert_effective_date:
        return Screening(Decision.ECERT_NOT_REQUIRED, ("BEFORE_ECERT_EFFECTIVE_DATE",))
    if on_file is None:
        reasons = ("NO_TRANSMISSION", "TRANSMITTED_AFTER_PRESENTATION") if transmitted_later else ("NO_TRANSMISSION",)
        return Screening(Decision.MFN_REQUIRED, reasons)
    if on_file.status is CertificateStatus.CANCELED:
        return Screening(Decision.MFN_REQUIRED, ("CERTIFICATE_CANCELED",))
    found = mismatches(line, on_file.certificate)
    if found:
        return Screening(Decision.MFN_REQUIRED, ("DATA_MISMATCH",), tuple(found))
    if on_file.remaining <= 0:
        return Screening(Decision.MFN_REQUIRED, ("CERTIFICATE_EXHAUSTED",))
    if line.quantity > on_file.remaining:
        quantity = Mismatch("quantity", format_quantity(line.quantity), format_quantity(on_file.remaining))
        return Screening(Decision.MFN_REQUIRED, ("QUANTITY_EXCEEDS_CERTIFICATE",), (quantity,))
    return Screening(None)


@dataclass(frozen=True)
class QuotaContext:
    """The levels a claim charges (its own TPL first, then any aggregate) as they stand now."""

    levels: list[Level]
    now: dt.datetime
    # Whether the period has opened: its opening allocation exists (every replica reads the same row),
    # or, before anybody began it, this replica's clock says so.
    opened: bool
    post_importation: bool = False
    # The share of a level past which its claims wait for the cutoff batch (None: never; the opening
    # batch's own decisions and tests of first come, first served alone).
    critical_share: Decimal | None = None
    # The opening window has closed and headquarters' review of the opening batch is not over (the
    # program's review delay): the period has not opened, and lines presented after the window wait.
    under_review: bool = False


# Presented after the opening window while headquarters reviews the opening batch (QB 16-128).
OPENING_UNDER_REVIEW = "OPENING_UNDER_REVIEW"


def holds_its_level(decision: str, reasons: tuple[str, ...]) -> bool:
    """Whether a claim so decided puts its level on hold: one pending near fill does (so that later
    claims wait with it for the cutoff batch); one pending during the opening's review does not: the
    opening puts those claims' levels on hold as it completes, once they can be decided after it."""
    return decision == Decision.PENDING.value and OPENING_UNDER_REVIEW not in reasons


def allocate(
    line: EntryLine, conversion: Conversion, context: QuotaContext, presented: dt.datetime | None = None
) -> Allocation:
    """First come, first served against every level the claim charges. `presented` overrides the
    line's own presentation time (a corrected line keeps its original priority)."""
    member = context.levels[0]
    presented = presented or line.presentation_time()
    in_window = False
    if not context.post_importation:
        if presented < member.opens_at and member.refuse_before_opening:
            # Presented before the opening date: no quota status (quota bulletins, QB 24-111); the line
            # must be presented again, and then takes its new presentation time.
            return Allocation(Decision.MFN_REQUIRED, ("PRESENTED_BEFORE_OPENING",), Grant(Decimal(0), Decimal(0)), presented)
        if presented < member.opens_at or (member.window_closes_at is not None and presented < member.window_closes_at):
            # Presented in the opening window: batched with the time stamp of the opening moment, 12:00
            # noon Eastern when the window closes (QB 16-128, as DESIGN.md section 1 quotes it), and
            # decided with the opening batch then (prorated if oversubscribed).
            presented = member.window_closes_at or member.opens_at
            in_window = True
    if not context.opened:
        if context.under_review and not in_window:
            # Presented after the window while headquarters reviews the opening batch (QB 16-128): it
            # comes after that whole batch, so it waits for the first cutoff batch once the opening is
            # final, and is decided there in presentation order (19 CFR 132.12).
            return Allocation(Decision.PENDING, (OPENING_UNDER_REVIEW,), Grant(Decimal(0), Decimal(0)), presented)
        # Nothing is charged to a period before it opens, whatever instants the claim carries: it waits
        # for the opening batch (a post-importation claim too).
        return Allocation(Decision.QUEUED, ("PERIOD_NOT_YET_OPEN",), Grant(Decimal(0), Decimal(0)), presented)
    if not context.post_importation and presented >= member.closes_at:
        # Priority and period go by the presentation time (19 CFR 132.11), which customs' own systems
        # stamp: a line presented after its period closed gets nothing from it. (Until 2026-11 a 30-day
        # grace after the close applied here; no source for it was found, so it is gone.)
        return Allocation(Decision.MFN_REQUIRED, ("PERIOD_CLOSED",), Grant(Decimal(0), Decimal(0)), presented)

    if context.critical_share is not None and must_wait(context.levels, line.quantity * conversion.factor, context.critical_share):
        # Near fill the order matters: presentation time decides, at the next cutoff (domain/batch.py).
        return Allocation(Decision.PENDING, ("LEVEL_ON_HOLD",), Grant(Decimal(0), Decimal(0)), presented)
    binding = min(context.levels, key=lambda level: level.remaining)
    grant = grant_first_come(line.quantity, conversion.factor, binding.remaining)
    filled_reason = "LEVEL_FILLED" if binding is member else "AGGREGATE_FILLED"
    if grant.quantity <= 0:
        return Allocation(Decision.MFN_REQUIRED, (filled_reason,), grant, presented)
    if grant.quantity < line.quantity:
        return Allocation(Decision.PARTIAL, (filled_reason, "PARTIAL_FILL"), grant, presented)
    return Allocation(Decision.PREFERENTIAL, (), grant, presented)


@dataclass(frozen=True)
class OpeningDecision:
    decision: Decision
    reasons: tuple[str, ...]
    grant: Grant


def decide_at_opening(quantity: Decimal, factor: Decimal, rate: Fraction, room: Decimal) -> OpeningDecision:
    """A claim of the opening batch, at its level's rate (see quota.opening_rates). `room` is what its
    levels still hold: the rates guarantee the grant fits, except for a claim queued after they were
    set (a replica whose clock lagged), which is then cut to the room, first come first served."""
    grant = opening_grant(quantity, factor, rate)
    if grant.measure > room:
        grant = grant_first_come(quantity, factor, room)
        if grant.quantity > 0:
            return OpeningDecision(Decision.PARTIAL, ("LEVEL_FILLED", "PARTIAL_FILL"), grant)
        return OpeningDecision(Decision.MFN_REQUIRED, ("LEVEL_FILLED",), grant)
    if grant.quantity >= quantity:
        return OpeningDecision(Decision.PREFERENTIAL, (), grant)
    if grant.quantity > 0:
        # CSMS 16-000886: CBP rejects a prorated entry summary with the prorated amount reserved; the
        # filer has five business days to claim all, part or none of it. An offer, not a grant.
        return OpeningDecision(Decision.PRORATED_OFFER, ("PRORATED",), grant)
    return OpeningDecision(Decision.MFN_REQUIRED, ("PRORATED", "LEVEL_FILLED"), grant)


def decided_in_batch(decision: BatchDecision, member: str) -> tuple[Decision, tuple[str, ...]]:
    """A pending claim's decision and reasons from what the cutoff batch gave it (domain/batch.py)."""
    filled = "LEVEL_FILLED" if decision.binding in ("", member) else "AGGREGATE_FILLED"
    if decision.outcome is BatchOutcome.GRANTED:
        return Decision.PREFERENTIAL, ()
    if decision.outcome is BatchOutcome.CUT:
        if decision.grant.quantity > 0:
            return Decision.PARTIAL, (filled, "PARTIAL_FILL")
        return Decision.MFN_REQUIRED, (filled,)
    if decision.grant.quantity > 0:
        # Simultaneous claims sharing what was left: an offer, as at the opening (CSMS 16-000886).
        return Decision.PRORATED_OFFER, ("PRORATED",)
    return Decision.MFN_REQUIRED, ("PRORATED", filled)


@dataclass(frozen=True)
class OfferAnswer:
    decision: Decision
    reasons: tuple[str, ...]
    grant: Grant


def answer_offer(offered: Decimal, accepted: Decimal, factor: Decimal) -> OfferAnswer:
    """The filer's answer to a prorated offer: `accepted` of the `offered` quantity (whole units of the
    goods, at most what was offered; 0 declines). What is accepted is granted with the claim's
    original presentation time; the rest goes back to the level and the certificate."""
    if accepted < 0 or accepted > offered or accepted != accepted.to_integral_value():
        raise DomainError(
            "ACCEPTED_QUANTITY_INVALID", f"accept a whole quantity from 0 to the {format_quantity(offered)} offered",
            ErrorKind.INVALID, [Finding("ACCEPTED_QUANTITY_INVALID", "accepted_quantity", f"must be a whole number from 0 to {format_quantity(offered)}")],
        )
    if accepted == 0:
        return OfferAnswer(Decision.MFN_REQUIRED, ("PRORATED", "OFFER_DECLINED"), Grant(Decimal(0), Decimal(0)))
    return OfferAnswer(Decision.PARTIAL, ("PRORATED", "OFFER_ACCEPTED"), Grant(accepted, accepted * factor))


LAPSED_OFFER = OfferAnswer(Decision.MFN_REQUIRED, ("PRORATED", "OFFER_LAPSED"), Grant(Decimal(0), Decimal(0)))


def corrected_presentation(held: Decimal, corrected_quantity: Decimal, original: dt.datetime) -> dt.datetime | None:
    """The presentation time a corrected line is ranked by. A correction keeps the original time only
    for what the line held (a grant, or what a waiting claim reserved) and asks no more than that; a
    line that held nothing (refused, e.g. for a missing or mismatched certificate) and any increase
    take the corrected line's own, new presentation time (None): a resubmitted entry summary gets a new
    presentation time (CSMS 13-000217), and a correction never earns an earlier slot for more than it
    already had."""
    if held > 0 and corrected_quantity <= held:
        return original
    return None


def post_importation_deadline(date_of_importation: dt.date) -> dt.date:
    """One year after the date of importation, by the calendar (29 February -> 28 February)."""
    try:
        return date_of_importation.replace(year=date_of_importation.year + 1)
    except ValueError:
        return date_of_importation.replace(year=date_of_importation.year + 1, day=28)


def check_post_importation_window(date_of_importation: dt.date, today: dt.date) -> None:
    deadline = post_importation_deadline(date_of_importation)
    if today > deadline:
        raise DomainError(
            "POST_IMPORTATION_WINDOW_CLOSED",
            f"a post-importation claim had to be filed by {deadline.isoformat()}",
            ErrorKind.PRECONDITION,
            metadata={"deadline": deadline.isoformat()},
        )
