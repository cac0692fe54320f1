"""`python -m bench [--quick] [--json FILE]`: start the real service, drive it from another process,
print a table and write the figures as JSON (DESIGN.md section 3).

Every server is a separate process (bench/server.py: `create_server`, same interceptors and thread
pool as `ecert serve`, plus the echo baseline) over a fresh SQLite file in a temporary folder; every
load generator is another process (bench/load.py), so neither shares the other's GIL.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import statistics
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bench import dataset
from bench.workload import GOODS

IN_FLIGHT = (1, 16, 64)
RPC_NAMES = {"echo": "Echo (baseline)", "submit": "SubmitCertificate", "match": "MatchClaim", "quota": "GetQuotaStatus"}
# Main runs happen on 15 June 2026 by the service's clock, whatever the machine's date.
MAIN_EPOCH = dt.datetime(2026, 6, 15, 12, tzinfo=dt.timezone.utc)
# The opening-day burst: claims presented at 11:00 New York time on Monday 4 January 2027, the 2027
# opening date (its first business day), an hour before the opening window closes at noon.
BURST_EPOCH = dt.datetime(2027, 1, 4, 16, tzinfo=dt.timezone.utc)
KEY_ID = "mx-se-bench-1"
# The engines phase: claims spread over this many certificates.
ENGINE_CERTIFICATES = 50


@dataclass(frozen=True)
class Plan:
    duration_s: float
    warmup_s: float
    growth: tuple[int, ...]
    burst_claims: int
    engine_in_flight: tuple[int, ...]  # the engines phase's measurements
    claim_cpu_claims: int  # and its claims matched without gRPC (bench/claim_cpu.py)
    claim_cpu_rounds: int  # the engines take turns this many times at it; the median counts


FULL = Plan(duration_s=5.0, warmup_s=1.0, growth=(10_000, 1_000_000), burst_claims=50_000, engine_in_flight=(1, 16), claim_cpu_claims=1000, claim_cpu_rounds=3)
QUICK = Plan(duration_s=1.0, warmup_s=0.2, growth=(10_000, 100_000), burst_claims=1_000, engine_in_flight=(16,), claim_cpu_claims=300, claim_cpu_rounds=1)


class Workspace:
    """The temporary folder: a development PKI (for mutual TLS) and Mexico's document-signing key."""

    def __init__(self, root: pathlib.Path):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from client.pki import init_pki
        from contract.keys import save_private_key, trust_entry, write_trust_store
        from contract.signing import Signer

        self.root = root
        self.pki = init_pki(root / "pki")
        self.signing_key = root / "mx-document-signing.pem"
        signer = Signer(KEY_ID, Ed25519PrivateKey.generate())
        save_private_key(self.signing_key, signer.private_key)
        self.trust_store = root / "partner-keys.json"
        # Valid across every instant the bench's clocks visit.
        write_trust_store(self.trust_store, [trust_entry(signer, "MX", MAIN_EPOCH - dt.timedelta(days=3650), BURST_EPOCH + dt.timedelta(days=3650))])

    def client_tls(self, rpc: str, tls: bool) -> str:
        if not tls:
            return ""
        return str(self.pki.party("gateway-mx" if rpc == "submit" else "customs"))


