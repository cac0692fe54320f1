"""`ecert witness`'s machinery: its data folder (key, state file, alarms) and one polling step.

The decisions are client/witness_rules.py's; here is what a witness process needs around them:

    <data folder>/witness-key.pem   the witness's Ed25519 private key (mode 0600)
    <data folder>/witness.vkey      its verifier key, to publish: name+key id+base64(0x04 || key)
    <data folder>/state.json        the last checkpoint note it cosigned, rewritten atomically
    <data folder>/alarms/           one file per refused fork or rollback: the evidence
    <data folder>/.lock             held while a witness runs on the folder

`keygen` writes the key and a state that says "nothing cosigned yet". `run` refuses a folder without
a state file rather than start afresh: a witness that lost its memory would cosign whatever the log
shows it, rollback included. The state is written (temporary file, fsync, rename, fsync of the
folder) before a cosignature leaves the process, as c2sp.org/tlog-witness asks.
"""
from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import pathlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.witness_rules import Refusal, Witness, WitnessRefused, WitnessState
from contract.cosignature import CosignatureError, WitnessKey, WitnessVerifier, verify_cosignature
from contract.note import NoteError, NoteVerifier

KEY_FILE, VKEY_FILE, STATE_FILE, LOCK_FILE, ALARMS = "witness-key.pem", "witness.vkey", "state.json", ".lock", "alarms"
STATE_VERSION = 1

log = logging.getLogger("ecert.witness")


class WitnessSetupError(Exception):
    """The data folder, the key, the state file or a flag is unusable: nothing was cosigned."""


