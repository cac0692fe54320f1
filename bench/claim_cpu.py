"""The claim path's CPU per claim without gRPC: `ClaimUseCases.match` called in one thread of one process.

    python -m bench.claim_cpu [--database-url URL] [--claims N]

Started by the engines phase (bench/cli.py) once per engine, in its own process, on a fresh database:
the real service (`create_server`, its sequencer and timers running) with certificates submitted, then
`--claims` claims matched one after the other, each charging a certificate and the TPL 1 level and
recording its log entry. Prints one JSON object: claims, process_cpu_ms_per_claim (all threads: the
sequencer's work for these claims included), thread_cpu_ms_per_claim (the calling thread only), outcomes.
The gRPC layers, the same on both engines, are left out: what differs is the adapters' work.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import resource
import tempfile
import time

WARMUP_CLAIMS = 100


def main() -> None:
    import grpc

    from bench.cli import KEY_ID, MAIN_EPOCH, Workspace
    from bench.server import ShiftedClock
    from bench.workload import build
    from ecert.v1 import transmission_pb2_grpc
    from server.api import claim_converters as conv
    from server.app import create_server
    from server.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="", help="default: SQLite in a temporary folder")
    parser.add_argument("--claims", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ecert-claim-cpu-") as folder:
        workspace = Workspace(pathlib.Path(folder))
        clock = ShiftedClock((MAIN_EPOCH - dt.datetime.now(dt.timezone.utc)).total_seconds())
        settings = Settings(data_dir=pathlib.Path(folder) / "data", host="127.0.0.1", port=0,
                            trust_store=str(workspace.trust_store), database_url=args.database_url)
        running = create_server(settings, clock=clock)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                submit = transmission_pb2_grpc.TransmissionServiceStub(channel).SubmitCertificate
                for request in build({"rpc": "submit", "signing_key": str(workspace.signing_key), "key_id": KEY_ID,
                                      "quota_year": 2026, "quantity": "1000000", "first": 1, "count": 50}, clock.now()):
                    submit(request)
            presented = clock.now()  # after the certificates were transmitted: every claim charges
            requests = build({"rpc": "match", "quota_year": 2026, "certificates": {"9823.53.01": [1, 50]},
                              "quantity": {"9823.53.01": "1"}, "imported": "2026-06-01", "presented": presented.isoformat(),
                              "first_entry": 1, "count": WARMUP_CLAIMS + args.claims}, presented)
            drafts = [conv.line_from_proto(request.line) for request in requests]
            claims = running.use_cases.claims
            for draft in drafts[:WARMUP_CLAIMS]:
                claims.match(draft)
            outcomes: dict[str, int] = {}
            process_began, thread_began = _process_cpu(), time.thread_time()
            for draft in drafts[WARMUP_CLAIMS:]:
                record, _ = claims.match(draft)
                outcomes[record.decision] = outcomes.get(record.decision, 0) + 1
            thread_used, process_used = time.thread_time() - thread_began, _process_cpu() - process_began
        finally:
            running.stop(1.0)
    print(json.dumps({
        "claims": args.claims, "process_cpu_ms_per_claim": round(process_used * 1000 / args.claims, 3),
        "thread_cpu_ms_per_claim": round(thread_used * 1000 / args.claims, 3), "outcomes": outcomes,
    }))


def _process_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


if __name__ == "__main__":
    main()
