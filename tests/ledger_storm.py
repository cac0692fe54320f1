"""A standing concurrent storm against the quota ledger, in the manner of Jepsen's bank test (issue 12).

Two real `ecert serve` replicas share one database; replica 1's clock lags replica 0's by
`lag_seconds`. Both run on a clock moved (ECERT_CLOCK_OFFSET_SECONDS) to just before the opening of
next year's period, so the storm straddles an opening while it charges, reverses and corrects this
year's claims. Seeded threads mix, at either replica:

- claims (a nearly full TPL 4 level of this year; certificate-bound TPL 1 claims; next year's claims,
  queued before the opening and decided at it or after), and replays of earlier lines at the other
  replica;
- cancellations, corrections, a line canceled at both replicas at once, a cancellation racing a
  correction, cancellations of claims waiting for the opening;
- post-importation claims for this year;
- `ecert reference load` runs (real CLI processes) that lower and raise this year's TPL 4 limit.

Afterwards: every level and certificate within its bounds, `ecert audit reconcile` and `ecert audit
verify` pass, no claim waits for an opening that happened, and every caller got a clean answer (a
decision, or one of the refusals a client is told to expect). Nothing here is timed.
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
import grpc
from sqlalchemy import create_engine, text

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import certificate, claim_line, envelope, small_levels
from tests.grpc_errors import rich_error
from tests.processes import ROOT, Deployment, ServiceProcess, stub

TPL4, TPL3, TPL1 = "9823.53.04", "9823.53.03", "9823.53.01"
FABRIC = {"tpl_number": TPL4, "htsus_number": "5208.12.4020", "unit": "M2"}
LIMIT = "1000"  # this year's and next year's TPL 4 level, in SME (= M2 for this fabric)
# Refusals a well-behaved client expects and handles; anything else (INTERNAL above all) fails the storm.
EXPECTED_REFUSALS = {
    (grpc.StatusCode.FAILED_PRECONDITION, "CLAIM_ALREADY_REVERSED"),
    (grpc.StatusCode.FAILED_PRECONDITION, "CLAIM_NOT_MFN"),
    (grpc.StatusCode.ALREADY_EXISTS, "CLAIM_ALREADY_DECIDED"),
}
# Told to come back later: retried with backoff, as the SDK does.
RETRIED = {
    (grpc.StatusCode.UNAVAILABLE, "OPENING_ALLOCATION_IN_PROGRESS"),
    (grpc.StatusCode.UNAVAILABLE, "CONTENTION"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "DATABASE_BUSY"),
}
WEIGHTS = {
    "claim": 30, "next_year_claim": 10, "replay": 10, "cancel": 8, "double_cancel": 8, "correct": 8,
    "cancel_vs_correct": 6, "post_importation": 6, "cancel_waiting": 4,
}


@dataclass(frozen=True)
class StormConfig:
    seed: int
    operations: int
    threads: int
    lag_seconds: float = 30.0
    lead_seconds: float = 22.0  # service time before the opening when the replicas start (setup fits well inside)
    reference_loads: int = 4


@dataclass
class StormReport:
    config: StormConfig
    engine: str
    done: Counter[str] = field(default_factory=Counter)  # operations by kind
    outcomes: Counter[str] = field(default_factory=Counter)  # answers by kind of answer
    unexpected: list[str] = field(default_factory=list)
    retries: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        c = self.config
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.done.items()))
        races = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (f"ledger storm [{self.engine}] seed={c.seed} threads={c.threads} operations={sum(self.done.values())} "
                f"({ops}); answers: {races}; retried {self.retries}; {self.seconds:.1f} s")


# The storm's program opens each period at midnight on 1 January with no opening window, lines
# presented earlier counting as presented at the opening, so that one instant closes this year's
# period and opens next year's: the storm races both at once. (The USMCA
# rule, first business day and a window to noon, is tested on the simulated clock and in
# tests/integration/test_opening_allocation.py.)
OPENING_RULE = {"date": "january-1", "window_ends": None, "before_opening": "at-opening"}


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
            ServiceProcess(deployment, f"replica-{n}", ECERT_CLOCK_OFFSET_SECONDS=f"{o:.3f}", ECERT_WORKERS="16")
            for n, o in enumerate(self.offsets)
        ]
        self._transactions = itertools.count(1)
        self._lock = threading.Lock()
        self.lines: list[mpb.EntrySummaryLine] = []  # this year's lines, to replay, cancel and correct
        self.waiting: list[mpb.EntrySummaryLine] = []  # next year's lines filed before its opening
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
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: p.start(), self.replicas))
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
            assert result is not None and result.decision == mpb.CLAIM_DECISION_QUEUED, result
            self.waiting.append(line)

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

    def pick(self, lines: list[mpb.EntrySummaryLine], rng: random.Random) -> mpb.EntrySummaryLine | None:
        with self._lock:
            return rng.choice(lines) if lines else None

    def count(self, counter: Counter[str], key: str) -> None:
        with self._lock:
            counter[key] += 1

    # -- calls -------------------------------------------------------------------------------------------

    def call(self, rpc: Callable[[], object], kind: str) -> object | None:
        """One RPC with the client's retry policy; its result, or None for an expected refusal."""
        for attempt in range(20):
            try:
                result = rpc()
                self.count(self.report.outcomes, f"{kind}: ok")
                return result
            except grpc.RpcError as error:
                info = rich_error(error)
                key = (info.code, info.reason)
                if key in RETRIED:
                    with self._lock:
                        self.report.retries += 1
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if key in EXPECTED_REFUSALS:
                    self.count(self.report.outcomes, f"{kind}: {info.reason}")
                    return None
                self.report.unexpected.append(f"{kind}: {info.code.name} {info.reason} {error.details()}")  # type: ignore[attr-defined]
                return None
        self.report.unexpected.append(f"{kind}: still refused after 20 tries")
        return None

    def at_once(self, *calls: Callable[[], object]) -> None:
        barrier = threading.Barrier(len(calls))

        def run(call: Callable[[], object]) -> None:
            barrier.wait(timeout=60)
            call()

        threads = [threading.Thread(target=run, args=(c,)) for c in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

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
            result = self.call(lambda: self.match[replica].MatchClaim(mpb.MatchClaimRequest(line=line), timeout=60), kind)
            if result is not None and result.result.decision == mpb.CLAIM_DECISION_QUEUED:  # type: ignore[attr-defined]
                with self._lock:
                    self.waiting.append(line)
        elif kind == "replay":
            line = self.pick(self.lines, rng)
            if line is not None:
                result = self.call(lambda: self.match[other].MatchClaim(mpb.MatchClaimRequest(line=line), timeout=60), kind)
                if result is not None and not result.replayed:  # type: ignore[attr-defined]
                    self.report.unexpected.append(f"replay of {line.entry_number} decided again")
        elif kind in ("cancel", "cancel_waiting"):
            line = self.pick(self.lines if kind == "cancel" else self.waiting, rng)
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
            line = self.next_year_line(replica)
            self.call(lambda: self.match[replica].MatchClaim(mpb.MatchClaimRequest(line=line), timeout=60), "after the storm")
        self.report.seconds = time.monotonic() - started
        return self.report


# -- what must hold afterwards -------------------------------------------------------------------------


def cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *args, "--database-url", deployment.database_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=deployment.env("cli"))