def write_atomic(path: pathlib.Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves either the old file or the new one, whole."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def keygen(data_dir: pathlib.Path, name: str) -> WitnessVerifier:
    """A new witness in `data_dir`: its key, its verifier key, and an empty state."""
    if (data_dir / KEY_FILE).exists() or (data_dir / STATE_FILE).exists():
        raise WitnessSetupError(f"{data_dir} already holds a witness (its key or its state); a new key there would "
                                "orphan what it cosigned")
    try:
        key = WitnessKey.generate(name)
    except CosignatureError as error:
        raise WitnessSetupError(f"witness name {name!r}: {error}") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    pem = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(data_dir / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    (data_dir / VKEY_FILE).write_text(key.verifier.text() + "\n", encoding="utf-8")
    StateFile(data_dir / STATE_FILE).save(None)
    return key.verifier


def load_key(data_dir: pathlib.Path) -> WitnessKey:
    """The witness key of `data_dir` (its name read from the verifier key beside it)."""
    try:
        pem = (data_dir / KEY_FILE).read_bytes()
        vkey = (data_dir / VKEY_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError as error:
        raise WitnessSetupError(f"no witness key in {data_dir} ({error.filename} missing): run `ecert witness keygen` first") from None
    try:
        private = serialization.load_pem_private_key(pem, password=None)
        verifier = WitnessVerifier.parse(vkey)
    except (ValueError, TypeError, CosignatureError) as error:
        raise WitnessSetupError(f"the witness key in {data_dir} is unusable: {error}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise WitnessSetupError(f"{data_dir / KEY_FILE} is not an Ed25519 key")
    key = WitnessKey(verifier.name, private)
    if key.verifier != verifier:
        raise WitnessSetupError(f"{data_dir / VKEY_FILE} is not the public half of {data_dir / KEY_FILE}")
    return key


@dataclass(frozen=True)
class StateFile:
    """The last cosigned checkpoint note, as JSON: {"version": 1, "origin", "size", "root_hash", "note"}
    ("note": null before the first cosignature). The size and root are there for people; the note,
    re-verified on load, is what counts."""

    path: pathlib.Path

    def save(self, state: WitnessState | None) -> None:
        document: dict[str, Any] = {"version": STATE_VERSION, "note": None}
        if state is not None:
            document = {"version": STATE_VERSION, "origin": state.checkpoint.origin, "size": state.size,
                        "root_hash": base64.b64encode(state.root_hash).decode(), "note": state.note}
        write_atomic(self.path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")

    def load(self, log_keys: Sequence[NoteVerifier], witness: WitnessVerifier) -> WitnessState | None:
        """The state, checked: the note still opens with the log's key and carries this witness's
        cosignature. WitnessSetupError, and nothing touched, when the file is missing or wrong."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WitnessSetupError(
                f"no state file {self.path}: a witness that forgot what it cosigned could be led into a rollback. "
                "Restore it from a backup, or start a new witness with `ecert witness keygen` in an empty folder") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise WitnessSetupError(f"state file {self.path} is not valid JSON ({error}); left as it is") from None
        if not isinstance(document, dict) or document.get("version") != STATE_VERSION:
            raise WitnessSetupError(f"state file {self.path}: unknown version; left as it is")
        note = document.get("note")
        if note is None:
            return None
        if not isinstance(note, str):
            raise WitnessSetupError(f"state file {self.path}: its note is not text")
        try:
            state = WitnessState.from_note(note, log_keys)
            cosigned = verify_cosignature(note, [witness])
        except (WitnessRefused, NoteError) as error:
            raise WitnessSetupError(f"state file {self.path}: its checkpoint does not verify with the log key given ({error})") from None
        if not cosigned:
            raise WitnessSetupError(f"state file {self.path}: its checkpoint carries no cosignature of this witness's key")
        return state


@contextmanager
def locked(data_dir: pathlib.Path) -> Iterator[None]:
    """One witness process per data folder: two would race on the state (c2sp.org/tlog-witness)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WitnessSetupError(f"another witness is running on {data_dir}") from None
        yield
    finally:
        os.close(fd)


class LogClient(Protocol):
    """The three LogService calls a witness makes."""

    def checkpoint(self) -> str:
        """The latest checkpoint note."""
        ...

    def consistency_proof(self, first_size: int, second_size: int) -> tuple[list[bytes], str]:
        """The proof between two sizes and the checkpoint note of `second_size` served with it."""
        ...

    def add_cosignature(self, cosigned_note: str) -> int:
        """Hands the cosigned note in; the number of cosignatures stored for that checkpoint."""
        ...


@dataclass(frozen=True)
class Step:
    action: str  # "cosigned", "resent" (the log lacked the cosignature already made), "idle"
    size: int
    root_hash: bytes
    cosignatures: int = 0  # as the log counts them after AddCosignature (0 when nothing was sent)


class WitnessRunner:
    """One witness following one log: `step()` polls once."""

    def __init__(self, witness: Witness, data_dir: pathlib.Path, log_client: LogClient, state: WitnessState | None,
                 clock: Callable[[], float] = time.time):
        self.witness = witness
        self.data_dir = data_dir
        self.log = log_client
        self.state = state
        self.clock = clock
        self.state_file = StateFile(data_dir / STATE_FILE)

    def step(self) -> Step:
        """Fetch the latest checkpoint, decide, persist, hand the cosignature in. WitnessRefused
        (after recording the evidence of an alarm under alarms/) leaves the state as it was."""
        note = self.log.checkpoint()
        proof: list[bytes] = []
        try:
            offered = self.witness.open(note)
            sizes = self.witness.proof_range(self.state, offered)
            if sizes is not None:
                proof, proof_note = self.log.consistency_proof(*sizes)
                served = self.witness.open(proof_note) if proof_note else None
                if served is not None and served.size == offered.size and served.root_hash != offered.root_hash:
                    raise WitnessRefused(Refusal.FORK, f"fork: the log signed two roots for {offered.size} entries in two answers", offered)
            decision = self.witness.consider(self.state, note, proof, int(self.clock()))
        except WitnessRefused as refused:
            if refused.refusal.alarm:
                self._alarm(refused, note, proof)
            raise
        if decision.state is not self.state:
            self.state_file.save(decision.state)  # before the cosignature leaves
            self.state = decision.state
        counted = self.log.add_cosignature(decision.to_send) if decision.to_send is not None else 0
        action = "cosigned" if decision.cosigned else ("resent" if decision.to_send is not None else "idle")
        return Step(action, decision.state.size, decision.state.root_hash, counted)

    def _alarm(self, refused: WitnessRefused, note: str, proof: Sequence[bytes]) -> None:
        folder = self.data_dir / ALARMS
        folder.mkdir(exist_ok=True)
        stem = f"{int(self.clock())}-{refused.refusal.value.lower()}"
        path, n = folder / f"{stem}.json", 1
        while path.exists():  # the same alarm again within the second: kept beside the first
            n += 1
            path = folder / f"{stem}-{n}.json"
        evidence = {
            "refusal": refused.refusal.value,
            "message": refused.message,
            "cosigned_note": self.state.note if self.state else None,
            "offered_note": note,
            "consistency_proof": [base64.b64encode(h).decode() for h in proof],
        }
        write_atomic(path, json.dumps(evidence, indent=2, ensure_ascii=False) + "\n")
        offered = refused.offered
        log.error("ALARM %s: %s; nothing cosigned, state kept", refused.refusal.value, refused.message, extra={
            "alarm": refused.refusal.value,
            "origin": offered.origin if offered else "",
            "cosigned_size": self.state.size if self.state else 0,
            "cosigned_root": base64.b64encode(self.state.root_hash).decode() if self.state else "",
            "offered_size": offered.size if offered else -1,
            "offered_root": base64.b64encode(offered.root_hash).decode() if offered else "",
            "evidence": str(path),
        })


class GrpcLog:
    """LogClient over ecert.v1.LogService (the SDK's channel: mutual TLS, request ids)."""

    def __init__(self, channel: Any, timeout_s: float):
        from ecert.v1 import log_pb2_grpc

        self._stub = log_pb2_grpc.LogServiceStub(channel)
        self._timeout = timeout_s

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        import grpc

        from client.sdk.errors import from_rpc_error

        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def checkpoint(self) -> str:
        from ecert.v1 import log_pb2

        return str(self._call(self._stub.GetCheckpoint, log_pb2.GetCheckpointRequest(tree_size=0)).note)

    def consistency_proof(self, first_size: int, second_size: int) -> tuple[list[bytes], str]:
        from ecert.v1 import log_pb2

        answer = self._call(self._stub.GetConsistencyProof,
                            log_pb2.GetConsistencyProofRequest(first_size=first_size, second_size=second_size))
        if (answer.first_size, answer.second_size) != (first_size, second_size):
            # Not evidence by itself (the sizes are not signed), so the proof is left to fail.
            log.warning("the log answered a proof for sizes %d..%d, asked %d..%d",
                        answer.first_size, answer.second_size, first_size, second_size)
        return list(answer.hashes), str(answer.checkpoint_note)

    def add_cosignature(self, cosigned_note: str) -> int:
        from ecert.v1 import log_pb2

        return int(self._call(self._stub.AddCosignature, log_pb2.AddCosignatureRequest(cosigned_note=cosigned_note)).cosignatures)
