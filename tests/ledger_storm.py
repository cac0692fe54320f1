"""A standing concurrent storm against the quota ledger, in the manner of Jepsen's bank test (issues 12, 13).

Two real `ecert serve` replicas share one database; replica 1's clock lags replica 0's by
`lag_seconds`. Both run on a clock moved (ECERT_CLOCK_OFFSET_SECONDS) to just before the opening of
next year's period, so the storm straddles an opening while it charges, reverses and corrects this
year's claims. Next year's opening batch (filed at setup, and by the storm before the opening)
oversubscribes TPL 4, so the opening makes prorated offers (CSMS 16-000886). Seeded threads mix, at
either replica:

- claims (a nearly full TPL 4 level of this year, which goes on hold: its claims wait, PENDING, for the
  cutoff batch at midnight, the opening's instant; certificate-bound TPL 1 claims; next year's claims,
  queued before the opening and decided at it or after), and replays of earlier lines at the other
  replica;
- cancellations, corrections, a line canceled at both replicas at once, a cancellation racing a
  correction, cancellations of claims waiting for the opening and, once it came, of offers;
- answers to offers just after the opening, as the batch makes them (all, half or none);
- post-importation claims for this year;
- `ecert reference load` runs (real CLI processes) that lower and raise this year's TPL 4 limit.

Then every offer left open gets a race of its own, all run together (OFFER_WEIGHTS): accepted in
full, in part or declined at one replica; the same answer at both replicas at once (one takes it, the
other replays it); different answers at both at once (one takes it, the other is refused
OFFER_ALREADY_ANSWERED); an answer racing a cancellation of the line; or nothing. The offers'
deadline is five business days after the opening, and a replica's clock offset is fixed when it
starts: so both replicas are restarted on clocks moved to a few seconds before the deadline (replica
1 still lagging, by `lapse_lag_seconds`), the offers kept back are answered at either side of the
deadline (OFFER_LAPSED after it, by the answering replica's clock), and the replicas' lapse timers
give back what nobody took.

Afterwards: every level and certificate within its bounds, `ecert audit reconcile` and `ecert audit
verify` pass, no claim waits for an opening that happened or for a cutoff batch that completed (and
some claims were decided by one), no offer is left open past its deadline,
every settled offer's grant is at most what was offered (and is the answer its caller was told was
recorded), and every caller got a clean answer (a decision, or one of the refusals a client is told
to expect: EXPECTED_REFUSALS, each offer race narrower). Nothing here is timed, except that the
lapse timers must act within three of their turns after the lagging replica's clock passes the
deadline.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import grpc
from sqlalchemy import create_engine, select, text

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from server.adapters.orm import ClaimRow
from tests.factories import certificate, claim_line, envelope, small_levels
from tests.grpc_errors import rich_error
from tests.processes import ROOT, Deployment, ServiceProcess, stub

TPL4, TPL3, TPL1 = "9823.53.04", "9823.53.03", "9823.53.01"
OFFER, MFN = mpb.CLAIM_DECISION_PRORATED_OFFER, mpb.CLAIM_DECISION_MFN_REQUIRED
FABRIC = {"tpl_number": TPL4, "htsus_number": "5208.12.4020", "unit": "M2"}
LIMIT = "1000"  # this year's and next year's TPL 4 level, in SME (= M2 for this fabric)
# Refusals a well-behaved client expects and handles; anything else (INTERNAL above all) fails the storm.
EXPECTED_REFUSALS = {
    (grpc.StatusCode.FAILED_PRECONDITION, "CLAIM_ALREADY_REVERSED"),
    (grpc.StatusCode.FAILED_PRECONDITION, "CLAIM_NOT_MFN"),
    (grpc.StatusCode.ALREADY_EXISTS, "CLAIM_ALREADY_DECIDED"),
}
# Answers to a prorated offer: the line holds none (not allocated yet, or canceled), another answer
# was recorded first, or the deadline passed. Each offer phase narrows these to what its race allows.
NO_OFFER = (grpc.StatusCode.FAILED_PRECONDITION, "NO_OFFER")
ANSWERED = (grpc.StatusCode.FAILED_PRECONDITION, "OFFER_ALREADY_ANSWERED")
LAPSED = (grpc.StatusCode.FAILED_PRECONDITION, "OFFER_LAPSED")
OFFER_REFUSALS = {NO_OFFER, ANSWERED, LAPSED}
EXPECTED_REFUSALS |= OFFER_REFUSALS
# Told to come back later: retried with backoff, as the SDK does.
RETRIED = {
    (grpc.StatusCode.UNAVAILABLE, "OPENING_ALLOCATION_IN_PROGRESS"),
    (grpc.StatusCode.UNAVAILABLE, "CONTENTION"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "DATABASE_BUSY"),
}
WEIGHTS = {
    "claim": 30, "next_year_claim": 10, "replay": 10, "cancel": 8, "double_cancel": 8, "correct": 8,
    "cancel_vs_correct": 6, "post_importation": 6, "cancel_waiting": 4, "answer_waiting": 4,
}
# What happens to each open offer after the storm: answered at one replica (all, part, none), the same
# answer at both at once, different answers at both at once, an answer racing a cancellation, an
# answer racing the deadline (after the clock jump), or nothing (it lapses).
OFFER_WEIGHTS = {
    "accept_all": 3, "accept_part": 3, "decline": 2, "same_at_both": 2, "different_at_both": 2,
    "answer_vs_cancel": 2, "at_the_deadline": 3, "unanswered": 3,
}
# Of the 16 lines of the opening batch filed at setup, the storm's own operations touch only the first
# 8, so that a long storm (ECERT_STORM_OPERATIONS) leaves at least 8 open offers for their races.
BATCH_IN_STORM = 8
OFFER_CHECK_SECONDS = 5.0  # each replica's opening and lapse timer (server/app.py OPENING_CHECK_SECONDS)


@dataclass(frozen=True)
class StormConfig:
    seed: int
    operations: int
    threads: int
    lag_seconds: float = 30.0
    # Service time before the opening when the replicas start: starting them and the setup (about 6 s
    # on either engine) fit well inside, with the storm's 3 s before the opening.
    lead_seconds: float = 16.0
    reference_loads: int = 4
    # The lapse phase: replicas restarted this long (service time) before the offers' deadline, the
    # second lagging the first by lapse_lag_seconds.
    lapse_lead_seconds: float = 5.0
    lapse_lag_seconds: float = 2.0


@dataclass(frozen=True)
class Offer:
    line: mpb.EntrySummaryLine
    offered: Decimal  # whole units of the goods
    expires_at: dt.datetime


@dataclass
class StormReport:
    config: StormConfig
    engine: str
    done: Counter[str] = field(default_factory=Counter)  # operations by kind
    outcomes: Counter[str] = field(default_factory=Counter)  # answers by kind of answer
    unexpected: list[str] = field(default_factory=list)
    retries: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds each phase took
    offers: dict[tuple[str, int], Offer] = field(default_factory=dict)  # every offer seen open, by entry line
    answers: dict[tuple[str, int], Decimal] = field(default_factory=dict)  # the answer each caller was told is recorded
    canceled: set[tuple[str, int]] = field(default_factory=set)  # offers canceled in an offer race
    unanswered: set[tuple[str, int]] = field(default_factory=set)  # offers nobody touches after the storm: they lapse
    # Next year's lines answered QUEUED or PENDING. One presented in the opening's instant but reaching a
    # replica after the opening batch ran is PENDING for the next cutoff's batch, which may offer it a
    # share of what cancellations returned; such an offer can lapse unseen in the lapse phase.
    waited: set[tuple[str, int]] = field(default_factory=set)
    lapsed_by: dt.datetime | None = None  # every replica's clock and lapse timer passed every offer's deadline

    def line(self) -> str:
        c = self.config
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.done.items()))
        races = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (f"ledger storm [{self.engine}] seed={c.seed} threads={c.threads} operations={sum(self.done.values())} "
                f"({ops}); answers: {races}; retried {self.retries}; {self.seconds:.1f} s "
                f"({', '.join(f'{k} {v:.1f} s' for k, v in self.phases.items())})")


# The storm's program opens each period at midnight on 1 January with no opening window, lines
# presented earlier counting as presented at the opening, so that one instant closes this year's
# period and opens next year's: the storm races both at once. (The USMCA
# rule, first business day and a window to noon, is tested on the simulated clock and in
# tests/integration/test_opening_allocation.py.)
OPENING_RULE = {"date": "january-1", "window_ends": None, "before_opening": "at-opening"}
# The daily cutoff at midnight, the opening's instant: this year's nearly full TPL 4 goes on hold during
# the storm, and its batch decides the waiting claims while the opening allocates next year's and the
# storm goes on (both replicas' timers race for its steps); the replicas restarted at the offers'
# deadline run the cutoffs that passed meanwhile.
CUTOFF = "00:00"


def next_opening(now: dt.datetime) -> dt.datetime:
    """Midnight Eastern (05:00 UTC) on the next 1 January at least a day away."""
    year = (now + dt.timedelta(days=1)).year + 1
    return dt.datetime(year, 1, 1, 5, tzinfo=dt.timezone.utc)


class Storm:
    def __init__(self, deployment: Deployment, config: StormConfig, engine: str):
        self.deployment = deployment
        self.config = config
        self.report = StormReport(config, engine)
        self.random = random.Random(config.seed)
        self.opening = next_opening(dt.datetime.now(dt.timezone.utc))
        self.year = self.opening.year - 1  # this year, in service time
        offset = (self.opening - dt.timedelta(seconds=config.lead_seconds) - dt.datetime.now(dt.timezone.utc)).total_seconds()
        self.offsets = [offset, offset - config.lag_seconds]
        self.replicas = [
            ServiceProcess(deployment, f"replica-{n}", ECERT_CLOCK_OFFSET_SECONDS=f"{o:.3f}", ECERT_WORKERS="16", ECERT_BATCH_CUTOFF=CUTOFF)
            for n, o in enumerate(self.offsets)
        ]
        self._transactions = itertools.count(1)
        self._created = time.monotonic()  # the clocks' offsets were fixed here
        self._lock = threading.Lock()
        self.lines: list[mpb.EntrySummaryLine] = []  # this year's lines, to replay, cancel and correct
        self.waiting: list[mpb.EntrySummaryLine] = []  # next year's lines filed before its opening
        # The opening batch filed at setup, which alone oversubscribes next year's level: canceled only
        # once the opening has come, so that there are always offers, and only the first BATCH_IN_STORM.
        self.batch: list[mpb.EntrySummaryLine] = []
        self.certificates_at = dt.datetime.min.replace(tzinfo=dt.timezone.utc)

    # -- time ------------------------------------------------------------------------------------------

    def now(self, replica: int = 0) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.offsets[replica])

    def wait_until(self, at: dt.datetime) -> None:
        left = (at - self.now(0)).total_seconds()
        if left > 0:
            time.sleep(left)

    # -- setup ---------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.deployment.database_url.startswith("sqlite"):
            # One at a time on SQLite (it serves one process in production, README "PostgreSQL, replicas
            # and isolation"): the storm is about what the replicas do once they serve. Two processes
            # switching a fresh file to WAL together was a start-up race (server/adapters/database.py).
            for process in self.replicas:
                process.start()
            return self._connect()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: p.start(), self.replicas))
        self._connect()

    def _connect(self) -> None:
        self.channels = [grpc.insecure_channel(p.target) for p in self.replicas]
        self.match = [match_pb2_grpc.MatchServiceStub(c) for c in self.channels]

    def stop(self) -> None:
        for channel in getattr(self, "channels", []):
            channel.close()
        for process in self.replicas:
            process.stop()

    def load_limits(self, version: str, limit: str) -> subprocess.CompletedProcess[str]:
        path = self.deployment.root / "shared" / f"{version}.json"
        path.write_text(small_levels(version, {TPL4: limit, TPL3: "100000"}, years=(self.year - 1, self.year + 1), opening=OPENING_RULE))
        return subprocess.run(
            [sys.executable, "-m", "client.cli", "reference", "load", str(path), "--database-url", self.deployment.database_url],
            cwd=ROOT, capture_output=True, text=True, timeout=120, env=self.deployment.env("reference-load"),
        )

    def setup(self) -> None:
        loaded = self.load_limits("storm-0", LIMIT)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        channel, transmission = stub(self.replicas[0].target)
        y, n = self.year, 0
        batches = [
            (f"MX{y % 100:02d}-000001{i:02d}", dict(quantity="500", **FABRIC), y) for i in range(4)
        ] + [
            (f"MX{y % 100:02d}-000002{i:02d}", dict(quantity="300"), y) for i in range(3)
        ] + [
            (f"MX{(y + 1) % 100:02d}-000003{i:02d}", dict(quantity="2000", **FABRIC), y + 1) for i in range(4)
        ]
        with channel:
            for number, fields, year in batches:
                n += 1
                dates = (dict(issue_date=f"{y}-12-01", last_valid_date=f"{y}-12-31") if year == y
                         else dict(issue_date=f"{y}-12-20", last_valid_date=f"{y + 1}-12-31"))
                cert = certificate(number, quota_year=year, **dates, **fields)
                transmission.SubmitCertificate(tpb.SubmitCertificateRequest(
                    envelope=envelope(self.deployment.partner, cert, message_id=f"storm-{n}", sent_at=self.now(0))))
        # Every line is presented after this: a claim counts only a transmission on file at its presentation.
        self.certificates_at = self.now(0) + dt.timedelta(seconds=1)
        time.sleep(1.2)  # replicas notice the loaded reference version within a second
        # Next year's opening batch: filed at both replicas before the opening, oversubscribing TPL 4.
        for i in range(16):
            line = self.next_year_line(i % 2, quantity="90")
            result = self.call(lambda: self.match[i % 2].MatchClaim(mpb.MatchClaimRequest(line=line)).result, "queued")
            assert result is not None and result.decision == mpb.CLAIM_DECISION_QUEUED, (result, "start and setup outran lead_seconds?")
            self.batch.append(line)

    # -- lines -------------------------------------------------------------------------------------------

    def _instants(self, replica: int) -> dict[str, dt.datetime]:
        at = max(self.now(replica) - dt.timedelta(seconds=90), self.certificates_at)
        return {"filed_at": at - dt.timedelta(minutes=20), "arrived_at": at - dt.timedelta(minutes=10), "paid_at": at}

    def this_year_line(self, replica: int, rng: random.Random, *, date: str | None = None) -> mpb.EntrySummaryLine:
        y, n = self.year, next(self._transactions)
        date = date or f"{y}-12-30"
        if rng.random() < 0.6:  # the nearly full level
            return claim_line(n, certificate_number=f"MX{y % 100:02d}-000001{n % 4:02d}", quantity="7",
                              date_of_importation=date, **FABRIC, **self._instants(replica))
        return claim_line(n, certificate_number=f"MX{y % 100:02d}-000002{n % 3:02d}", quantity="10",
                          date_of_importation=date, **self._instants(replica))

    def next_year_line(self, replica: int, quantity: str = "7") -> mpb.EntrySummaryLine:
        y, n = self.year + 1, next(self._transactions)
        return claim_line(n, certificate_number=f"MX{y % 100:02d}-000003{n % 4:02d}", quantity=quantity,
                          date_of_importation=f"{y}-01-01", **FABRIC, **self._instants(replica))

    def present_next_year(self, replica: int, line: mpb.EntrySummaryLine, kind: str) -> bool:
        """Present a line of next year at `replica`; True if it waits (QUEUED, or PENDING), noted in the report."""
        result = self.call(lambda: self.match[replica].MatchClaim(mpb.MatchClaimRequest(line=line), timeout=60), kind)
        waits = result is not None and result.result.decision in (mpb.CLAIM_DECISION_QUEUED, mpb.CLAIM_DECISION_PENDING)  # type: ignore[attr-defined]
        if waits:
            with self._lock:
                self.report.waited.add(self.key(line))
        return waits

    def pick(self, lines: list[mpb.EntrySummaryLine], rng: random.Random) -> mpb.EntrySummaryLine | None:
        with self._lock:
            return rng.choice(lines) if lines else None

    def count(self, counter: Counter[str], key: str) -> None:
        with self._lock:
            counter[key] += 1

    # -- calls -------------------------------------------------------------------------------------------

    def call(self, rpc: Callable[[], object], kind: str) -> object | None:
        """One RPC with the client's retry policy; its result, or None for an expected refusal."""
        return self.attempt(rpc, kind)[0]

    def attempt(self, rpc: Callable[[], object], kind: str,
                expected: set[tuple[grpc.StatusCode, str]] = EXPECTED_REFUSALS) -> tuple[object | None, str | None]:
        """One RPC with the client's retry policy: (its result, None), or (None, the reason) for a refusal
        in `expected`; anything else is recorded as unexpected and answers (None, None)."""
        for attempt in range(20):
            try:
                result = rpc()
                self.count(self.report.outcomes, f"{kind}: ok")
                return result, None
            except grpc.RpcError as error:
                info = rich_error(error)
                key = (info.code, info.reason)
                if key in RETRIED:
                    with self._lock:
                        self.report.retries += 1
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if key in expected:
                    self.count(self.report.outcomes, f"{kind}: {info.reason}")
                    return None, info.reason
                self.unexpected(f"{kind}: {info.code.name} {info.reason} {error.details()}")  # type: ignore[attr-defined]
                return None, None
        self.unexpected(f"{kind}: still refused after 20 tries")
        return None, None

    def unexpected(self, what: str) -> None:
        with self._lock:
            self.report.unexpected.append(what)

    def at_once(self, *calls: Callable[[], object]) -> list[object]:
        """The calls started together, one thread each; their results in order."""
        barrier = threading.Barrier(len(calls))
        results: list[object] = [None] * len(calls)

        def run(n: int, call: Callable[[], object]) -> None:
            barrier.wait(timeout=60)
            results[n] = call()

        threads = [threading.Thread(target=run, args=(n, c)) for n, c in enumerate(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def _reverse(self, replica: int, line: mpb.EntrySummaryLine, kind: str, corrected: mpb.EntrySummaryLine | None = None):  # type: ignore[no-untyped-def]
        request = mpb.ReverseClaimRequest(
            entry_number=line.entry_number, line_number=line.line_number, reason="storm",
            kind=mpb.REVERSAL_KIND_CORRECTED if corrected is not None else mpb.REVERSAL_KIND_CANCELED,
            **({"corrected_line": corrected} if corrected is not None else {}),
        )
        return self.call(lambda: self.match[replica].ReverseClaim(request, timeout=60), kind)

    def _corrected(self, line: mpb.EntrySummaryLine, rng: random.Random) -> mpb.EntrySummaryLine:
        corrected = mpb.EntrySummaryLine()
        corrected.CopyFrom(line)
        corrected.quantity = str(rng.choice([3, 5, 6, 9]))
        return corrected

    # -- offers ------------------------------------------------------------------------------------------

    @staticmethod
    def key(line: mpb.EntrySummaryLine) -> tuple[str, int]:
        return (line.entry_number, line.line_number)

    def offer_of(self, replica: int, line: mpb.EntrySummaryLine) -> Offer | None:
        """The line's open prorated offer as GetClaim shows it (kept in the report), or None."""
        request = mpb.GetClaimRequest(entry_number=line.entry_number, line_number=line.line_number)
        result = self.call(lambda: self.match[replica].GetClaim(request, timeout=60).result, "look at an offer")
        if result is None or result.decision != OFFER or result.reversed:  # type: ignore[attr-defined]
            return None
        offer = Offer(line, Decimal(result.granted_quantity), result.offer_expires_at.ToDatetime(tzinfo=dt.timezone.utc))  # type: ignore[attr-defined]
        with self._lock:
            return self.report.offers.setdefault(self.key(line), offer)

    def answer(self, replica: int, offer: Offer, accepted: Decimal, kind: str,
               expected: set[tuple[grpc.StatusCode, str]] = OFFER_REFUSALS) -> tuple[mpb.AnswerProratedOfferResponse | None, str | None]:
        """Answer `offer` at `replica`, and check what came back: the grant is the answer, never more than
        offered, never taken after the deadline by the answering replica's clock, and one answer per offer."""
        line = offer.line
        request = mpb.AnswerProratedOfferRequest(entry_number=line.entry_number, line_number=line.line_number, accepted_quantity=str(accepted))
        sent_at = self.now(replica)
        response, reason = self.attempt(lambda: self.match[replica].AnswerProratedOffer(request, timeout=60), kind, expected)
        if response is None:
            return None, reason
        assert isinstance(response, mpb.AnswerProratedOfferResponse)
        result, what = response.result, f"{kind}: {accepted} of {offer.offered} offered to {line.entry_number} at replica {replica}"
        if sent_at >= offer.expires_at and not response.replayed:
            self.unexpected(f"{what}: taken after the deadline ({sent_at.isoformat()} >= {offer.expires_at.isoformat()})")
        if Decimal(result.granted_quantity) != accepted or accepted > offer.offered:
            self.unexpected(f"{what}: granted {result.granted_quantity}")
        if ("OFFER_ACCEPTED" if accepted else "OFFER_DECLINED") not in result.reasons or (result.decision == MFN) != (accepted == 0):
            self.unexpected(f"{what}: answered {mpb.ClaimDecision.Name(result.decision)} {list(result.reasons)}")
        with self._lock:
            recorded = self.report.answers.setdefault(self.key(line), accepted)
        if recorded != accepted:
            self.unexpected(f"{what}: another answer ({recorded}) was taken too")
        return response, None

    def offer_race(self, index: int, offer: Offer, kind: str, replica: int) -> None:
        """One open offer's race after the storm (OFFER_WEIGHTS)."""
        rng = random.Random(self.config.seed * 1_000_033 + index)
        other, offered = 1 - replica, offer.offered
        some = Decimal(rng.randint(1, int(offered) - 1)) if offered > 1 else offered  # a part
        if kind in ("accept_all", "accept_part", "decline"):
            accepted = {"accept_all": offered, "accept_part": some, "decline": Decimal(0)}[kind]
            self.answer(replica, offer, accepted, kind, expected=set())  # nothing else touches it: taken
        elif kind == "same_at_both":  # one takes it, the other replays it
            answers = self.at_once(lambda: self.answer(replica, offer, some, kind, set()),
                                   lambda: self.answer(other, offer, some, kind, set()))
            fresh = [r for r, _ in answers if r is not None and not r.replayed]  # type: ignore[misc]
            if len(fresh) != 1:
                self.unexpected(f"{kind}: {offer.line.entry_number} answered {len(fresh)} times, not replayed")
        elif kind == "different_at_both":  # one takes it, the other is told it was answered
            answers = self.at_once(lambda: self.answer(replica, offer, some, kind, {ANSWERED}),
                                   lambda: self.answer(other, offer, offered if some != offered else Decimal(0), kind, {ANSWERED}))
            taken = [r for r, _ in answers if r is not None]  # type: ignore[misc]
            if len(taken) != 1:
                self.unexpected(f"{kind}: {offer.line.entry_number} took {len(taken)} different answers")
        elif kind == "answer_vs_cancel":  # either order; an answer after the cancellation finds no offer
            accepted = rng.choice([offered, some, Decimal(0)])
            (answered, _), canceled = self.at_once(lambda: self.answer(replica, offer, accepted, kind, {NO_OFFER}),  # type: ignore[misc]
                                                   lambda: self._reverse(other, offer.line, "cancel an offer"))
            if canceled is not None:
                with self._lock:
                    self.report.canceled.add(self.key(offer.line))
            elif answered is None:
                self.unexpected(f"{kind}: {offer.line.entry_number} neither answered nor canceled")
        self.count(self.report.done, f"offer {kind}")

    def offer_phase(self) -> list[Offer]:
        """After the storm: every open offer of the opening batch in a race of its own, the races run
        together at both replicas. The offers left for the deadline come back."""
        offers = [o for o in (self.offer_of(n % 2, line) for n, line in enumerate(self.batch + self.waiting)) if o is not None]
        kinds = list(OFFER_WEIGHTS)  # each race once where there are offers enough, then by weight
        drawn = kinds + self.random.choices(kinds, weights=[OFFER_WEIGHTS[k] for k in kinds], k=max(0, len(offers) - len(kinds)))
        self.random.shuffle(drawn)
        plan = [(offer, kind, self.random.randrange(2)) for offer, kind in zip(offers, drawn)]
        self.report.unanswered = {self.key(offer.line) for offer, kind, _ in plan if kind == "unanswered"}
        with ThreadPoolExecutor(self.config.threads) as pool:
            for future in [pool.submit(self.offer_race, n, *p) for n, p in enumerate(plan)]:
                future.result()
        return [offer for offer, kind, _ in plan if kind == "at_the_deadline"]

    def lapse_phase(self, late: list[Offer]) -> None:
        """The offers' deadline is days after the opening: both replicas restart on clocks moved to a few
        seconds before it (replica 1 still lagging), answers race the deadline and the lapse timers, and
        once every clock and timer is past it no offer may be left open."""
        if not self.report.offers:
            return
        c = self.config
        deadline = max(o.expires_at for o in self.report.offers.values())
        restarted = time.monotonic()
        self.stop()
        offset = (deadline - dt.timedelta(seconds=c.lapse_lead_seconds) - dt.datetime.now(dt.timezone.utc)).total_seconds()
        self.offsets = [offset, offset - c.lapse_lag_seconds]
        self.replicas = [
            ServiceProcess(self.deployment, f"replica-{n}", ECERT_CLOCK_OFFSET_SECONDS=f"{o:.3f}", ECERT_WORKERS="16", ECERT_BATCH_CUTOFF=CUTOFF)
            for n, o in enumerate(self.offsets)
        ]
        self.start()
        self.report.phases["restart"] = time.monotonic() - restarted

        def late_answer(index: int, offer: Offer) -> None:
            rng = random.Random(self.config.seed * 1_000_037 + index)
            replica, accepted = rng.randrange(2), rng.choice([offer.offered, Decimal(0), offer.offered // 2])
            self.wait_until(offer.expires_at + dt.timedelta(seconds=rng.uniform(-1.5, 1.5)))  # in replica 0's time
            kind = "answer at the deadline"
            if rng.random() < 0.3:  # at both replicas at once: at most one takes it
                answers = self.at_once(lambda: self.answer(replica, offer, accepted, kind, {LAPSED}),
                                       lambda: self.answer(1 - replica, offer, accepted, kind, {LAPSED}))
                if len([r for r, _ in answers if r is not None and not r.replayed]) > 1:  # type: ignore[misc]
                    self.unexpected(f"{kind}: {offer.line.entry_number} answered twice, not replayed")
            else:
                self.answer(replica, offer, accepted, kind, {LAPSED})

        with ThreadPoolExecutor(max(1, len(late))) as pool:
            for future in [pool.submit(late_answer, n, o) for n, o in enumerate(late)]:
                future.result()
        # Past the deadline a replica's lapse timer (every OFFER_CHECK_SECONDS) gives every open offer
        # back; waited for (bounded: the lagging replica's clock and three of its timer's turns past the
        # deadline), then checked with the other invariants.
        self.wait_until(deadline)
        give_up = deadline + dt.timedelta(seconds=c.lapse_lag_seconds + 3 * OFFER_CHECK_SECONDS)
        engine = create_engine(self.deployment.database_url)
        try:
            while open_offers(engine) and self.now(0) < give_up:
                time.sleep(0.25)
        finally:
            engine.dispose()
        self.report.lapsed_by = deadline

    # -- operations ----------------------------------------------------------------------------------

    def operation(self, index: int, kind: str, replica: int) -> None:
        rng = random.Random(self.config.seed * 1_000_003 + index)  # each operation's own choices
        other = 1 - replica
        if kind == "claim":
            line = self.this_year_line(replica, rng)
            if self.call(lambda: self.match[replica].MatchClaim(mpb.MatchClaimRequest(line=line), timeout=60), kind) is not None:
                with self._lock:
                    self.lines.append(line)
        elif kind == "next_year_claim":
            line = self.next_year_line(replica)
            if self.present_next_year(replica, line, kind):
                with self._lock:
                    self.waiting.append(line)
        elif kind == "replay":
            line = self.pick(self.lines, rng)
            if line is not None:
                result = self.call(lambda: self.match[other].MatchClaim(mpb.MatchClaimRequest(line=line), timeout=60), kind)
                if result is not None and not result.replayed:  # type: ignore[attr-defined]
                    self.report.unexpected.append(f"replay of {line.entry_number} decided again")
        elif kind == "cancel":
            line = self.pick(self.lines, rng)
            if line is not None:
                self._reverse(replica, line, kind)
        elif kind == "cancel_waiting":  # a queued claim, or once the opening came an offer or its answer
            line = self.pick(self.waiting + (self.batch[:BATCH_IN_STORM] if self.now(replica) > self.opening else []), rng)
            if line is not None:
                self._reverse(replica, line, kind)
        elif kind == "double_cancel":
            line = self.pick(self.lines, rng)
            if line is not None:
                self.at_once(lambda: self._reverse(replica, line, kind), lambda: self._reverse(other, line, kind))
        elif kind == "correct":
            line = self.pick(self.lines, rng)
            if line is not None:
                self._reverse(replica, line, kind, self._corrected(line, rng))
        elif kind == "cancel_vs_correct":
            line = self.pick(self.lines, rng)
            if line is not None:
                corrected = self._corrected(line, rng)
                self.at_once(lambda: self._reverse(replica, line, "race cancel"),
                             lambda: self._reverse(other, line, "race correct", corrected))
        elif kind == "answer_waiting":  # an offer answered as the opening batch makes it, racing cancellations
            self.wait_until(self.opening + dt.timedelta(seconds=rng.uniform(0, 1.5)))  # no sooner: no offer yet
            # A claim after the opening at replica 0 finishes the opening batch if nobody has.
            self.present_next_year(0, self.next_year_line(0), "after the opening")
            line = self.pick(self.batch[:BATCH_IN_STORM] + self.waiting, rng)
            offer = self.offer_of(replica, line) if line is not None else None
            if offer is not None:
                self.answer(rng.randrange(2), offer, rng.choice([offer.offered, offer.offered // 2, Decimal(0)]), kind)
            else:
                self.count(self.report.outcomes, f"{kind}: no open offer")
        elif kind == "post_importation":
            line = self.this_year_line(replica, rng, date=f"{self.year}-12-15")
            self.call(lambda: self.match[replica].FilePostImportationClaim(
                mpb.FilePostImportationClaimRequest(line=line), timeout=60), kind)
        self.count(self.report.done, kind)

    def reference_loads(self) -> None:
        """Lower and raise this year's TPL 4 limit while claims charge it: each load is taken or refused."""
        limits = ["300", "1000", "150", "800"][: self.config.reference_loads]
        for n, limit in enumerate(limits, start=1):
            time.sleep(0.5)
            done = self.load_limits(f"storm-{n}", limit)
            if done.returncode == 0:
                self.count(self.report.outcomes, "reference load: ok")
            elif "LIMIT_BELOW_CHARGED" in done.stderr:
                self.count(self.report.outcomes, "reference load: LIMIT_BELOW_CHARGED")
            else:
                self.report.unexpected.append(f"reference load exited {done.returncode}: {done.stderr.strip()[-500:]}")
            self.report.done["reference_load"] += 1

    def run(self) -> StormReport:
        started = time.monotonic()
        self.setup()
        self.report.phases["setup"] = time.monotonic() - started
        self.report.phases["start and setup"] = time.monotonic() - self._created  # must fit in lead_seconds - 3
        kinds = list(WEIGHTS)
        plan = [(self.random.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0], self.random.randrange(2))
                for _ in range(self.config.operations)]
        # The storm starts a few seconds before replica 0's opening; replica 1 reaches it lag_seconds later.
        self.wait_until(self.opening - dt.timedelta(seconds=3))
        loader = threading.Thread(target=self.reference_loads)
        loader.start()
        with ThreadPoolExecutor(self.config.threads) as pool:
            for future in [pool.submit(self.operation, n, kind, replica) for n, (kind, replica) in enumerate(plan)]:
                future.result()
        loader.join()
        # Every claim of next year that waited is decided once the opening ran: a claim at either
        # replica after it finishes the batch if nobody has.
        self.wait_until(self.opening + dt.timedelta(seconds=1))
        for replica in (0, 1):
            self.present_next_year(replica, self.next_year_line(replica), "after the storm")
        at = time.monotonic()
        self.report.phases["storm"] = at - started - self.report.phases["setup"]
        late = self.offer_phase()
        self.report.phases["offers"] = time.monotonic() - at
        at = time.monotonic()
        self.lapse_phase(late)
        self.report.phases["lapse"] = time.monotonic() - at
        self.report.seconds = time.monotonic() - started
        return self.report


# -- what must hold afterwards -------------------------------------------------------------------------


def cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *args, "--database-url", deployment.database_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=deployment.env("cli"))


def open_offers(engine) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """Live claims still holding a prorated offer."""
    claims = ClaimRow.__table__
    with engine.connect() as c:
        return [dict(r) for r in c.execute(select(claims).where(claims.c.decision == "PRORATED_OFFER", claims.c.reversed_at.is_(None))).mappings()]


def offer_problems(engine, report: StormReport) -> list[str]:  # type: ignore[no-untyped-def]
    """What the stored claims say about the offers: each answered, lapsed or canceled offer's grant is at
    most what was offered (the answer the caller was told was recorded, where one was), and no offer is
    left open past a deadline every replica's clock and lapse timer passed."""
    problems = []
    if report.lapsed_by is not None:
        problems += [f"{r['entry_number']} still holds an offer that expired at {r['offer_expires_at']}"
                     for r in open_offers(engine) if r["offer_expires_at"] is not None and r["offer_expires_at"] <= report.lapsed_by]
    claims = ClaimRow.__table__
    with engine.connect() as c:
        rows = list(c.execute(select(claims).order_by(claims.c.revision)).mappings())
    latest = {(r["entry_number"], r["line_number"]): r for r in rows}
    settled = {key for key, r in latest.items() if {"OFFER_ACCEPTED", "OFFER_DECLINED", "OFFER_LAPSED"} & set(json.loads(r["reasons"]))}
    # An offer nobody saw open may only be one a later cutoff batch made to a line that waited, left to lapse.
    unseen_lapses = {key for key in report.waited - set(report.offers) - set(report.answers)
                     if "OFFER_LAPSED" in json.loads(latest[key]["reasons"]) and latest[key]["granted_quantity"] == 0}
    problems += [  # with what is stored of it, to tell a harness gap from a service fault
        f"{key} settled an offer nobody saw (waited {key in report.waited}, {latest[key]['decision']} {latest[key]['reasons']},"
        f" granted {latest[key]['granted_quantity']}, revision {latest[key]['revision']}, batch {latest[key]['batch_cutoff']})"
        for key in settled - set(report.offers) - unseen_lapses
    ]
    problems += [f"{key} was canceled but holds its share" for key in report.canceled if latest[key]["reversed_at"] is None]
    if report.lapsed_by is not None:
        problems += [f"{key} was left unanswered but did not lapse" for key in report.unanswered
                     if latest[key]["reversed_at"] is not None or "OFFER_LAPSED" not in json.loads(latest[key]["reasons"])]
    for key, offer in report.offers.items():
        row = latest[key]
        reasons, granted = set(json.loads(row["reasons"])), row["granted_quantity"]
        if granted > offer.offered:
            problems.append(f"{key}: {granted} granted of {offer.offered} offered")
        if row["reversed_at"] is not None:
            continue
        if "OFFER_LAPSED" in reasons and (granted != 0 or key in report.answers or row["decision"] != "MFN_REQUIRED"):
            problems.append(f"{key}: lapsed with {granted} granted, answered {report.answers.get(key)}")
        if key in report.answers and granted != report.answers[key]:
            problems.append(f"{key}: {granted} granted, answered {report.answers[key]}")
    return problems


def assert_invariants(deployment: Deployment, report: StormReport) -> dict[str, object]:
    assert report.unexpected == [], report.unexpected[:20]
    engine = create_engine(deployment.database_url)
    try:
        with engine.connect() as c:
            out_of_bounds = c.execute(text('SELECT count(*) FROM quota_levels WHERE charged < 0 OR escrowed < 0 OR charged + escrowed > "limit"')).scalar_one()
            overused = c.execute(text("SELECT count(*) FROM certificates WHERE used_quantity < 0 OR used_quantity > quantity")).scalar_one()
            waiting = c.execute(text("SELECT count(*) FROM claims WHERE decision = 'QUEUED' AND reversed_at IS NULL")).scalar_one()
            # No claim left pending that a completed cutoff batch should have decided.
            stranded = c.execute(text(
                "SELECT count(*) FROM claims c JOIN quota_batches b ON b.completed_at IS NOT NULL AND c.presentation_time < b.cutoff_at"
                " AND c.decided_at <= b.started_at WHERE c.decision = 'PENDING' AND c.reversed_at IS NULL")).scalar_one()
            batches = c.execute(text("SELECT count(*) FROM quota_batches WHERE completed_at IS NOT NULL")).scalar_one()
            held = c.execute(text("SELECT count(*) FROM claims WHERE batch_cutoff IS NOT NULL")).scalar_one()
            twice = c.execute(text("SELECT count(*) FROM (SELECT claim_id FROM quota_ledger WHERE kind = 'REVERSAL' "
                                   "GROUP BY claim_id, tpl_number HAVING count(*) > 1) AS t")).scalar_one()
            claims = c.execute(text("SELECT count(*) FROM claims")).scalar_one()
            reversed_ = c.execute(text("SELECT count(*) FROM claims WHERE reversed_at IS NOT NULL")).scalar_one()
            lapsed = c.execute(text("SELECT count(*) FROM claims WHERE reasons LIKE '%OFFER_LAPSED%'")).scalar_one()
        offers = offer_problems(engine, report)
    finally:
        engine.dispose()
    assert (out_of_bounds, overused, waiting, twice, stranded) == (0, 0, 0, 0, 0)
    assert batches and held, "no cutoff batch decided a pending claim: the storm did not test the hold"
    assert offers == [], offers[:20]
    assert report.offers, "the opening made no offers: the storm did not test them"
    reconciled = cli(deployment, "audit", "reconcile", "--json")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert json.loads(reconciled.stdout)["drifts"] == []
    verified = cli(deployment, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return {"claims": claims, "reversed": reversed_, "offers": len(report.offers), "answered": len(report.answers), "lapsed": lapsed,
            "decided_by_cutoff_batches": held}