class ServerProcess:
    """bench/server.py in a subprocess, controlled through its stdin."""

    def __init__(self, workspace: Workspace, name: str, *, tls: bool, epoch: dt.datetime, database_url: str = ""):
        self.data_dir = workspace.root / name
        self.data_dir.mkdir(exist_ok=True)
        self.tls = tls
        self.offset = (epoch - dt.datetime.now(dt.timezone.utc)).total_seconds()
        command = [
            sys.executable, "-m", "bench.server", "--data-dir", str(self.data_dir), "--trust-store", str(workspace.trust_store),
            "--clock-offset", str(self.offset), "--log-file", str(self.data_dir / "server.log"), "--database-url", database_url,
        ]
        if tls:
            command += ["--tls-dir", str(workspace.pki.party("service"))]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = self.process.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE, so stdout is set
        if not first.startswith("port "):
            self.process.kill()
            raise RuntimeError(f"the bench server did not start (said {first!r}); see {self.data_dir / 'server.log'}")
        self.port = int(first.split()[1])
        self.target = f"127.0.0.1:{self.port}"

    @property
    def database(self) -> str:
        return str(self.data_dir / "ecert.db")

    def _ask(self, line: str) -> str:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def shift(self, seconds: float) -> None:
        self.offset += seconds
        if self._ask(f"shift {seconds}") != "ok":
            raise RuntimeError("the bench server did not move its clock")

    def cpu_seconds(self) -> float | None:
        """User and system CPU time of the server process so far (Linux /proc), all its threads."""
        try:
            fields = pathlib.Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        return round(float(self._ask("rss")), 1)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin
            self.process.stdin.close()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.returncode not in (0, None):
            raise RuntimeError(f"the bench server exited with {self.process.returncode}; see {self.data_dir / 'server.log'}")

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
            return
        self.stop()


