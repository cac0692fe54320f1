"""The serving layer's admission and worker gate (server/api/limits.py, server/api/serving.py) on their own;
tests/integration/test_hostile_callers.py attacks a real server with them."""
from __future__ import annotations

import asyncio

import pytest

from server.api.limits import CallAdmission
from server.api.serving import WorkerGate


def test_one_identity_holds_at_most_its_share_and_gets_it_back():
    admission = CallAdmission(per_identity=2, total=10, reserved=2)
    assert admission.admit("importer", False) is None
    assert admission.admit("importer", False) is None
    refused = admission.admit("importer", False)
    assert refused is not None and refused.reason == "TOO_MANY_CALLS_FOR_CALLER"
    assert admission.admit("another importer", False) is None  # a share each
    admission.release("importer")
    assert admission.admit("importer", False) is None
    assert admission.in_flight == 3


def test_the_reserved_calls_are_only_for_privileged_callers():
    admission = CallAdmission(per_identity=10, total=4, reserved=1)
    for caller in ("a", "b", "c"):
        assert admission.admit(caller, False) is None
    refused = admission.admit("d", False)
    assert refused is not None and refused.reason == "TOO_MANY_CALLS"
    assert refused.metadata == {"per_identity": "10", "total": "4", "reserved": "1"}
    assert admission.admit("customs", True) is None  # the kept one
    refused = admission.admit("admin", True)
    assert refused is not None and refused.reason == "TOO_MANY_CALLS"


def test_a_reservation_leaves_at_least_one_call_for_everyone_else():
    admission = CallAdmission(per_identity=1, total=2, reserved=5)
    assert admission.reserved == 1
    assert admission.admit("importer", False) is None


def test_limits_are_positive():
    with pytest.raises(ValueError):
        CallAdmission(per_identity=0, total=1, reserved=0)


def test_workers_kept_for_privileged_calls_and_handed_over_in_turn():
    async def scenario() -> list[str]:
        gate = WorkerGate(workers=2, reserved=1)
        order: list[str] = []
        await gate.acquire(False)  # an importer takes the one open worker
        waiting = asyncio.ensure_future(gate.acquire(False))  # another waits: the last one is kept
        await asyncio.sleep(0)
        assert not waiting.done()
        await gate.acquire(True)  # customs takes the kept one at once
        order.append("customs")
        customs_again = asyncio.ensure_future(gate.acquire(True))
        await asyncio.sleep(0)
        gate.release()  # customs' first call ends: the waiting importer may not take the kept worker ...
        await asyncio.sleep(0)
        assert customs_again.done() and not waiting.done()  # ... customs, waiting too, does
        order.append("customs again")
        gate.release()
        gate.release()
        await asyncio.wait_for(waiting, 1)
        order.append("importer")
        return order

    assert asyncio.run(scenario()) == ["customs", "customs again", "importer"]


def test_a_call_that_ends_while_waiting_for_a_worker_leaves_the_queue():
    async def scenario() -> int:
        gate = WorkerGate(workers=1, reserved=0)
        await gate.acquire(False)
        waiting = asyncio.ensure_future(gate.acquire(False))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.release()
        return gate.free

    assert asyncio.run(scenario()) == 1
