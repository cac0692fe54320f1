"""A witness against the real service: `ecert serve` as a process with its transparency log
(ecert.v1.LogService, protos/ecert/v1/log.proto), `ecert witness run` as another process with the
PKI's `witness` certificate. The witness cosigns the log's checkpoints as they grow, the service
serves its cosignature with the checkpoint, and when an insider puts back an older copy of the
database (a rollback of everything, recomputed trees included) and writes new entries over it, the
witness refuses with the alarm exit status and keeps the checkpoint it cosigned.

Skipped while the service does not serve the LogService: the module is absent, or the service
answers UNIMPLEMENTED (the log is built on another branch)."""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import grpc
import pytest

from client.pki import PkiLayout
from client.tls import secure_channel
from contract.cosignature import WitnessVerifier, verify_cosignature
from contract.note import Checkpoint
from ecert.v1 import log_pb2, log_pb2_grpc, transmission_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from gateway_sim.processes import start_service
from tests.factories import certificate, envelope

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("server.api.log_servicer") is None,
                       reason="the service has no LogService yet (issue 17's log, branch `log`)"),
]

EXIT_ALARM = 5
ROOT = pathlib.Path(__file__).resolve().parents[2]


def log_stub(world, party: str = "witness") -> log_pb2_grpc.LogServiceStub:  # type: ignore[no-untyped-def]
    return log_pb2_grpc.LogServiceStub(secure_channel(world.service.address, world.pki / party))


def latest(world) -> log_pb2.GetCheckpointResponse:  # type: ignore[no-untyped-def]
    try:
        return log_stub(world).GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=10)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip("this build's service does not serve ecert.v1.LogService")
        raise


def wait_for_size(world, at_least: int, timeout: float = 30.0) -> log_pb2.GetCheckpointResponse:  # type: ignore[no-untyped-def]
    """The sequencer signs a checkpoint at least every second while entries arrive."""
    deadline = time.monotonic() + timeout
    while True:
        answer = latest(world)
        if answer.tree_size >= at_least or time.monotonic() > deadline:
            assert answer.tree_size >= at_least, f"the log stayed at {answer.tree_size} entries"
            return answer
        time.sleep(0.2)


def transmit(world, first: int, count: int) -> None:  # type: ignore[no-untyped-def]
    """`count` certificates from Mexico straight to the service: each receipt is a log entry."""
    stub = transmission_pb2_grpc.TransmissionServiceStub(secure_channel(world.service.address, world.pki / "gateway-mx"))
    signer = PkiLayout(world.pki).document_signer()
    for n in range(first, first + count):
        env = envelope(signer, certificate(f"MX26-{n:08d}"), message_id=f"witness-e2e-{n}", sent_at=dt.datetime.now(dt.timezone.utc))
        stub.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env), timeout=10)


def witness(world, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "client.cli", "witness", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def run_once(world, data: pathlib.Path, log_key: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return witness(world, "run", "--server", world.service.address, "--log-key", log_key, "--data-dir", str(data),
                   "--tls-dir", str(world.pki / "witness"), "--once")


def restart(world, witness_key: str) -> None:  # type: ignore[no-untyped-def]
    """The service again on its data folder, storing the cosignatures of this witness (ECERT_WITNESS_KEYS)."""
    world.service.stop()
    world.service = start_service(world.pki, world.root / "service", env={"ECERT_WITNESS_KEYS": witness_key})


def test_a_witness_cosigns_the_growing_log_and_alarms_on_a_restored_backup(world, tmp_path):
    latest(world)  # skips here if the service answers UNIMPLEMENTED
    data = tmp_path / "witness-data"
    made = witness(world, "keygen", "--name", "relay.example/witness", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    verifier = WitnessVerifier.parse(made.stdout.strip())
    restart(world, verifier.text())
    transmit(world, 1, 3)
    first = wait_for_size(world, 3)
    log_key = first.log_verifier_key

    done = run_once(world, data, log_key)
    assert done.returncode == 0, done.stderr
    step = json.loads(done.stdout)
    assert step["action"] == "cosigned" and step["size"] >= 3
    # The service stores the cosignature and serves it with that checkpoint.
    served = log_stub(world).GetCheckpoint(log_pb2.GetCheckpointRequest(tree_size=step["size"]), timeout=10)
    assert [c.name for c in verify_cosignature(served.note, [verifier])] == ["relay.example/witness"]

    # A backup of the database as it stands, then more entries, cosigned too.
    world.service.stop()
    backup = tmp_path / "backup"
    shutil.copytree(world.root / "service", backup, ignore=shutil.ignore_patterns("*.log"))
    restart(world, verifier.text())
    transmit(world, 10, 4)
    wait_for_size(world, step["size"] + 4)
    done = run_once(world, data, log_key)
    assert done.returncode == 0, done.stderr
    grown = json.loads(done.stdout)
    assert grown["action"] == "cosigned" and grown["size"] >= step["size"] + 4
    state = (data / "state.json").read_text()

    # The insider puts the backup back: the log, signed with its real key, is smaller again.
    world.service.stop()
    for path in (world.root / "service").glob("ecert.db*"):
        path.unlink()
    for path in backup.glob("ecert.db*"):
        shutil.copy2(path, world.root / "service" / path.name)
    restart(world, verifier.text())
    done = run_once(world, data, log_key)
    assert done.returncode == EXIT_ALARM, done.stdout + done.stderr
    alarms = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{") and '"alarm"' in line]
    assert [a["alarm"] for a in alarms] == ["ROLLBACK"] and alarms[0]["cosigned_size"] == grown["size"]
    assert (data / "state.json").read_text() == state

    # New entries over the restored history: as many or more than were cut, never consistent.
    transmit(world, 100, 12)
    wait_for_size(world, grown["size"])
    done = run_once(world, data, log_key)
    assert done.returncode == EXIT_ALARM, done.stdout + done.stderr
    alarms = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{") and '"alarm"' in line]
    assert alarms and alarms[0]["alarm"] in ("FORK", "INCONSISTENT")
    assert (data / "state.json").read_text() == state
    assert Checkpoint.parse(json.loads(state)["note"].split("\n\n")[0] + "\n").size == grown["size"]

    # The checkpoint the witness holds convicts the rewritten database offline too (issue 17 item 5).
    shown = witness(world, "checkpoint", "--data-dir", str(data))
    assert shown.returncode == 0 and shown.stdout == json.loads(state)["note"]
    held = tmp_path / "witnessed.note"
    held.write_text(shown.stdout, encoding="utf-8")
    world.service.stop()
    audit = subprocess.run([sys.executable, "-m", "client.cli", "audit", "verify", "--log-key", log_key, "--checkpoint", str(held)],
                           capture_output=True, text=True, cwd=ROOT, timeout=60,
                           env={**os.environ, "ECERT_DATA_DIR": str(world.root / "service"), "ECERT_DATABASE_URL": ""})
    assert audit.returncode == 1, audit.stdout + audit.stderr
