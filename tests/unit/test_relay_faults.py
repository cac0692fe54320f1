"""Backoff bounds and the corruption fault: pure behaviour, seeded randomness."""
from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.signing import Signer
from gateway_sim.relay.faults import Faults
from gateway_sim.relay.forwarder import RetryPolicy
from tests.factories import envelope


def test_backoff_is_full_jitter_under_a_doubling_cap():
    policy, faults = RetryPolicy(base_seconds=0.1, cap_seconds=2.0), Faults(seed=1)
    for attempt, cap in ((0, 0.1), (1, 0.2), (3, 0.8), (5, 2.0), (60, 2.0)):
        delays = [policy.backoff(attempt, faults) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the whole range, not a fixed delay


def test_corruption_changes_exactly_one_byte_of_the_payload():
    original = envelope(Signer("k", Ed25519PrivateKey.generate()))
    faults = Faults(seed=9)
    for _ in range(50):
        damaged = faults.corrupt_one_byte(original).SerializeToString()
        clean = original.SerializeToString()
        assert len(damaged) == len(clean)
        assert sum(a != b for a, b in zip(damaged, clean)) == 1
