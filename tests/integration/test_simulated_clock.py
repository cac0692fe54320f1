"""A clock a test harness drives (issue 13, item 8): `ecert serve --simulated-clock START` starts the
service's clock there and serves ecert.v1.ClockService, to the admin role only; a service on the
real clock has no such service. Through a real server on each engine, and the `ecert clock` command."""
from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.tls import server_credentials
from ecert.v1 import clock_pb2 as kpb
from ecert.v1 import clock_pb2_grpc, match_pb2_grpc, transmission_pb2_grpc
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from server.app import RunningServer, create_server
from server.config import ConfigError, Settings
from tests.factories import certificate, claim_line, envelope
from tests.grpc_errors import rich_error
from tests.processes import ROOT
from tests.tls_fixtures import channel_as, pki, service_settings  # noqa: F401 (fixture)

START = dt.datetime(2026, 12, 31, 17, 0, tzinfo=dt.timezone.utc)  # noon Eastern on 31 December
# The 2027 opening date is its first business day, Monday 4 January (1 January a holiday, then a
# weekend); its window runs from 00:00 to 12:00 noon Eastern (quota bulletins, e.g. QB 24-111).
WINDOW_OPENS = dt.datetime(2027, 1, 4, 5, 0, tzinfo=dt.timezone.utc)
WINDOW_CLOSES = dt.datetime(2027, 1, 4, 17, 0, tzinfo=dt.timezone.utc)