def assert_invariants(deployment: Deployment, report: StormReport) -> dict[str, object]:
    assert report.unexpected == [], report.unexpected[:20]
    engine = create_engine(deployment.database_url)
    try:
        with engine.connect() as c:
            out_of_bounds = c.execute(text('SELECT count(*) FROM quota_levels WHERE charged < 0 OR charged > "limit"')).scalar_one()
            overused = c.execute(text("SELECT count(*) FROM certificates WHERE used_quantity < 0 OR used_quantity > quantity")).scalar_one()
            waiting = c.execute(text("SELECT count(*) FROM claims WHERE decision = 'QUEUED' AND reversed_at IS NULL")).scalar_one()
            twice = c.execute(text("SELECT count(*) FROM (SELECT claim_id FROM quota_ledger WHERE kind = 'REVERSAL' "
                                   "GROUP BY claim_id, tpl_number HAVING count(*) > 1) AS t")).scalar_one()
            claims = c.execute(text("SELECT count(*) FROM claims")).scalar_one()
            reversed_ = c.execute(text("SELECT count(*) FROM claims WHERE reversed_at IS NOT NULL")).scalar_one()
    finally:
        engine.dispose()
    assert (out_of_bounds, overused, waiting, twice) == (0, 0, 0, 0)
    reconciled = cli(deployment, "audit", "reconcile", "--json")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert json.loads(reconciled.stdout)["drifts"] == []
    verified = cli(deployment, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return {"claims": claims, "reversed": reversed_}
