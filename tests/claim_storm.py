"""A claim storm for real service processes: certificates, claims and the exact balances they must end at.

Two groups of claims, interleaved so that both limits are under fire at once:
- level-bound: TPL 4 (woven fabric, M2 = SME one to one) with a 1,000 SME level and 2,000 M2 of
  certificates; claims of 7 M2, each presented a microsecond after the one before: up to the critical
  share (900 SME) they are decided at once in whatever order they arrive (128 claims), the rest wait
  for the daily cutoff batch, which decides them in presentation order (`after_cutoff`): 14 more fit
  whole, one is cut to 6 and the rest pay MFN;
- certificate-bound: TPL 1 (the packaged, large level) on certificates of 100 DOZ; claims of 10 DOZ,
  so each certificate grants exactly ten of them and refuses the rest.
"""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

import grpc

from sqlalchemy import create_engine, text

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from server.service.reference import ReferenceStore
from ecert.v1 import match_pb2_grpc
from server.service.quota import QuotaCalendar
from tests.factories import claim_line, small_levels
from tests.processes import ROOT, Deployment, ServiceProcess, envelope_now, stub, todays_certificate

RECHECK_SECONDS = ReferenceStore.RECHECK_SECONDS

LEVEL_TPL, AGGREGATE_TPL, LEVEL_LIMIT = "9823.53.04", "9823.53.03", Decimal(1000)
FABRIC = {"tpl_number": LEVEL_TPL, "htsus_number": "5208.12.4020", "unit": "M2", "goods_description": "Woven fabric"}
LEVEL_CERTIFICATES = [f"MX26-0000010{n}" for n in range(4)]  # 500 M2 each
BOUND_CERTIFICATES = [f"MX26-0000020{n}" for n in range(3)]  # 100 DOZ each
MICRO = Decimal(1_000_000)


def load_small_levels(deployment: Deployment) -> None:
    """As an operator would: `ecert reference load` a TPL table with a 1,000 SME level for TPL 4."""
    year = dt.datetime.now(dt.timezone.utc).year
    path = deployment.root / "shared" / "levels.json"
    path.write_text(small_levels("storm-1", {LEVEL_TPL: str(LEVEL_LIMIT), AGGREGATE_TPL: "100000"}, years=(year - 1, year + 1)))
    done = subprocess.run([sys.executable, "-m", "client.cli", "reference", "load", str(path), "--database-url", deployment.database_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=deployment.env("reference-load"))
    assert done.returncode == 0, done.stdout + done.stderr
    time.sleep(RECHECK_SECONDS + 0.2)  # running services notice a new version within this


def audit_verifies(deployment: Deployment) -> None:
    done = subprocess.run([sys.executable, "-m", "client.cli", "audit", "verify", "--database-url", deployment.database_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=deployment.env("audit"))
    assert done.returncode == 0, done.stdout + done.stderr


def transmit_certificates(deployment: Deployment, target: str) -> None:
    channel, service = stub(target)
    with channel:
        for n, number in enumerate(LEVEL_CERTIFICATES):
            cert = todays_certificate(number, quantity="500", **FABRIC)
            service.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope_now(deployment.partner, cert, message_id=f"lc-{n}")))
        for n, number in enumerate(BOUND_CERTIFICATES):
            cert = todays_certificate(number, quantity="100")
            service.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope_now(deployment.partner, cert, message_id=f"bc-{n}")))


def storm_lines(level_claims: int, bound_claims: int) -> list[mpb.EntrySummaryLine]:
    now = dt.datetime.now(dt.timezone.utc)
    today = now.date().isoformat()
    times = {"filed_at": now - dt.timedelta(minutes=30), "arrived_at": now - dt.timedelta(minutes=20), "paid_at": now}  # after the certificates were sent
    level = [
        claim_line(1000 + n, certificate_number=LEVEL_CERTIFICATES[n % 4], quantity="7", date_of_importation=today,
                   tpl_number=LEVEL_TPL, htsus_number=FABRIC["htsus_number"], unit="M2",
                   **{**times, "paid_at": now + dt.timedelta(microseconds=n)})  # one presentation order
        for n in range(level_claims)
    ]
    bound = [
        claim_line(5000 + n, certificate_number=BOUND_CERTIFICATES[n % 3], quantity="10", date_of_importation=today, **times)
        for n in range(bound_claims)
    ]
    # Interleaved, so that both groups race at the same time.
    mixed: list[mpb.EntrySummaryLine] = []
    for n in range(max(len(level), len(bound))):
        mixed.extend(group[n] for group in (level, bound) if n < len(group))
    return mixed