def stamp(at: dt.datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(at)
    return value


@pytest.fixture
def simulated(settings: Settings) -> Iterator[RunningServer]:
    running = create_server(dataclasses.replace(settings, simulated_clock=START.isoformat()), address="127.0.0.1:0")
    yield running
    running.stop(0)


@pytest.fixture
def clock_service(simulated: RunningServer) -> Iterator[clock_pb2_grpc.ClockServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{simulated.port}") as channel:
        yield clock_pb2_grpc.ClockServiceStub(channel)


def now_of(clock: clock_pb2_grpc.ClockServiceStub) -> dt.datetime:
    answer = clock.GetTime(kpb.GetTimeRequest())
    assert answer.simulated
    return answer.now.ToDatetime(tzinfo=dt.timezone.utc)


def test_a_harness_plays_an_opening_on_the_simulated_clock(simulated, clock_service, partner):
    clock = clock_service  # type: ignore[no-untyped-def]
    assert START <= now_of(clock) < START + dt.timedelta(minutes=1)
    with grpc.insecure_channel(f"127.0.0.1:{simulated.port}") as channel:
        transmission = transmission_pb2_grpc.TransmissionServiceStub(channel)
        match = match_pb2_grpc.MatchServiceStub(channel)
        sent = now_of(clock)
        cert = certificate("MX27-00000001", quota_year=2027, issue_date="2026-12-20", last_valid_date="2027-12-31")
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, cert, message_id="sim-1", sent_at=sent)))
        at = now_of(clock)
        # Presented on 31 December, before the opening date: no quota status.
        too_early = claim_line(1, certificate_number="MX27-00000001", date_of_importation="2027-01-01", filed_at=at, arrived_at=at, paid_at=at)
        refused = match.MatchClaim(mpb.MatchClaimRequest(line=too_early)).result
        assert (refused.decision, list(refused.reasons)) == (mpb.CLAIM_DECISION_MFN_REQUIRED, ["PRESENTED_BEFORE_OPENING"])
        # 10:00 Eastern on the opening date: in the window, the line waits for the opening batch.
        clock.SetTime(kpb.SetTimeRequest(now=stamp(WINDOW_OPENS + dt.timedelta(hours=10))))
        at = now_of(clock)
        early = claim_line(2, certificate_number="MX27-00000001", date_of_importation="2027-01-01", filed_at=at, arrived_at=at, paid_at=at)
        queued = match.MatchClaim(mpb.MatchClaimRequest(line=early)).result
        assert queued.decision == mpb.CLAIM_DECISION_QUEUED
        assert queued.presentation_time.ToDatetime(tzinfo=dt.timezone.utc) == WINDOW_CLOSES  # the opening moment's time stamp
        # Three hours later the window has closed: the batch is decided first, then a new claim at once.
        moved = clock.AdvanceTime(kpb.AdvanceTimeRequest(by=Duration(seconds=3 * 3600))).now.ToDatetime(tzinfo=dt.timezone.utc)
        assert moved >= WINDOW_CLOSES
        at = now_of(clock)
        later = claim_line(3, certificate_number="MX27-00000001", date_of_importation="2027-01-01", filed_at=at, arrived_at=at, paid_at=at)
        assert match.MatchClaim(mpb.MatchClaimRequest(line=later)).result.decision == mpb.CLAIM_DECISION_PREFERENTIAL
        decided = match.GetClaim(mpb.GetClaimRequest(entry_number=early.entry_number, line_number=1)).result
        assert decided.decision == mpb.CLAIM_DECISION_PREFERENTIAL
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="ecert.v1.ClockService"))
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_the_clock_never_runs_backwards_and_bad_requests_say_why(clock_service):
    clock = clock_service  # type: ignore[no-untyped-def]
    ahead = START + dt.timedelta(days=2)
    assert clock.SetTime(kpb.SetTimeRequest(now=stamp(ahead))).now.ToDatetime(tzinfo=dt.timezone.utc) == ahead
    cases = [
        (lambda: clock.SetTime(kpb.SetTimeRequest(now=stamp(START))), grpc.StatusCode.FAILED_PRECONDITION, "CLOCK_BACKWARDS"),
        (lambda: clock.SetTime(kpb.SetTimeRequest()), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_REQUIRED"),
        (lambda: clock.AdvanceTime(kpb.AdvanceTimeRequest(by=Duration(seconds=-1))), grpc.StatusCode.INVALID_ARGUMENT, "DURATION_NEGATIVE"),
        (lambda: clock.AdvanceTime(kpb.AdvanceTimeRequest(by=Duration(seconds=40 * 366 * 86400))), grpc.StatusCode.INVALID_ARGUMENT,
         "CLOCK_JUMP_TOO_LARGE"),
        (lambda: clock.AdvanceTime(kpb.AdvanceTimeRequest()), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_REQUIRED"),
    ]
    for call, code, reason in cases:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert (rich_error(caught.value).code, rich_error(caught.value).reason) == (code, reason)
    assert ahead <= now_of(clock) < ahead + dt.timedelta(minutes=1)  # nothing refused moved it


def test_a_service_on_the_real_clock_has_no_clock_service(channel):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        clock_pb2_grpc.ClockServiceStub(channel).GetTime(kpb.GetTimeRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_only_an_admin_drives_the_clock_under_mutual_tls(pki, tmp_path):  # type: ignore[no-untyped-def]  # noqa: F811
    settings = dataclasses.replace(service_settings(pki, tmp_path / "service"), simulated_clock=START.isoformat())
    running = create_server(settings, address="127.0.0.1:0", credentials=server_credentials(pki.dir("service")))
    try:
        for party in ("importer", "customs", "gateway-mx"):
            with channel_as(pki, party, running.port) as channel, pytest.raises(grpc.RpcError) as caught:
                clock_pb2_grpc.ClockServiceStub(channel).AdvanceTime(kpb.AdvanceTimeRequest(by=Duration(seconds=3600)))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, party
        with channel_as(pki, "admin", running.port) as channel:
            moved = clock_pb2_grpc.ClockServiceStub(channel).AdvanceTime(kpb.AdvanceTimeRequest(by=Duration(seconds=3600)))
        assert moved.now.ToDatetime(tzinfo=dt.timezone.utc) >= START + dt.timedelta(hours=1)
    finally:
        running.stop(0)


def test_a_simulated_clock_is_an_instant_and_not_beside_an_offset():
    with pytest.raises(ConfigError):
        Settings(simulated_clock="next tuesday").validate()
    with pytest.raises(ConfigError):
        Settings(simulated_clock=START.isoformat(), clock_offset_seconds=30).validate()


def test_the_clock_command_reads_and_advances_it(simulated):  # type: ignore[no-untyped-def]
    def ecert(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "client.cli", "clock", *args, "--insecure", "--target", f"127.0.0.1:{simulated.port}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    advanced = ecert("advance", "1d2h")
    assert advanced.returncode == 0, advanced.stderr
    assert dt.datetime.fromisoformat(advanced.stdout.strip()) >= START + dt.timedelta(days=1, hours=2)
    read = ecert("get")
    assert dt.datetime.fromisoformat(read.stdout.strip()) >= dt.datetime.fromisoformat(advanced.stdout.strip())
    bad = ecert("advance", "soon")
    assert bad.returncode == 2 and "a duration like 3h" in bad.stderr
    backwards = ecert("set", START.isoformat())
    assert backwards.returncode == 1 and "CLOCK_BACKWARDS" in backwards.stderr
