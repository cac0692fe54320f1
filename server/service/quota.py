"""Quota status (now or as of a past instant) and the event stream of level state changes."""
from __future__ import annotations

import dataclasses
import datetime as dt
import queue
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from contract.identity import Identity, Role
from server.adapters.claim_repository import LevelRow
from server.adapters.database import Database
from server.domain.business_days import add_business_days, first_business_day
from server.domain.errors import DomainError, ErrorKind, Finding
from server.domain.quota import Level, QuotaEventKind, QuotaState, event_between, quota_period
from server.domain.reference import OpeningRule
from server.service.clock import Clock
from server.service.unit_of_work import UnitOfWork

OFFER_BUSINESS_DAYS = 5

@dataclass(frozen=True)
class QuotaCalendar:
    """When periods open: calendar years whose opening date is the first business day, with an
    opening window from 00:00 to 12:00 noon in customs' time zone (Eastern) that day (CBP quota
    bulletins QB 16-128 and QB 24-111: lines presented in the window count as presented at the
    opening moment; presented before it, they get no quota status)."""

    timezone: ZoneInfo
    critical_share: Decimal
    # The program's opening rule, from its current reference data (server/app.py wires it).
    rule: Callable[[], OpeningRule] = OpeningRule
    # The daily cutoff in `timezone` at which claims pending near fill are decided (CBP: 20:30 Eastern,
    # "quota entries finalize after daily batching at 8:30 PM ET", QB 23-128).
    batch_cutoff: dt.time = dt.time(20, 30)

    def last_cutoff(self, at: dt.datetime) -> dt.datetime:
        """The latest daily cutoff at or before `at`."""
        local = at.astimezone(self.timezone)
        cutoff = dt.datetime.combine(local.date(), self.batch_cutoff, self.timezone)
        if cutoff > local:
            cutoff = dt.datetime.combine(local.date() - dt.timedelta(days=1), self.batch_cutoff, self.timezone)
        return cutoff.astimezone(dt.timezone.utc)

    def next_cutoff(self, at: dt.datetime) -> dt.datetime:
        """The first daily cutoff after `at`: when a claim pending now is decided."""
        local = self.last_cutoff(at).astimezone(self.timezone)
        return dt.datetime.combine(local.date() + dt.timedelta(days=1), self.batch_cutoff, self.timezone).astimezone(dt.timezone.utc)

    def offer_expires_after(self, at: dt.datetime) -> dt.datetime:
        """When a batch's prorated offers lapse: the end (midnight) of the fifth business day after the
        batch's date (CSMS 16-000886: five business days to accept all, part or none)."""
        last = add_business_days(at.astimezone(self.timezone).date(), OFFER_BUSINESS_DAYS)
        return dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), self.timezone).astimezone(dt.timezone.utc)

    def opening_date(self, year: int) -> dt.date:
        return first_business_day(year) if self.rule().first_business_day else dt.date(year, 1, 1)

    def bounds(self, year: int) -> tuple[dt.datetime, dt.datetime]:
        """When lines may first be presented for the period (its opening date, 00:00), and the first
        instant after the period."""
        _, last = quota_period(year)
        opens = dt.datetime.combine(self.opening_date(year), dt.time(), self.timezone).astimezone(dt.timezone.utc)
        closes = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), self.timezone).astimezone(dt.timezone.utc)
        return opens, closes

    def offer_expires(self, year: int) -> dt.datetime:
        """When the opening's prorated offers lapse: the end (midnight) of the fifth business day after
        the day the opening batch is final (CSMS 16-000886: five business days to accept all, part or
        none); without a review, the opening date."""
        return self.offer_expires_after(self.opening_final(year))

    def window_closes(self, year: int) -> dt.datetime:
        """The end of the opening window (12:00 noon on the opening date for the USMCA TPLs), or the
        opening itself where the program has no window: lines presented until then are the opening batch."""
        ends = self.rule().window_ends
        return dt.datetime.combine(self.opening_date(year), ends or dt.time(), self.timezone).astimezone(dt.timezone.utc)

    def opening_final(self, year: int) -> dt.datetime:
        """When the opening batch is allocated: as the window closes, or, where the program's rule gives
        headquarters a review (QB 16-128: three business days), as many business days later at the
        same time of day. Lines presented after the window and before this wait, PENDING."""
        closes = self.window_closes(year)
        days = self.rule().review_business_days
        if not days:
            return closes
        local = closes.astimezone(self.timezone)
        final = dt.datetime.combine(add_business_days(local.date(), days), local.time(), self.timezone)
        return final.astimezone(dt.timezone.utc)

    def level(self, row: LevelRow, charged: Decimal | None = None) -> Level:
        rule = self.rule()  # read once per level (it is the current reference data's)
        opens, closes = self.bounds(row.quota_year)
        return Level(
            tpl_number=row.tpl_number,
            quota_year=row.quota_year,
            label=row.label,
            measure_unit=row.measure_unit,
            limit=row.limit,
            charged=row.charged if charged is None else charged,
            aggregate=row.aggregate,
            opens_at=opens,
            closes_at=closes,
            window_closes_at=self.window_closes(row.quota_year) if rule.window_ends else None,
            refuse_before_opening=rule.refuse_before_opening,
            held_since=row.held_since,
        )

    def year_of(self, at: dt.datetime) -> int:
        return at.astimezone(self.timezone).year


