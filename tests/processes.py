"""Real `ecert serve` processes for replica and crash tests: started, stopped, and SIGKILLed.

Replicas share one database, the partners' trust store and customs' receipt-signing key (as a real
deployment would), each with its own data directory. The bound port is read from the service's
stderr line `ecert serving on HOST:PORT`.
"""
from __future__ import annotations

import datetime as dt
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from contract.keys import trust_entry, write_trust_store
from contract.signing import Signer
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from server.adapters.keystore import load_or_create_log_key, load_or_create_signer
from tests.factories import certificate, envelope

ROOT = pathlib.Path(__file__).resolve().parents[1]
SERVING = re.compile(r"ecert serving on (\S+):(\d+)")


@dataclass
class Deployment:
    """What every replica of one service shares."""

    root: pathlib.Path
    database_url: str
    partner: Signer

    def __post_init__(self) -> None:
        year = dt.timedelta(days=365)
        now = dt.datetime.now(dt.timezone.utc)
        write_trust_store(self.trust_store, [trust_entry(self.partner, "MX", now - year, now + year)])
        load_or_create_signer(self.receipt_key, "us-cbp-receipts-1")  # before any replica races to create it
        load_or_create_log_key(self.receipt_key.parent / "log-signing.pem")  # shared by the replicas, like the receipt key

    @property
    def trust_store(self) -> pathlib.Path:
        return self.root / "shared" / "partner-keys.json"

    @property
    def receipt_key(self) -> pathlib.Path:
        return self.root / "shared" / "receipt-signing.pem"

    def env(self, name: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECERT_")}
        env.update(
            ECERT_DATA_DIR=str(self.root / name),
            ECERT_DATABASE_URL=self.database_url,
            ECERT_TRUST_STORE=str(self.trust_store),
            ECERT_RECEIPT_KEY=str(self.receipt_key),
            **extra,
        )
        return env


class ServiceProcess:
    def __init__(self, deployment: Deployment, name: str, **env: str):
        self.name = name
        self.log_path = deployment.root / f"{name}.log"
        self._env = deployment.env(name, **env)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 60) -> "ServiceProcess":
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        skip = log.tell()  # a restart appends: only this run's serving line counts
        self.process = subprocess.Popen(
            [sys.executable, "-m", "client.cli", "serve", "--insecure", "--host", "127.0.0.1", "--port", "0"],
            env=self._env, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = SERVING.findall(self.log_path.read_bytes()[skip:].decode(errors="replace"))
            if found and self.process.poll() is None:
                self.port = int(found[-1][1])
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} did not start within {timeout}s:\n{self.log_path.read_text()}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no flush, nothing after this instant."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def replicas(deployment: Deployment, count: int, **env: str) -> Iterator[list[ServiceProcess]]:
    processes = [ServiceProcess(deployment, f"replica-{n}", **env) for n in range(count)]
    try:
        # Started together on purpose: their schema migrations race (one migrates, the others wait).
        _start_all(processes)
        yield processes
    finally:
        for process in processes:
            process.stop()


def _start_all(processes: list[ServiceProcess]) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(len(processes)) as pool:
        for future in [pool.submit(p.start) for p in processes]:
            future.result()


def stub(target: str) -> tuple[grpc.Channel, transmission_pb2_grpc.TransmissionServiceStub]:
    channel = grpc.insecure_channel(target)
    return channel, transmission_pb2_grpc.TransmissionServiceStub(channel)


def todays_certificate(number: str, **changes: object) -> cpb.Certificate:
    """A valid certificate for a service on the system clock (quota year and dates from today)."""
    today = dt.datetime.now(dt.timezone.utc).date()
    fields: dict[str, object] = {
        "quota_year": today.year,
        "issue_date": today.isoformat(),
        "last_valid_date": dt.date(today.year, 12, 31).isoformat(),
    }
    fields.update(changes)
    return certificate(number, **fields)


def envelope_now(signer: Signer, cert: cpb.Certificate, **kwargs: Any) -> tpb.SignedEnvelope:
    """A signed envelope sent now (a service on the system clock refuses skewed senders)."""
    return envelope(signer, cert, sent_at=dt.datetime.now(dt.timezone.utc), **kwargs)
