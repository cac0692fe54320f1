"""The benchmark's server process: the real service from `create_server`, plus the echo baseline.

Started by bench/cli.py as `python -m bench.server ...`. It prints `port N` once serving, then reads
commands on stdin, one a line, and answers each with one line:
  shift SECONDS   moves the service's clock (the opening-day burst jumps over the opening moment)
  rss             the process's peak resident memory in MiB (VmHWM)
End of stdin stops the server gracefully.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import pathlib
import sys
import threading

from bench.echo import register_echo
from server.app import create_server, freeze_startup_heap
from server.config import Settings


class ShiftedClock:
    """Real time plus an offset the bench sets, so that a run can begin at a chosen instant and
    then cross a quota opening. Production uses server.service.clock.SystemClock."""

    def __init__(self, offset_seconds: float):
        self._offset = dt.timedelta(seconds=offset_seconds)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self._offset

    def shift(self, seconds: float) -> None:
        with self._lock:
            self._offset += dt.timedelta(seconds=seconds)


def peak_rss_mib(pid: str = "self") -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--trust-store", required=True)
    parser.add_argument("--tls-dir", default="", help="the service's ca.pem, cert.pem, key.pem; plaintext without")
    parser.add_argument("--clock-offset", type=float, default=0.0, help="seconds added to the real time")
    parser.add_argument("--log-file", default="")
    parser.add_argument("--database-url", default="", help="the service's database (default: SQLite in --data-dir)")
    args = parser.parse_args()

    from server.observability import logs, tracing

    # Like `ecert serve`: one JSON line per call, here into a file (stdout is the control channel).
    logs.configure(logging.INFO, json_format=True)
    tracing.configure("ecert-service")  # as `ecert serve`: OTEL_SDK_DISABLED=true measures the service untraced
    if args.log_file:
        handler = logging.getLogger().handlers[0]
        handler.setStream(open(args.log_file, "a", encoding="utf-8"))  # noqa: SIM115 - lives as long as the process

    settings = Settings(data_dir=pathlib.Path(args.data_dir), host="127.0.0.1", port=0, trust_store=args.trust_store,
                        database_url=args.database_url)
    credentials = None
    if args.tls_dir:
        from client.tls import server_credentials

        credentials = server_credentials(args.tls_dir)
    clock = ShiftedClock(args.clock_offset)
    running = create_server(settings, clock=clock, credentials=credentials, extra_services=[register_echo])
    freeze_startup_heap()  # as `ecert serve` does
    print(f"port {running.port}", flush=True)
    try:
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "shift":
                clock.shift(float(argument))
                print("ok", flush=True)
            elif command == "rss":
                print(f"{peak_rss_mib():.1f}", flush=True)
            elif command:
                print(f"unknown command {command!r}", flush=True)
    finally:
        running.stop(2.0)


if __name__ == "__main__":
    main()