@dataclass(frozen=True)
class QuotaStatus:
    level: Level
    state: QuotaState
    as_of: dt.datetime
    # When the claims a level on hold keeps pending are decided: the next daily cutoff.
    next_batch_at: dt.datetime | None = None


@dataclass(frozen=True)
class QuotaEvent:
    kind: QuotaEventKind | None  # None: the snapshot sent when a watch starts
    status: QuotaStatus


class QuotaUseCases:
    def __init__(self, database: Database, calendar: QuotaCalendar, clock: Clock):
        self.database = database
        self.calendar = calendar
        self.clock = clock

    def status(self, tpl_number: str, quota_year: int, as_of: dt.datetime | None) -> QuotaStatus:
        if not tpl_number:
            raise DomainError("FIELD_REQUIRED", "tpl_number is required", ErrorKind.INVALID, [Finding("FIELD_REQUIRED", "tpl_number", "is required")])
        year = quota_year or self.calendar.year_of(self.clock.now())
        with UnitOfWork(self.database, write=False) as uow:
            row = uow.quota.level(tpl_number, year)
            if row is None:
                raise DomainError("QUOTA_NOT_FOUND", f"no level for {tpl_number} in {year}", ErrorKind.NOT_FOUND)
            return self._status(uow, row, as_of)

    def list(self, quota_year: int, as_of: dt.datetime | None) -> list[QuotaStatus]:
        year = quota_year or self.calendar.year_of(self.clock.now())
        with UnitOfWork(self.database, write=False) as uow:
            return [self._status(uow, row, as_of) for row in uow.quota.levels(year)]

    def _status(self, uow: UnitOfWork, row: LevelRow, as_of: dt.datetime | None) -> QuotaStatus:
        now = self.clock.now()
        if as_of is not None and as_of > now:
            raise DomainError(
                "AS_OF_IN_FUTURE", "as_of must not be in the future", ErrorKind.INVALID,
                [Finding("AS_OF_IN_FUTURE", "as_of", "must not be in the future")],
            )
        at = as_of or now
        charged = uow.quota.charged_as_of(row.tpl_number, row.quota_year, at) if as_of is not None else None
        if row.held_since is not None and row.held_since > at:
            row = dataclasses.replace(row, held_since=None)  # not yet on hold at that instant
        return self._describe(self.calendar.level(row, charged), at)

    def _describe(self, level: Level, at: dt.datetime) -> QuotaStatus:
        state = level.state_at(at, self.calendar.critical_share)
        pending = level.held and state is not QuotaState.CLOSED
        return QuotaStatus(level, state, at, self.calendar.next_cutoff(at) if pending else None)

    def snapshot(self) -> dict[tuple[str, int], QuotaStatus]:
        now = self.clock.now()
        with UnitOfWork(self.database, write=False) as uow:
            levels = [self.calendar.level(row) for row in uow.quota.all_levels()]
        return {(lv.tpl_number, lv.quota_year): self._describe(lv, now) for lv in levels}


@dataclass(frozen=True)
class Watcher:
    """Who opens a watch. Watches with the same `key` count against one identity's cap (None: a
    caller without a certificate, on a development server, is not capped per identity);
    `may_use_reserved`: whether it may take the slots kept for customs and admins."""

    key: Hashable | None
    may_use_reserved: bool


# Customs' own services and operators must be able to watch however many importers or partners do.
RESERVED_WATCH_ROLES = frozenset({Role.CUSTOMS, Role.ADMIN})


def watcher_for(identity: Identity | None) -> Watcher:
    """The watcher an authenticated caller is (the whole identity its certificate names is the key)."""
    if identity is None:
        return Watcher(None, True)
    return Watcher(identity, identity.role in RESERVED_WATCH_ROLES)


