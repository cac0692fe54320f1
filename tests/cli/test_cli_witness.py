"""`ecert witness` as a subprocess, over mutual TLS with the development PKI's `witness` certificate,
against a stand-in ecert.v1.LogService (the contract of protos/ecert/v1/log.proto over a log in
memory; the real service is tests/e2e/test_witness.py's). The stand-in checks what the service is
meant to check on AddCosignature: the caller's role, and the cosignature with verify_cosignature."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.pki import init_pki
from client.tls import server_credentials
from client.witness import STATE_FILE
from contract.cosignature import CosignatureError, WitnessVerifier, verify_cosignature
from contract.identity import Role
from contract.note import Checkpoint
from ecert.v1 import log_pb2, log_pb2_grpc
from service_kit.peer import peer_identity
from tests.cli.conftest import ECERT, ROOT, run_ecert
from tests.fake_log import FakeLog

EXIT_ALARM = 5


@dataclass
class StandIn(log_pb2_grpc.LogServiceServicer):
    log: FakeLog
    witnesses: list[WitnessVerifier] = field(default_factory=list)
    stored: dict[int, list[str]] = field(default_factory=dict)  # size -> accepted cosignature lines
    lock: threading.Lock = field(default_factory=threading.Lock)

    def GetCheckpoint(self, request, context):  # noqa: N802
        with self.lock:
            note = self.log.checkpoint()
        checkpoint = Checkpoint.parse(note.split("\n\n")[0] + "\n")
        return log_pb2.GetCheckpointResponse(note=note, tree_size=checkpoint.size, root_hash=checkpoint.root_hash,
                                             log_verifier_key=self.log.verifier.text())

    def GetConsistencyProof(self, request, context):  # noqa: N802
        with self.lock:
            hashes, note = self.log.consistency_proof(request.first_size, request.second_size)
        return log_pb2.GetConsistencyProofResponse(first_size=request.first_size, second_size=request.second_size,
                                                   hashes=hashes, checkpoint_note=note)

    def AddCosignature(self, request, context):  # noqa: N802
        identity = peer_identity(context)
        if identity is None or identity.role is not Role.WITNESS:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "only the witness role may cosign")
        try:
            accepted = verify_cosignature(request.cosigned_note, self.witnesses, latest=int(time.time()) + 60)
        except CosignatureError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if not accepted:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no cosignature by a known witness")
        size = Checkpoint.parse(request.cosigned_note.split("\n\n")[0] + "\n").size
        with self.lock:
            lines = self.stored.setdefault(size, [])
            lines += [c.line for c in accepted if c.line not in lines]
            return log_pb2.AddCosignatureResponse(tree_size=size, cosignatures=len(lines))


@dataclass
class Setup:
    pki: pathlib.Path
    data: pathlib.Path
    port: int
    stand_in: StandIn
    env: dict[str, str]

    def ecert(self, *args: str, party: str = "witness"):  # type: ignore[no-untyped-def]
        return run_ecert(list(args), {**self.env, "ECERT_CLIENT_TLS_DIR": str(self.pki / party)})

    def run_args(self, *extra: str) -> list[str]:
        return ["witness", "run", "--server", f"localhost:{self.port}", "--log-key", self.stand_in.log.verifier.text(),
                "--data-dir", str(self.data), *extra]


@pytest.fixture
def setup(tmp_path: pathlib.Path) -> Iterator[Setup]:
    init_pki(tmp_path / "pki")
    log = FakeLog()
    log.grow(5)
    stand_in = StandIn(log)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    log_pb2_grpc.add_LogServiceServicer_to_server(stand_in, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tmp_path / "pki" / "service"))
    server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECERT_")}
    env.update(COLUMNS="200", NO_COLOR="1", ECERT_LOG_FORMAT="json")
    try:
        yield Setup(tmp_path / "pki", tmp_path / "witness-data", port, stand_in, env)
    finally:
        server.stop(0)


def keygen(setup: Setup) -> WitnessVerifier:
    made = setup.ecert("witness", "keygen", "--name", "relay.example/witness", "--data-dir", str(setup.data))
    assert made.code == 0, made.stderr
    verifier = WitnessVerifier.parse(made.stdout.strip())
    setup.stand_in.witnesses.append(verifier)
    return verifier


def log_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_keygen_then_once_cosigns_and_the_service_accepts_it(setup):
    verifier = keygen(setup)
    assert (setup.data / "witness.vkey").read_text().strip() == verifier.text()
    done = setup.ecert(*setup.run_args("--once"))
    assert done.code == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["action"], result["size"], result["cosignatures"]) == ("cosigned", 5, 1)
    [line] = setup.stand_in.stored[5]
    assert line.startswith("\u2014 relay.example/witness ")
    assert json.loads((setup.data / STATE_FILE).read_text())["size"] == 5
    setup.stand_in.log.grow(3)
    done = setup.ecert(*setup.run_args("--once"))
    assert json.loads(done.stdout)["size"] == 8 and 8 in setup.stand_in.stored
    shown = setup.ecert("witness", "checkpoint", "--data-dir", str(setup.data))
    assert shown.code == 0 and shown.stdout == json.loads((setup.data / STATE_FILE).read_text())["note"]
    assert verify_cosignature(shown.stdout, [verifier])[0].line in setup.stand_in.stored[8]
    # A second keygen on the same folder would orphan the state: refused.
    again = setup.ecert("witness", "keygen", "--name", "x", "--data-dir", str(setup.data))
    assert again.code == 2 and "already holds a witness" in again.stderr


def test_rollback_and_fork_are_alarms_with_exit_5_and_the_state_kept(setup):
    keygen(setup)
    setup.stand_in.log.grow(5)
    assert setup.ecert(*setup.run_args("--once")).code == 0
    state = (setup.data / STATE_FILE).read_text()
    setup.stand_in.log.size = 7  # rolled back from 10
    done = setup.ecert(*setup.run_args("--once"))
    assert done.code == EXIT_ALARM, done.stderr
    [alarm] = [line for line in log_lines(done.stderr) if line.get("alarm")]
    assert (alarm["level"], alarm["alarm"], alarm["cosigned_size"], alarm["offered_size"]) == ("ERROR", "ROLLBACK", 10, 7)
    assert pathlib.Path(alarm["evidence"]).is_file()
    assert (setup.data / STATE_FILE).read_text() == state
    # The same ten entries with one changed: a fork.
    log = setup.stand_in.log
    log.size = None
    log.leaves[2] = b"\x00" * 32
    done = setup.ecert(*setup.run_args("--once"))
    assert done.code == EXIT_ALARM
    assert [line["alarm"] for line in log_lines(done.stderr) if line.get("alarm")] == ["FORK"]
    assert (setup.data / STATE_FILE).read_text() == state and set(setup.stand_in.stored) == {10}


def test_refusals_without_alarm_and_setup_errors(setup):
    keygen(setup)
    # A log key other than the one that signs the checkpoints served.
    stranger = FakeLog(key=Ed25519PrivateKey.generate()).verifier.text()
    done = setup.ecert(*[stranger if a == setup.stand_in.log.verifier.text() else a for a in setup.run_args("--once")])
    assert done.code == 1 and "BAD_SIGNATURE" in done.stderr
    assert json.loads((setup.data / STATE_FILE).read_text())["note"] is None
    # Another party's certificate: the service refuses the cosignature (exit 1, nothing stored).
    done = setup.ecert(*setup.run_args("--once"), party="importer")
    assert done.code == 1 and "PERMISSION_DENIED" in done.stderr and not setup.stand_in.stored
    bad = setup.ecert("witness", "run", "--server", f"localhost:{setup.port}", "--log-key", "not-a-key",
                      "--data-dir", str(setup.data), "--once")
    assert bad.code == 2 and "--log-key" in bad.stderr
    unreachable = setup.ecert(*[a.replace(f":{setup.port}", ":1") for a in setup.run_args("--once", "--timeout", "2")])
    assert unreachable.code == 3, unreachable.stderr
    no_tls = run_ecert(setup.run_args("--once"), setup.env)
    assert no_tls.code == 2 and "no TLS material" in no_tls.stderr
    (setup.data / STATE_FILE).unlink()
    missing = setup.ecert(*setup.run_args("--once"))
    assert missing.code == 2 and "no state file" in missing.stderr


def test_the_loop_follows_the_log_and_stops_on_sigterm(setup):
    keygen(setup)
    env = {**setup.env, "ECERT_CLIENT_TLS_DIR": str(setup.pki / "witness")}
    process = subprocess.Popen([*ECERT, *setup.run_args("--interval", "0.1")], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        for target in (5, 9, 20):
            with setup.stand_in.lock:
                setup.stand_in.log.grow(target - len(setup.stand_in.log.leaves))
            while target not in setup.stand_in.stored and time.monotonic() < deadline:
                time.sleep(0.05)
            assert target in setup.stand_in.stored, process.stderr
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    cosigned = [line["size"] for line in log_lines(stderr) if line.get("action") == "cosigned"]
    assert cosigned[-1] == 20 and cosigned == sorted(cosigned)


def test_the_witness_party_the_demo_starts(setup):
    """gateway_sim/witness_party.py: made first, started with the log's key, it follows the log until
    stopped (exit 0), and on its own exits with the alarm status on a rollback, its alarm recorded."""
    from gateway_sim.witness_party import alarms, cosigned, start_witness, witness_keygen

    setup.stand_in.witnesses.append(WitnessVerifier.parse(witness_keygen(setup.data)))
    party = start_witness(setup.pki, setup.data, f"localhost:{setup.port}", setup.stand_in.log.verifier.text(), interval=0.1)
    try:
        deadline = time.monotonic() + 30
        while (cosigned(setup.data) or (0, ""))[0] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        size, note = cosigned(setup.data) or (0, "")
        assert size == 5 and note.startswith(setup.stand_in.log.note(5)) and alarms(setup.data) == []
        with setup.stand_in.lock:
            setup.stand_in.log.size = 4
        party.process.wait(timeout=30)
        assert party.process.returncode == EXIT_ALARM and alarms(setup.data) == ["ROLLBACK"]
    finally:
        party.stop()
    # Started again on the same folder it refuses at once: the log is still rolled back.
    again = start_witness(setup.pki, setup.data, f"localhost:{setup.port}", setup.stand_in.log.verifier.text(), interval=0.1)
    assert again.process.wait(timeout=30) == EXIT_ALARM and alarms(setup.data) == ["ROLLBACK", "ROLLBACK"]
