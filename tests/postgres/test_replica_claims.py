"""A claim storm at two `ecert serve` replicas on one PostgreSQL: the same nearly full level, the same
certificates. Near fill claims wait for the cutoff batch; after it nothing ends over its limit,
everything ends exactly at it, every claim has one decision, a repeat at the other replica replays
it, and the audit log verifies."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from tests.claim_storm import after_cutoff, assert_exact, audit_verifies, balances, load_small_levels, storm_lines, transmit_certificates
from tests.processes import Deployment, replicas, stub

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEVEL_CLAIMS, BOUND_CLAIMS = 160, 45
IN_FLIGHT = 24


def match_at(targets: list[str], lines: list[mpb.EntrySummaryLine]) -> list[mpb.MatchClaimResponse]:
    channels = [stub(t)[0] for t in targets]
    stubs = [match_pb2_grpc.MatchServiceStub(c) for c in channels]
    try:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            return list(pool.map(lambda p: stubs[p[0] % len(stubs)].MatchClaim(mpb.MatchClaimRequest(line=p[1]), timeout=60),
                                 enumerate(lines)))
    finally:
        for channel in channels:
            channel.close()


def test_claim_storm_across_replicas_ends_exactly_at_the_limits(deployment: Deployment):
    with replicas(deployment, 2) as services:
        targets = [s.target for s in services]
        load_small_levels(deployment)
        transmit_certificates(deployment, targets[0])
        lines = storm_lines(LEVEL_CLAIMS, BOUND_CLAIMS)  # presented after the certificates were received
        first = match_at(targets, lines)
        assert not any(r.replayed for r in first)
        # The same lines again, each at the replica that did NOT decide it: the original answer,
        # nothing charged or reserved twice.
        after_storm = balances(deployment.database_url)
        again = match_at(list(reversed(targets)), lines)
        assert all(r.replayed for r in again)
        assert [(r.result.claim_id, r.result.decision, r.result.granted_quantity) for r in again] == [
            (r.result.claim_id, r.result.decision, r.result.granted_quantity) for r in first
        ]
        assert balances(deployment.database_url) == after_storm

    decided = after_cutoff(deployment, lines)
    assert_exact(balances(deployment.database_url), decided, len(lines))

    audit_verifies(deployment)
