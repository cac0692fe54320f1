"""Operators' view of the service: the real `ecert` command as a subprocess, in a folder of its own."""
from __future__ import annotations

import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest

ECERT = [sys.executable, "-m", "client.cli"]
ROOT = pathlib.Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any ECERT_* setting, plus `extra`; the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECERT_")}
    # PYTHONFAULTHANDLER: a process that hangs is stopped with SIGABRT and shows where each thread was.
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", NO_COLOR="1", PYTHONFAULTHANDLER="1", **extra)
    return env


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def ecert(*args: str, cwd: pathlib.Path, env: dict[str, str] | None = None, timeout: float = 60) -> Done:
    done = subprocess.run([*ECERT, *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return Done(done.returncode, done.stdout, done.stderr)


@dataclass
class Serving:
    """`ecert serve` running as a process; its stderr lines are collected by a thread."""

    process: subprocess.Popen  # type: ignore[type-arg]
    lines: list[str] = field(default_factory=list)
    _queue: "queue.Queue[str | None]" = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        def read() -> None:
            for line in self.process.stderr:  # type: ignore[union-attr]
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=read, daemon=True).start()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if found := re.search(pattern, line):
                return found
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no {pattern!r} in:\n" + "\n".join(self.lines))

    @property
    def port(self) -> int:
        return int(self.wait_for(r"ecert serving on \S+:(\d+)").group(1))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=30)
            self._drain()
            raise AssertionError("ecert serve did not stop within 60 s of SIGTERM:\n" + "\n".join(self.lines)) from None
        self._drain()
        return code

    def _drain(self) -> None:
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)


@pytest.fixture
def serve(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    """Starts `ecert serve ARGS` in tmp_path (stopped at the end of the test if still running)."""
    started: list[Serving] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Serving:
        # A throwaway data folder: its receipt-signing key is made where the settings say, if missing.
        process = subprocess.Popen([*ECERT, "serve", *args, "--create-receipt-key"], cwd=tmp_path, env=env or clean_env(),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started.append(Serving(process))
        return started[-1]

    yield start
    for serving in started:
        if serving.process.poll() is None:
            serving.process.kill()
            serving.process.wait(timeout=30)
