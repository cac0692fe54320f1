"""SIGKILL the service in the middle of a claim storm, restart it, retry the claims whose answers never
came: nothing acknowledged is lost, nothing is charged twice, every balance ends exactly at its limit,
and the audit log still verifies. On SQLite and on PostgreSQL."""
from __future__ import annotations

import pathlib
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from tests.claim_storm import after_cutoff, assert_exact, audit_verifies, balances, load_small_levels, storm_lines, transmit_certificates
from tests.factories import new_signer
from tests.processes import Deployment, ServiceProcess

pytestmark = pytest.mark.slow

LEVEL_CLAIMS, BOUND_CLAIMS = 160, 45
KILL_AFTER = 70
IN_FLIGHT = 16


def storm(target: str, lines: list[mpb.EntrySummaryLine], answered: dict[int, mpb.MatchClaimResponse],
          tick: threading.Semaphore | None = None) -> None:
    """Send every line not yet answered; a line whose call fails stays unanswered."""
    with grpc.insecure_channel(target) as channel:
        service = match_pb2_grpc.MatchServiceStub(channel)

        def send(index: int) -> None:
            try:
                response = service.MatchClaim(mpb.MatchClaimRequest(line=lines[index]), timeout=60)
            except grpc.RpcError as error:
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), error
                return
            answered[index] = response
            if tick:
                tick.release()

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(send, [i for i in range(len(lines)) if i not in answered]))


def test_sigkill_mid_claim_storm_loses_nothing_and_charges_nothing_twice(tmp_path: pathlib.Path, database_url: str):
    deployment = Deployment(tmp_path, database_url, new_signer("mx-se-2026-1"))
    service = ServiceProcess(deployment, "service").start()
    load_small_levels(deployment)
    transmit_certificates(deployment, service.target)
    lines = storm_lines(LEVEL_CLAIMS, BOUND_CLAIMS)  # presented after the certificates were received

    answered: dict[int, mpb.MatchClaimResponse] = {}
    tick = threading.Semaphore(0)
    running = threading.Thread(target=storm, args=(service.target, lines, answered, tick))
    running.start()
    for _ in range(KILL_AFTER):
        assert tick.acquire(timeout=60), "the storm stalled before the kill"
    service.kill()
    running.join(120)
    before_crash = dict(answered)
    assert KILL_AFTER <= len(before_crash) < len(lines), "the kill did not land mid-storm"

    restarted = ServiceProcess(deployment, "restarted").start()
    try:
        storm(restarted.target, lines, answered)  # the clients retry what they never saw answered
        assert len(answered) == len(lines)
        # Every line again: each answer acknowledged before the crash comes back unchanged.
        again: dict[int, mpb.MatchClaimResponse] = {}
        storm(restarted.target, lines, again)
    finally:
        restarted.stop()
    assert all(r.replayed for r in again.values())
    for index, response in before_crash.items():
        assert again[index].result == response.result, f"claim {index} decided differently after the crash"
    decided = after_cutoff(deployment, lines)  # the claims that waited near fill, decided by the cutoff batch
    assert_exact(balances(database_url), decided, len(lines))
    audit_verifies(deployment)