@dataclass(frozen=True)
class Balances:
    level_charged: Decimal
    aggregate_charged: Decimal
    ledger_sum: Decimal
    used: dict[str, Decimal]  # certificate number -> used quantity
    claims: int
    granted_by_certificate: dict[str, Decimal]  # from the recorded decisions
    granted_measure_on_level: Decimal


def balances(database_url: str) -> Balances:
    engine = create_engine(database_url)
    year = dt.datetime.now(dt.timezone.utc).year
    try:
        with engine.connect() as c:
            def micro(sql: str, **params: object) -> Decimal:
                return Decimal(int(c.execute(text(sql), params).scalar_one() or 0)) / MICRO

            level = micro("SELECT charged FROM quota_usage WHERE tpl_number = :t AND quota_year = :y", t=LEVEL_TPL, y=year)
            aggregate = micro("SELECT charged FROM quota_usage WHERE tpl_number = :t AND quota_year = :y", t=AGGREGATE_TPL, y=year)
            ledger = micro("SELECT sum(delta) FROM quota_ledger WHERE tpl_number = :t AND quota_year = :y", t=LEVEL_TPL, y=year)
            used = {n: Decimal(u) / MICRO for n, u in c.execute(text("SELECT certificate_number, used_quantity FROM certificates"))}
            claims = int(c.execute(text("SELECT count(*) FROM claims")).scalar_one())
            granted = {
                n: Decimal(int(g)) / MICRO
                for n, g in c.execute(text("SELECT certificate_number, sum(granted_quantity) FROM claims GROUP BY certificate_number"))
            }
            on_level = micro("SELECT sum(granted_measure) FROM claims WHERE tpl_number = :t", t=LEVEL_TPL)
    finally:
        engine.dispose()
    return Balances(level, aggregate, ledger, used, claims, granted, on_level)


def after_cutoff(deployment: Deployment, lines: list[mpb.EntrySummaryLine], timeout: float = 60) -> list[mpb.ClaimResult]:
    """Start a replica on a clock moved just past the next daily cutoff (20:30 Eastern), let its timer run
    that cutoff's batch, and read every line's claim back once none is PENDING any more."""
    now = dt.datetime.now(dt.timezone.utc)
    cutoff = QuotaCalendar(ZoneInfo("America/New_York"), Decimal("0.9")).next_cutoff(now)
    offset = (cutoff + dt.timedelta(seconds=2) - now).total_seconds()
    service = ServiceProcess(deployment, "after-cutoff", ECERT_CLOCK_OFFSET_SECONDS=f"{offset:.3f}").start()
    try:
        channel = grpc.insecure_channel(service.target)
        match = match_pb2_grpc.MatchServiceStub(channel)
        deadline = time.monotonic() + timeout
        while True:
            results = [match.GetClaim(mpb.GetClaimRequest(entry_number=line.entry_number, line_number=line.line_number), timeout=30).result
                       for line in lines]
            if all(r.decision != mpb.CLAIM_DECISION_PENDING for r in results):
                return results
            assert time.monotonic() < deadline, "the cutoff batch did not decide the pending claims"
            time.sleep(0.5)
    finally:
        channel.close()
        service.stop()


def assert_exact(b: Balances, results: Iterable[mpb.ClaimResult], claims: int) -> None:
    """The level and the certificates end exactly at their limits; every claim has one decision."""
    results = list(results)
    assert b.claims == claims == len({(r.entry_number, r.line_number) for r in results}) == len({r.claim_id for r in results})
    assert b.level_charged == LEVEL_LIMIT == b.ledger_sum == b.granted_measure_on_level
    assert b.aggregate_charged == LEVEL_LIMIT  # TPL 4 also charges the aggregate TPL 3
    assert sum(b.used[n] for n in LEVEL_CERTIFICATES) == LEVEL_LIMIT
    assert all(Decimal(0) <= b.used[n] <= 500 for n in LEVEL_CERTIFICATES)
    assert all(b.used[n] == 100 for n in BOUND_CERTIFICATES)
    assert all(b.used[n] == b.granted_by_certificate.get(n, 0) for n in (*LEVEL_CERTIFICATES, *BOUND_CERTIFICATES))
    # What the callers were told agrees with what is stored.
    told = sum((Decimal(r.granted_measure) for r in results if r.tpl_number == LEVEL_TPL), Decimal(0))
    assert told == LEVEL_LIMIT
    partial = [r for r in results if r.decision == mpb.CLAIM_DECISION_PARTIAL]
    assert [Decimal(r.granted_quantity) for r in partial] == [Decimal(6)]