def load(workspace: Workspace, server: ServerProcess, recipe: dict[str, Any], *, in_flight: tuple[int, ...], duration_s: float | None,
         warmup_s: float, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """One measurement per `in_flight`, in turn, by a fresh load-generating process; each also gets the
    server's CPU milliseconds per answered call (robust to other work on the machine, unlike calls/s)."""
    spec = {
        "target": server.target, "tls_dir": workspace.client_tls(recipe["rpc"], server.tls), "rpc": recipe["rpc"],
        "in_flight": in_flight, "duration_s": duration_s, "warmup_s": warmup_s, "timeout_s": timeout_s,
        "clock_offset_s": server.offset, "recipe": recipe,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.load"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdin and process.stdout and process.stderr
    process.stdin.write(json.dumps(spec))
    process.stdin.close()
    marks: list[float | None] = []
    complaints: list[str] = []
    for line in process.stderr:  # the result comes on stdout at the end: small, it cannot fill the pipe
        if line.startswith("mark "):
            marks.append(server.cpu_seconds())
        else:
            complaints.append(line)
    output = process.stdout.read()
    if process.wait() != 0:
        raise RuntimeError("the load generator failed:\n" + "".join(complaints)[-3000:])
    results: list[dict[str, Any]] = json.loads(output)
    for result, begin, end in zip(results, marks[0::2], marks[1::2]):
        used = None if begin is None or end is None or not result["calls"] else (end - begin) * 1000 / result["calls"]
        result["server_cpu_ms_per_call"] = None if used is None else round(used, 3)
    return results


def _row(rpc: str, in_flight: int | None, measured: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "rpc": RPC_NAMES.get(rpc, rpc), "in_flight": in_flight, "calls_per_s": measured["calls_per_s"],
        "p50_ms": measured["p50_ms"], "p99_ms": measured["p99_ms"], "ratio_to_baseline": None,
        "server_cpu_ms_per_call": measured.get("server_cpu_ms_per_call"),
        **extra, "calls": measured["calls"], "errors": measured["errors"], "outcomes": measured["outcomes"],
    }


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the phases -------------------------------------------------------------------------------------------


def rpc_phase(workspace: Workspace, plan: Plan, tls: bool) -> list[dict[str, Any]]:
    """Echo, SubmitCertificate, MatchClaim, GetQuotaStatus at 1, 16 and 64 calls in flight."""
    rows: list[dict[str, Any]] = []
    mode = "mtls" if tls else "plaintext"
    # Requests for every measurement of a kind, more than the service can take in the time.
    budget = (plan.duration_s + plan.warmup_s) * len(IN_FLIGHT)
    with ServerProcess(workspace, f"rpcs-{mode}", tls=tls, epoch=MAIN_EPOCH) as server:
        def run(recipe: dict[str, Any]) -> list[dict[str, Any]]:
            results = load(workspace, server, recipe, in_flight=IN_FLIGHT, duration_s=plan.duration_s, warmup_s=plan.warmup_s)
            for n, measured in zip(IN_FLIGHT, results):
                rows.append(_row(recipe["rpc"], n, measured, tls=tls))
                _say(f"  [{mode}] {recipe['rpc']} x{n}: {measured['calls_per_s']:.0f}/s {measured['outcomes']}")
            return results

        baseline = {n: r["calls_per_s"] for n, r in zip(IN_FLIGHT, run({"rpc": "echo"}))}
        count = int(budget * 1000) + 200
        submitted = run({"rpc": "submit", "signing_key": str(workspace.signing_key), "key_id": KEY_ID, "quota_year": 2026,
                         "quantity": "1000000", "first": 1, "count": count})
        stored = [1, sum(r["used_requests"] for r in submitted)]  # certificates 1..n are on file
        run({"rpc": "match", "quota_year": 2026, "certificates": {"9823.53.01": stored}, "quantity": {"9823.53.01": "1"},
             "imported": "2026-06-01", "first_entry": 1, "count": int(budget * 2000) + 200})
        run({"rpc": "quota", "quota_year": 2026})
        rss = server.peak_rss_mb()
    for row in rows:
        row["ratio_to_baseline"] = round(row["calls_per_s"] / baseline[row["in_flight"]], 3) if baseline[row["in_flight"]] else None
        row["peak_rss_mb"] = rss
    return rows


def growth_phase(workspace: Workspace, plan: Plan, baseline: dict[int, float]) -> list[dict[str, Any]]:
    """MatchClaim with many certificates and claims already stored (bulk-loaded through SQL)."""
    from server.adapters.database import Database

    rows = []
    good = GOODS["9823.53.01"]
    for stored in plan.growth:
        name = f"growth-{stored}"
        directory = workspace.root / name
        directory.mkdir()
        database = Database(f"sqlite:///{directory / 'ecert.db'}")
        database.upgrade()
        database.dispose()
        began = time.perf_counter()
        dataset.load_certificates(str(directory / "ecert.db"), good, first=1, count=stored, quantity=1_000_000, quota_year=2026, at=MAIN_EPOCH)
        dataset.load_claims(str(directory / "ecert.db"), good, count=stored, certificates=(1, stored), quota_year=2026, at=MAIN_EPOCH, filer="B77")
        _say(f"  growth: {stored:,} certificates and claims loaded in {time.perf_counter() - began:.1f} s")
        with ServerProcess(workspace, name, tls=False, epoch=MAIN_EPOCH) as server:
            count = int((plan.duration_s + plan.warmup_s) * 2 * 2000) + 200
            recipe = {"rpc": "match", "quota_year": 2026, "certificates": {good.tpl_number: [1, stored]},
                      "quantity": {good.tpl_number: "1"}, "imported": "2026-06-01", "first_entry": 1, "count": count}
            results = load(workspace, server, recipe, in_flight=(16, 64), duration_s=plan.duration_s, warmup_s=plan.warmup_s)
            for n, measured in zip((16, 64), results):
                rows.append(_row("match", n, measured, tls=False, stored_rows=stored))
                _say(f"  growth {stored:,}: match x{n}: {measured['calls_per_s']:.0f}/s {measured['outcomes']}")
            rss = server.peak_rss_mb()
        for row in rows[-2:]:
            row["peak_rss_mb"] = rss
            row["ratio_to_baseline"] = round(row["calls_per_s"] / baseline[row["in_flight"]], 3) if baseline.get(row["in_flight"]) else None
    return rows


@contextlib.contextmanager
def _postgres_database(server_url: str) -> Iterator[str]:
    """A fresh database on that PostgreSQL server, dropped afterwards: its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(make_url(server_url), isolation_level="AUTOCOMMIT")
    name = f"ecert_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def engines_phase(workspace: Workspace, plan: Plan, postgres_url: str | None) -> list[dict[str, Any]]:
    """The service's CPU milliseconds per MatchClaim on SQLite and on PostgreSQL, same workload: each
    claim charges a certificate and the TPL 1 level and records its log entry. CPU time of the server
    process (all its threads, the log's sequencer included), not wall time: the figure holds on a
    machine shared with other work; the load generator and PostgreSQL's own processes are not in it."""
    engines: list[tuple[str, str | None]] = [("sqlite", None)]
    if postgres_url:
        engines.append(("postgresql", postgres_url))
    else:
        _say("  engines: PostgreSQL skipped (set ECERT_BENCH_POSTGRES_URL or pass --postgres-url)")
    rows: list[dict[str, Any]] = []
    for engine, server_url in engines:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(_postgres_database(server_url)) if server_url else ""
            server = stack.enter_context(ServerProcess(workspace, f"engine-{engine}", tls=False, epoch=MAIN_EPOCH, database_url=url))
            load(workspace, server, {"rpc": "submit", "signing_key": str(workspace.signing_key), "key_id": KEY_ID, "quota_year": 2026,
                                     "quantity": "1000000", "first": 1, "count": ENGINE_CERTIFICATES},
                 in_flight=(16,), duration_s=None, warmup_s=0)
            count = int((plan.duration_s + plan.warmup_s) * len(plan.engine_in_flight) * 1500) + 200
            # Presented now by the service's clock: after the certificates were transmitted, so each claim charges.
            presented = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=server.offset)
            recipe = {"rpc": "match", "quota_year": 2026, "certificates": {"9823.53.01": [1, ENGINE_CERTIFICATES]},
                      "quantity": {"9823.53.01": "1"}, "imported": "2026-06-01", "presented": presented.isoformat(),
                      "first_entry": 1, "count": count}
            results = load(workspace, server, recipe, in_flight=plan.engine_in_flight, duration_s=plan.duration_s, warmup_s=plan.warmup_s)
            for n, measured in zip(plan.engine_in_flight, results):
                rows.append(_row("match", n, measured, tls=False, engine=engine))
                _say(f"  engine {engine}: match x{n}: {measured['calls_per_s']:.0f}/s, "
                     f"{measured['server_cpu_ms_per_call']} CPU ms per claim {measured['outcomes']}")
    # The claim path alone (no gRPC), one claim after another, in a process of its own on a fresh database;
    # the engines take turns, round after round, and each one's median counts: a shared machine's load
    # drifts over a minute (one run apiece gave ratios from 1.0 to 2.1 on the same code).
    alone: dict[str, list[dict[str, Any]]] = {engine: [] for engine, _ in engines}
    for _ in range(plan.claim_cpu_rounds):
        for engine, server_url in engines:
            with contextlib.ExitStack() as stack:
                url = stack.enter_context(_postgres_database(server_url)) if server_url else ""
                done = subprocess.run([sys.executable, "-m", "bench.claim_cpu", "--database-url", url, "--claims", str(plan.claim_cpu_claims)],
                                      capture_output=True, text=True, check=True)
                alone[engine].append(json.loads(done.stdout))
    for engine, runs in alone.items():
        figures = sorted(run["process_cpu_ms_per_claim"] for run in runs)
        median = statistics.median(figures)
        rows.append({"rpc": "ClaimUseCases.match (no gRPC)", "in_flight": 1, "calls_per_s": None, "p50_ms": None, "p99_ms": None,
                     "ratio_to_baseline": None, "server_cpu_ms_per_call": median, "tls": False, "engine": engine,
                     "calls": sum(run["claims"] for run in runs), "errors": {}, "outcomes": runs[-1]["outcomes"], "rounds": figures})
        _say(f"  engine {engine}: the claim path alone: {median} CPU ms per claim (median of {figures}) {runs[-1]['outcomes']}")
    by_engine = {(r["rpc"], r["engine"], r["in_flight"]): r["server_cpu_ms_per_call"] for r in rows}
    for rpc, n in {(r["rpc"], r["in_flight"]) for r in rows}:
        sqlite, postgres = by_engine.get((rpc, "sqlite", n)), by_engine.get((rpc, "postgresql", n))
        if sqlite and postgres:
            _say(f"  engines, {rpc} x{n}: PostgreSQL / SQLite CPU per claim = {postgres / sqlite:.2f}")
            for row in rows:
                if (row["rpc"], row["in_flight"], row["engine"]) == (rpc, n, "postgresql"):
                    row["cpu_ratio_to_sqlite"] = round(postgres / sqlite, 2)
    return rows


def _oversubscribing_quantities(claims_per_tpl: int, year: int) -> dict[str, int]:
    """Per TPL, a claim quantity (goods' unit) such that the opening batch asks 1.25 times the level."""
    from server.adapters.reference_files import PACKAGED, PACKAGED_CONVERSION, parse_conversion_table, parse_reference_data
    from server.domain.conversion import convert

    tpls = parse_reference_data(json.loads(PACKAGED.read_text(encoding="utf-8")))
    table = parse_conversion_table(json.loads(PACKAGED_CONVERSION.read_text(encoding="utf-8")))
    quantities = {}
    for tpl_number, good in GOODS.items():
        tpl = tpls.tpl(tpl_number)
        assert tpl is not None
        factor = convert(table, Decimal(1), good.unit, good.htsus_number.replace(".", ""), tpl.measure_unit).factor
        quantities[tpl_number] = math.ceil(Decimal("1.25") * tpl.annual_limits[year] / (claims_per_tpl * factor))
    return quantities


def burst_phase(workspace: Workspace, plan: Plan) -> list[dict[str, Any]]:
    """Claims presented before the 2027 period opens are QUEUED; the opening allocates them all,
    prorated. Timed from the clock crossing the opening to the answer to the first claim presented
    after it (decided after the whole batch), with certificates submitted meanwhile."""
    import grpc

    from ecert.v1 import match_pb2 as mpb
    from ecert.v1 import match_pb2_grpc
    from server.adapters.database import Database

    year = 2027
    per_tpl = plan.burst_claims // len(GOODS)
    claims_per_certificate = 10
    quantities = _oversubscribing_quantities(per_tpl, year)
    directory = workspace.root / "burst"
    directory.mkdir()
    database = Database(f"sqlite:///{directory / 'ecert.db'}")
    database.upgrade()
    database.dispose()
    certificates: dict[str, list[int]] = {}
    first = 1
    for tpl_number, good in GOODS.items():
        count = math.ceil(per_tpl / claims_per_certificate)
        dataset.load_certificates(str(directory / "ecert.db"), good, first=first, count=count,
                                  quantity=quantities[tpl_number] * claims_per_certificate, quota_year=year, at=BURST_EPOCH)
        certificates[tpl_number] = [first, count]
        first += count
    with ServerProcess(workspace, "burst", tls=False, epoch=BURST_EPOCH) as server:
        recipe = {"rpc": "match", "quota_year": year, "certificates": certificates,
                  "quantity": {t: str(q) for t, q in quantities.items()}, "imported": f"{year}-01-04",
                  # Fixed instants (10:00 Eastern, in the opening window), so the batch presented again is
                  # the same lines: replays.
                  "presented": (BURST_EPOCH - dt.timedelta(hours=1)).isoformat(),
                  "first_entry": 1, "count": per_tpl * len(GOODS)}
        queued = load(workspace, server, recipe, in_flight=(64,), duration_s=None, warmup_s=0, timeout_s=120)[0]
        _say(f"  burst: {queued['calls']:,} claims presented at {queued['calls_per_s']:.0f}/s {queued['outcomes']}"
             + (f", refused {dict(queued['errors'])}" if queued["errors"] else ""))
        refused = queued["errors"]
        for _ in range(3):
            if not refused:
                break
            # Refused while the writer was busy (RESOURCE_EXHAUSTED: retry with backoff): present the batch
            # again, as a client would (a pass can itself meet a refusal); MatchClaim replays the lines
            # already queued.
            again = load(workspace, server, recipe, in_flight=(16,), duration_s=None, warmup_s=0, timeout_s=120)[0]
            queued["outcomes"], refused = again["outcomes"], again["errors"]
            _say(f"  burst: presented again after the refusals: {again['outcomes']}" + (f", refused {dict(refused)}" if refused else ""))
        if queued["outcomes"].get("QUEUED", 0) != recipe["count"]:
            raise RuntimeError(f"expected {recipe['count']} QUEUED claims, got {queued['outcomes']} {queued['errors']}")
        with grpc.insecure_channel(server.target) as channel:
            match = match_pb2_grpc.MatchServiceStub(channel)
            finished = threading.Event()
            opening_shift = 3600 + 60
            writes = _WriteProbe(workspace, server, year, until=finished, count=max(200, plan.burst_claims // 10), shift=opening_shift)
            server.shift(opening_shift)  # the period opens
            began = time.perf_counter()
            # The first claim after the opening is decided after the whole batch: it is answered once
            # the allocation is complete (the server's timer may have begun it; they share the steps).
            writes.start()
            _trigger(match, recipe, server)
            seconds = time.perf_counter() - began
            finished.set()
            writes.join(timeout=60)
            first_claim = match.GetClaim(mpb.GetClaimRequest(entry_number=_entry(1), line_number=1), timeout=30).result
        rss = server.peak_rss_mb()
    _say(f"  burst: allocated in {seconds:.1f} s at rate {first_claim.proration_rate}; {writes.summary()}")
    return [
        {"rpc": "MatchClaim (opening queue)", "in_flight": 64, "calls_per_s": queued["calls_per_s"], "p50_ms": queued["p50_ms"],
         "p99_ms": queued["p99_ms"], "ratio_to_baseline": None, "tls": False, "calls": queued["calls"],
         "server_cpu_ms_per_call": queued.get("server_cpu_ms_per_call"), "errors": queued["errors"], "outcomes": queued["outcomes"]},
        {"rpc": "Opening allocation", "in_flight": None, "calls_per_s": round(queued["calls"] / seconds, 1),
         "p50_ms": None, "p99_ms": None, "ratio_to_baseline": None, "tls": False, "claims": queued["calls"],
         "allocation_s": round(seconds, 2), "proration_rate_tpl1": first_claim.proration_rate,
         "decision_tpl1": mpb.ClaimDecision.Name(first_claim.decision).removeprefix("CLAIM_DECISION_"), "peak_rss_mb": rss},
        {"rpc": "SubmitCertificate (during the allocation)", "in_flight": 1, "calls_per_s": writes.calls_per_s(seconds),
         "p50_ms": writes.percentile(0.5), "p99_ms": writes.percentile(0.99), "ratio_to_baseline": None, "tls": False,
         "calls": len(writes.latencies), "errors": writes.errors, "max_ms": writes.percentile(1.0)},
    ]


def _entry(transaction: int) -> str:
    from contract.entry_number import make_entry_number

    return make_entry_number("B76", transaction)


def _trigger(match: Any, recipe: dict[str, Any], server: ServerProcess) -> None:
    """One claim presented after the opening, sent until answered (refusals while busy are retried)."""
    import grpc

    from bench.workload import build

    after = dict(recipe, first_entry=recipe["count"] + 1, count=1, presented=None)
    request = build(after, dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=server.offset))[0]
    deadline = time.perf_counter() + 1800
    while True:
        try:
            match.MatchClaim(request, timeout=max(1.0, deadline - time.perf_counter()))
            return
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or time.perf_counter() > deadline:
                raise
            _say(f"  burst: the triggering claim was answered {error.code().name}; sending it again")


class _WriteProbe(threading.Thread):
    """Other writes while the opening allocation runs: certificates submitted one at a time, each
    timed, until told to stop. The allocation should leave room for them between its steps."""

    def __init__(self, workspace: Workspace, server: ServerProcess, year: int, *, until: threading.Event, count: int, shift: float):
        super().__init__(daemon=True)
        from bench.workload import build

        # Signed now, sent after the clock's coming shift: dated at the service's time then.
        now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=server.offset + shift)
        self._requests = build({"rpc": "submit", "signing_key": str(workspace.signing_key), "key_id": KEY_ID, "quota_year": year,
                                "quantity": "1000", "first": 9_000_000, "count": count}, now)
        self._target = server.target
        self._until = until
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def run(self) -> None:
        import grpc

        from ecert.v1 import transmission_pb2_grpc

        with grpc.insecure_channel(self._target) as channel:
            submit = transmission_pb2_grpc.TransmissionServiceStub(channel).SubmitCertificate
            for request in self._requests:
                if self._until.is_set():
                    return
                began = time.perf_counter()
                try:
                    submit(request, timeout=30)
                    self.latencies.append((time.perf_counter() - began) * 1000)
                except grpc.RpcError as error:
                    self.errors[error.code().name] = self.errors.get(error.code().name, 0) + 1

    def percentile(self, share: float) -> float | None:
        from bench.load import percentile

        return round(percentile(sorted(self.latencies), share), 1) if self.latencies else None

    def calls_per_s(self, seconds: float) -> float:
        return round(len(self.latencies) / seconds, 1) if seconds else 0.0

    def summary(self) -> str:
        return f"{len(self.latencies)} certificates stored meanwhile, slowest {self.percentile(1.0)} ms, refused {self.errors or 'none'}"


# -- output -----------------------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("rpc", "mTLS", "in flight", "stored", "calls/s", "p50 ms", "p99 ms", "ratio", "CPU ms/call", "peak RSS MiB", "notes"):
        table.add_column(column, justify="left" if column in ("rpc", "notes") else "right")
    for row in rows:
        notes = []
        if row.get("engine"):
            notes.append(f"on {row['engine']}" + (f", CPU {row['cpu_ratio_to_sqlite']:.2f} x SQLite's" if row.get("cpu_ratio_to_sqlite") else ""))
        if row.get("errors"):
            notes.append("errors " + ", ".join(f"{k} {v}" for k, v in row["errors"].items()))
        if row.get("allocation_s") is not None:
            notes.append(f"{row['claims']:,} claims in {row['allocation_s']} s, TPL 1 rate {row['proration_rate_tpl1']}")
        if row.get("max_ms") is not None:
            notes.append(f"slowest {row['max_ms']:,.0f} ms")
        table.add_row(
            row["rpc"], "on" if row.get("tls") else "off", "" if row["in_flight"] is None else str(row["in_flight"]),
            f"{row['stored_rows']:,}" if row.get("stored_rows") else "", "" if row["calls_per_s"] is None else f"{row['calls_per_s']:,.0f}",
            "" if row["p50_ms"] is None else f"{row['p50_ms']:.1f}", "" if row["p99_ms"] is None else f"{row['p99_ms']:.1f}",
            "" if row["ratio_to_baseline"] is None else f"{row['ratio_to_baseline']:.2f}",
            "" if row.get("server_cpu_ms_per_call") is None else f"{row['server_cpu_ms_per_call']:.2f}",
            "" if row.get("peak_rss_mb") is None else f"{row['peak_rss_mb']:.0f}", "; ".join(notes),
        )
    Console(width=170).print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, small data (CI; under two minutes)")
    parser.add_argument("--json", type=pathlib.Path, help="also write the results to this file")
    parser.add_argument("--only", choices=("rpcs", "growth", "burst", "engines"), action="append", help="run only these phases")
    parser.add_argument("--postgres-url", default=os.environ.get("ECERT_BENCH_POSTGRES_URL") or os.environ.get("ECERT_TEST_POSTGRES_URL"),
                        help="a PostgreSQL server for the engines phase (a database is created on it and dropped)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    phases = set(args.only or ("rpcs", "growth", "burst", "engines"))
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ecert-bench-") as folder:
        workspace = Workspace(pathlib.Path(folder))
        baseline: dict[int, float] = {}
        if "rpcs" in phases:
            for tls in (False, True):
                _say(f"RPCs, mutual TLS {'on' if tls else 'off'}")
                rows += rpc_phase(workspace, plan, tls)
            baseline = {r["in_flight"]: r["calls_per_s"] for r in rows if r["rpc"] == RPC_NAMES["echo"] and not r["tls"]}
        if "growth" in phases:
            _say("growth")
            rows += growth_phase(workspace, plan, baseline)
        if "burst" in phases:
            _say("opening-day burst")
            rows += burst_phase(workspace, plan)
        if "engines" in phases:
            _say("CPU per claim on each engine")
            rows += engines_phase(workspace, plan, args.postgres_url)
    elapsed = time.perf_counter() - began
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    print_table(rows, f"ecert bench{' --quick' if args.quick else ''}: {machine}, {elapsed:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
