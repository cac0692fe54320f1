"""The load generator: a separate process (its own GIL) that keeps N calls in flight on one channel.

`python -m bench.load` reads a JSON spec on stdin and writes one JSON result on stdout:
  spec:   target, tls_dir ("" for plaintext), rpc, in_flight (a list: one measurement each, in turn,
          drawing on the same requests), warmup_s, duration_s (null: until the requests run out),
          timeout_s, clock_offset_s, recipe (bench/workload.py)
  result: a list, per in_flight: calls, errors (by status code), seconds, calls_per_s, p50_ms, p99_ms,
          outcomes, used_requests
While it runs it writes `mark begin` and `mark end` on stderr around each recorded measurement, so that
the parent can read the server process's CPU time at those instants (bench/cli.py).
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import sys
import time
from typing import Any

import grpc

from bench.workload import build
from ecert.bench.v1 import echo_pb2_grpc
from ecert.v1 import match_pb2_grpc, quota_pb2_grpc, transmission_pb2_grpc


def _method(channel: grpc.aio.Channel, rpc: str):  # type: ignore[no-untyped-def]  # returns an untyped grpc stub method
    if rpc == "echo":
        return echo_pb2_grpc.EchoServiceStub(channel).Echo
    if rpc == "submit":
        return transmission_pb2_grpc.TransmissionServiceStub(channel).SubmitCertificate
    if rpc == "match":
        return match_pb2_grpc.MatchServiceStub(channel).MatchClaim
    if rpc == "quota":
        return quota_pb2_grpc.QuotaServiceStub(channel).GetQuotaStatus
    raise ValueError(rpc)


def _outcome(rpc: str, response: Any) -> str:
    """What the service decided, so that a run measuring a cheap refusal path shows it."""
    if rpc == "match":
        from ecert.v1 import match_pb2

        return match_pb2.ClaimDecision.Name(response.result.decision).removeprefix("CLAIM_DECISION_")
    if rpc == "submit":
        return "REPLAYED" if response.replayed else "STORED"
    return "OK"


def percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


async def run(spec: dict[str, Any]) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=spec.get("clock_offset_s", 0.0))
    requests = build(spec["recipe"], now)
    options = [("grpc.max_receive_message_length", 8 * 1024 * 1024)]
    if spec["tls_dir"]:
        from client.tls import channel_credentials

        channel = grpc.aio.secure_channel(spec["target"], channel_credentials(spec["tls_dir"]), options=options)
    else:
        channel = grpc.aio.insecure_channel(spec["target"], options=options)
    await channel.channel_ready()
    call = _method(channel, spec["rpc"])
    results = []
    offset = 0
    for in_flight in spec["in_flight"]:
        result = await measure(spec, call, requests, offset, in_flight)
        offset += result["used_requests"]
        results.append(result)
    await channel.close()
    return results


async def measure(spec: dict[str, Any], call: Any, requests: Any, offset: int, in_flight: int) -> dict[str, Any]:
    cycle = spec["recipe"]["rpc"] in ("echo", "quota")  # the same request again and again
    timeout = spec.get("timeout_s", 30.0)
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    outcomes: collections.Counter[str] = collections.Counter()
    next_index = offset
    recording = False
    stop_at = float("inf")

    async def worker() -> None:
        nonlocal next_index
        while time.perf_counter() < stop_at:
            if cycle:
                request = requests[0]
            elif next_index < len(requests):
                request = requests[next_index]
                next_index += 1
            else:
                return
            started = time.perf_counter()
            try:
                response = await call(request, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                if recording:  # the code and the start of the message (which names the reason)
                    errors[f"{error.code().name}: {(error.details() or '')[:48]}"] += 1
                continue
            if recording:
                latencies.append(time.perf_counter() - started)
                outcomes[_outcome(spec["rpc"], response)] += 1

    duration = spec.get("duration_s")
    if spec.get("warmup_s"):
        stop_at = time.perf_counter() + spec["warmup_s"]
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    recording = True
    _mark("begin")
    began = time.perf_counter()
    stop_at = began + duration if duration else float("inf")
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    seconds = time.perf_counter() - began
    _mark("end")
    latencies.sort()
    return {
        "calls": len(latencies),
        "errors": dict(errors),
        "seconds": round(seconds, 3),
        "calls_per_s": round(len(latencies) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "outcomes": dict(outcomes),
        "used_requests": 0 if cycle else next_index - offset,
    }


def _mark(what: str) -> None:
    print(f"mark {what}", file=sys.stderr, flush=True)


def main() -> None:
    spec = json.load(sys.stdin)
    json.dump(asyncio.run(run(spec)), sys.stdout)


if __name__ == "__main__":
    main()