class Subscription:
    def __init__(self, tpl_numbers: frozenset[str], quota_year: int, watcher: Watcher | None = None, ends_at: dt.datetime | None = None):
        self.tpl_numbers = tpl_numbers
        self.quota_year = quota_year
        self.watcher = watcher or Watcher(None, True)
        self.ends_at = ends_at  # None: no maximum duration
        self.events: queue.Queue[QuotaEvent] = queue.Queue(maxsize=10_000)

    def wants(self, status: QuotaStatus) -> bool:
        level = status.level
        return level.quota_year == self.quota_year and (not self.tpl_numbers or level.tpl_number in self.tpl_numbers)

    def remaining(self, now: dt.datetime) -> dt.timedelta | None:
        """How long the watch may still last (zero or less: it is over); None: no limit."""
        return None if self.ends_at is None else self.ends_at - now


class QuotaEventBus:
    """Tells watchers when a level's state or charge changes.

    It compares snapshots of the levels table, so it sees changes made by every replica on the same
    database; a commit in this process nudges it to look at once instead of at the next tick.

    Each watch holds one of the server's worker threads for as long as it lasts, so watches are
    limited: `max_watchers` in all, of which `reserved` only for customs and admins (importers,
    partners and relays cannot take the last ones), at most `per_identity` for one identity, and
    each lasts at most `max_duration` by the service's clock (then the stream ends; a new watch
    starts with a fresh snapshot, so nothing is missed).
    """

    def __init__(
        self,
        quota: QuotaUseCases,
        interval: float = 1.0,
        max_watchers: int = 4,
        *,
        per_identity: int = 2,
        reserved: int = 1,
        max_duration: dt.timedelta | None = dt.timedelta(hours=1),
    ):
        if max_watchers < 1 or per_identity < 1 or reserved < 0 or (max_duration is not None and max_duration <= dt.timedelta(0)):
            raise ValueError("watch limits: at least one watch in all and per identity, no negative reservation, a positive duration")
        self.quota = quota
        self.interval = interval
        self.max_watchers = max_watchers
        self.per_identity = per_identity
        self.reserved = min(reserved, max_watchers)
        self.max_duration = max_duration
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._nudge = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[tuple[str, int], QuotaStatus] = {}

    def subscribe(
        self, tpl_numbers: frozenset[str], quota_year: int, watcher: Watcher | None = None
    ) -> tuple[Subscription, list[QuotaStatus]]:
        watcher = watcher or Watcher(None, True)
        ends_at = None if self.max_duration is None else self.quota.clock.now() + self.max_duration
        subscription = Subscription(tpl_numbers, quota_year, watcher, ends_at)
        with self._lock:
            self._admit(watcher)
            if not self._subscribers:
                self._last = self.quota.snapshot()
            snapshot = [s for s in self._last.values() if subscription.wants(s)]
            self._subscribers.append(subscription)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="quota-events", daemon=True)
                self._thread.start()
        return subscription, sorted(snapshot, key=lambda s: s.level.tpl_number)

    def _admit(self, watcher: Watcher) -> None:
        """Refuse a watch beyond the caller's share; called with the lock held."""
        limits = {"max_watchers": str(self.max_watchers), "reserved": str(self.reserved), "per_identity": str(self.per_identity)}
        if watcher.key is not None:
            held = sum(1 for s in self._subscribers if s.watcher.key == watcher.key)
            if held >= self.per_identity:
                raise DomainError(
                    "TOO_MANY_WATCHES_FOR_CALLER",
                    f"one caller may hold at most {self.per_identity} quota watches at once; close one first",
                    ErrorKind.EXHAUSTED,
                    metadata=limits,
                )
        open_to_caller = self.max_watchers if watcher.may_use_reserved else self.max_watchers - self.reserved
        if len(self._subscribers) >= open_to_caller:
            kept = "" if watcher.may_use_reserved or not self.reserved else f" ({self.reserved} kept for customs and admins)"
            raise DomainError(
                "TOO_MANY_WATCHERS",
                f"at most {self.max_watchers} quota watches may be open at once{kept}; retry later",
                ErrorKind.EXHAUSTED,
                metadata=limits,
            )

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def nudge(self) -> None:
        self._nudge.set()

    def stop(self) -> None:
        self._stopped.set()
        self._nudge.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._nudge.wait(self.interval)
            self._nudge.clear()
            with self._lock:
                if not self._subscribers:
                    continue
            try:
                self.poll()
            except Exception:  # a database hiccup must not kill the watchers; the next tick retries
                continue

    def poll(self) -> None:
        current = self.quota.snapshot()
        with self._lock:
            for key, status in current.items():
                before = self._last.get(key)
                if before is None or (before.level.charged, before.state) == (status.level.charged, status.state):
                    continue  # neither the charge nor the state changed (a hold changes the state alone)
                kind = event_between(before.state, status.state) or QuotaEventKind.CHARGED
                event = QuotaEvent(kind, status)
                for subscription in self._subscribers:
                    if subscription.wants(status):
                        try:
                            subscription.events.put_nowait(event)
                        except queue.Full:
                            pass  # a watcher that stopped reading loses events, not the server
            self._last = current
