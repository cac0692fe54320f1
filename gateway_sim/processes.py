"""Running the parties as separate processes on loopback ports (the demo and end-to-end tests).

Each child's output goes to a log file, never a pipe that could fill and stall it; the port it
bound is read from its "... on HOST:PORT" start line.
"""
from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

_LISTENING = re.compile(r"(?:serving|listening) on [^\s:]+:(\d+)")


@dataclass
class Party:
    name: str
    process: subprocess.Popen  # type: ignore[type-arg]  # text or binary, as the party's process was started
    log: pathlib.Path
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (what a crash looks like)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def _ecert(*args: str) -> list[str]:
    return [sys.executable, "-m", "client.cli", *args]


def start(name: str, args: list[str], log: pathlib.Path, env: dict[str, str] | None = None, timeout: float = 30.0) -> Party:
    log.parent.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0  # a restarted party appends to the same log
    handle = open(log, "ab")  # noqa: SIM115 (the child owns it)
    process = subprocess.Popen(_ecert(*args), stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    handle.close()
    party = Party(name, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; see {log}")
        text = log.read_text(errors="replace")
        match = None
        for found in _LISTENING.finditer(text, min(offset, len(text))):
            match = found
        if match:
            party.port = int(match.group(1))
            return party
        time.sleep(0.05)
    party.kill()
    raise RuntimeError(f"{name} did not start within {timeout} s; see {log}")


def start_service(pki: pathlib.Path, data_dir: pathlib.Path, *, port: int = 0, env: dict[str, str] | None = None) -> Party:
    """`env` adds ECERT_* settings (e.g. ECERT_CLOCK_OFFSET_SECONDS for a test harness)."""
    env = {
        "ECERT_DATA_DIR": str(data_dir),
        "ECERT_DATABASE_URL": "",
        "ECERT_TLS_DIR": str(pki / "service"),
        "ECERT_TRUST_STORE": str(pki / "service" / "partner-keys.json"),
        "ECERT_RECEIPT_KEY": str(pki / "service" / "receipt-signing.pem"),
        **(env or {}),
    }
    return start("service", ["serve", "--host", "127.0.0.1", "--port", str(port)], data_dir / "service.log", env)


def start_relay(pki: pathlib.Path, data_dir: pathlib.Path, service: str, *, port: int = 0, faults: list[str] | None = None,
                env: dict[str, str] | None = None) -> Party:
    """`env` adds variables (e.g. OTEL_* to export its spans)."""
    args = ["relay", "--service", service, "--port", str(port), "--tls-dir", str(pki / "relay"), "--store", str(data_dir / "relay.db"),
            "--backoff-base", "0.05", "--backoff-cap", "1.0", *(faults or [])]
    return start("relay", args, data_dir / "relay.log", env)


def gateway_command(pki: pathlib.Path, register: pathlib.Path, relay: str, *scenario: str, seed: int = 1, resend_after: float = 3.0, wait: float = 30.0) -> list[str]:
    return _ecert(
        "gateway", "--relay", relay, "--tls-dir", str(pki / "gateway-mx"), "--register", str(register),
        "--customs-key", str(pki / "service" / "receipt-signing.pem.pub"), "--seed", str(seed),
        "--resend-after", str(resend_after), "--wait", str(wait), "--json", *scenario,
    )
