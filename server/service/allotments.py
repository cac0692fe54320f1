"""Per-replica allotments of an open level (escrow), so that claims at different replicas share no lock.

While a level is open and well below its critical share, each serving process charges its claims to
its own allotment: room carved from the level in a short transaction of its own (`refill`), a few
per cent of the limit at a time. A claim's transaction then locks only that allotment row (and its
certificate), never the level row that every claim of the level would need. A process has a few
allotments of each level (`STRIPES`), each worker thread charging one of them, so that the claims of
one replica do not all queue on one row either. The level row keeps
`charged + escrowed <= limit` (a conditional update and a constraint), so charges plus allotments
never exceed the level at any instant.

Allotments are folded back into the level (what they charged joins the level's row, their room
returns) when:
- a claim finds no room to carve (the level nears its critical share): it folds every allotment of
  the level and charges the level itself, as without allotments; past the critical share it waits
  for the cutoff batch (server/service/batches.py), which takes over;
- a level goes on hold, a claim or an offer is given back, or the level's limit changes: the exact
  balance is needed, under the level row's lock;
- this process has not charged an allotment for a while (`return_idle`, on the server's timer), or
  another process left one untouched for longer (it stopped).

The level's charged total is its row's `charged` plus what its allotments used (the repositories'
level reads, the `quota_usage` view). SQLite has one writer, so allotments gain nothing there: they are
on by default only on PostgreSQL (ECERT_ALLOTMENTS).
"""
from __future__ import annotations

import contextvars
import datetime as dt
import itertools
import threading
import time
import uuid
from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal

from server.adapters.database import Database
from server.domain.batch import critical_cap
from server.domain.quota import Level
from server.service.clock import Clock
from server.service.transactions import run_in_transaction
from server.service.unit_of_work import UnitOfWork

_MICRO = Decimal("0.000001")  # the ledger's precision
# Allotments per serving process (one per worker thread at most): claims at one replica spread over them.
STRIPES = 4
# A claim whose allotment could not be refilled charges its levels directly (this call, every attempt):
# True; None once it refilled (a second shortage makes it True); False: not yet short.
DIRECT: contextvars.ContextVar[bool | None] = contextvars.ContextVar("allotments_direct", default=False)


class NeedsAllotment(Exception):
    """This process's allotment of a level lacks room for the claim: refill it, then run the claim again."""

    def __init__(self, levels: Sequence[Level], measure: Decimal):
        super().__init__(f"{measure} on {', '.join(level.tpl_number for level in levels)}")
        self.levels = list(levels)
        self.measure = measure


class Allotments:
    def __init__(
        self, database: Database, clock: Clock, *, enabled: bool, share: Decimal, critical_share: Decimal,
        holder: str | None = None, stripes: int = STRIPES, idle_seconds: float = 2.0, stale_seconds: float = 60.0,
    ):
        self.database = database
        self.clock = clock
        self.enabled = enabled
        self.share = share  # of the limit carved at a time
        self.critical_share = critical_share
        self.holder = holder or f"R{uuid.uuid4().hex[:16]}"  # this process; its allotments are holder.0, holder.1, ...
        self.stripes = stripes
        self._threads = itertools.count()
        self._local = threading.local()
        self.idle_seconds = idle_seconds
        self.stale = dt.timedelta(seconds=stale_seconds)
        self._last_charge = time.monotonic()

    def _stripe(self) -> str:
        """This thread's allotment: a process has a few (`stripes`), each thread charging one of them, so
        that the claims of one replica do not all queue on one row either."""
        stripe = getattr(self._local, "stripe", None)
        if stripe is None:
            stripe = self._local.stripe = next(self._threads) % self.stripes
        return f"{self.holder}.{stripe}"

    def charge(self, uow: UnitOfWork, levels: Sequence[Level], measure: Decimal, now: dt.datetime) -> bool:
        """Charge `measure` to this thread's allotment of each level; False if the claim is to charge the
        levels themselves (allotments off, or none could be carved for it). Raises NeedsAllotment."""
        if not self.enabled or DIRECT.get() is True:
            return False
        for level in sorted(levels, key=lambda level: level.tpl_number):  # the order a refill locks them
            if not uow.allotments.charge(level.tpl_number, level.quota_year, self._stripe(), measure, now):
                raise NeedsAllotment(levels, measure)
        self._last_charge = time.monotonic()
        return True

    def refill(self, levels: Sequence[Level], measure: Decimal) -> bool:
        """Carve room for at least `measure` into this thread's allotment of each level, in a short
        transaction of its own, leaving one allotment's worth below the critical share uncarved; False
        (nothing carved) if a level cannot spare it: the claim then charges the levels directly."""

        def work(uow: UnitOfWork) -> bool:
            now = self.clock.now()
            for level in sorted(levels, key=lambda level: level.tpl_number):  # the order every level lock takes
                step = (level.limit * self.share).quantize(_MICRO, rounding=ROUND_DOWN)
                size = max(measure * 4, step)  # room for the next few claims too
                cap = critical_cap(level.limit, self.critical_share) - step
                if not uow.allotments.carve(level.tpl_number, level.quota_year, self._stripe(), size, cap, now):
                    return False  # rolled back: nothing carved for any level
            uow.commit()
            return True

        return run_in_transaction(self.database, work)

    def fold(self, uow: UnitOfWork, levels: Sequence[Level] | Sequence[tuple[str, int]]) -> None:
        """Fold every allotment of these levels back into them (their rows locked first, by TPL), so the
        level rows hold the exact balances for the rest of this transaction."""
        if not self.enabled:
            return
        keys = sorted({(level.tpl_number, level.quota_year) if isinstance(level, Level) else level for level in levels})
        for tpl_number, quota_year in keys:
            uow.allotments.fold(tpl_number, quota_year)

    def return_idle(self) -> int:
        """Fold back this process's allotments once it has not charged them for a while, and any other
        process's left untouched for much longer; how many were folded (the server's timer calls this)."""
        if not self.enabled:
            return 0
        idle = time.monotonic() - self._last_charge >= self.idle_seconds
        now = self.clock.now()
        with UnitOfWork(self.database, write=False) as uow:
            held = uow.allotments.held()
        due: dict[tuple[str, int], set[str]] = {}
        for tpl_number, quota_year, holder, touched in held:
            if (holder.startswith(f"{self.holder}.") and idle) or now - touched >= self.stale:
                due.setdefault((tpl_number, quota_year), set()).add(holder)
        folded = 0
        for (tpl_number, quota_year), holders in sorted(due.items()):

            def work(uow: UnitOfWork, tpl: str = tpl_number, year: int = quota_year, who: set[str] = holders) -> int:
                count = uow.allotments.fold(tpl, year, who)
                uow.commit()
                return count

            folded += run_in_transaction(self.database, work)
        return folded
