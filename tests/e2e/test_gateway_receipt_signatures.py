"""The gateway says whether it checked customs' signatures: without --customs-key its summary reports the
receipts as unverified instead of a reassuring bad_receipts=0. Real service, relay and gateway processes."""
from __future__ import annotations

import json
import subprocess


def run(args: list[str]) -> tuple[dict, str]:  # type: ignore[type-arg]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def without_customs_key(args: list[str]) -> list[str]:
    at = args.index("--customs-key")
    return args[:at] + args[at + 2:]


def test_receipts_are_verified_with_customs_key_and_reported_unverified_without(world):
    world.start_relay()
    verified, warnings = run(world.gateway_args("burst", "--count", "2"))
    assert (verified["receipts"], verified["bad_receipts"]) == (2, 0)
    assert (verified["receipt_signatures"], verified["unverified_receipts"]) == ("verified", 0)
    assert "customs-key" not in warnings

    unchecked, warnings = run(without_customs_key(world.gateway_args("burst", "--count", "3")))
    assert unchecked["receipts"] == 3
    assert (unchecked["receipt_signatures"], unchecked["unverified_receipts"]) == ("unverified", 3)
    assert "warning: no --customs-key" in warnings
