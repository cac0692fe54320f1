"""A witness as a separate process (`ecert witness run`), for the demo and end-to-end tests.

The witness is made first (`witness_keygen`), so that the service can be started knowing its key
(the service stores only the cosignatures of witnesses it is configured with); it is started once
the service serves its log, with the log's verifier key; `cosigned` reads what it last cosigned.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

from gateway_sim.processes import Party

NAME = "relay.example/witness"  # the relay operator runs the demo's witness


def _ecert(*args: str) -> list[str]:
    return [sys.executable, "-m", "client.cli", *args]


def witness_keygen(data_dir: pathlib.Path, name: str = NAME) -> str:
    """A new witness in `data_dir`; its verifier key (name+id+key)."""
    done = subprocess.run(_ecert("witness", "keygen", "--name", name, "--data-dir", str(data_dir)),
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"ecert witness keygen exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip()


def start_witness(pki: pathlib.Path, data_dir: pathlib.Path, service: str, log_key: str, *, interval: float = 0.5,
                  timeout: float = 30.0) -> Party:
    """`ecert witness run` with the PKI's `witness` certificate, its JSON log in data_dir/witness.log;
    returns once it has said whom it follows."""
    log = data_dir / "witness.log"
    offset = log.stat().st_size if log.exists() else 0
    handle = open(log, "ab")  # noqa: SIM115 (the child owns it)
    process = subprocess.Popen(
        _ecert("witness", "run", "--server", service, "--log-key", log_key, "--data-dir", str(data_dir),
               "--tls-dir", str(pki / "witness"), "--interval", str(interval)),
        stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    party = Party("witness", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = process.poll() is not None
        if " following " in log.read_bytes()[offset:].decode(errors="replace"):
            return party  # (it may have exited since: an alarm at its first poll)
        if exited:
            raise RuntimeError(f"the witness exited with {process.returncode}; see {log}")
        time.sleep(0.05)
    party.kill()
    raise RuntimeError(f"the witness did not start within {timeout} s; see {log}")


def cosigned(data_dir: pathlib.Path) -> tuple[int, str] | None:
    """The size and note of the last checkpoint the witness cosigned (None: nothing yet)."""
    try:
        state = json.loads((data_dir / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    note = state.get("note") if isinstance(state, dict) else None
    return (int(state["size"]), note) if isinstance(note, str) else None


def alarms(data_dir: pathlib.Path) -> list[str]:
    """The refusals the witness recorded (FORK, ROLLBACK, INCONSISTENT), oldest first."""
    folder = data_dir / "alarms"
    return [json.loads(p.read_text())["refusal"] for p in sorted(folder.iterdir())] if folder.is_dir() else []
