"""The witness's decisions (client/witness_rules.py) and its data folder and polling step
(client/witness.py), against a log in memory: extending trees are cosigned; a rollback, a fork, a
proof that does not verify and a checkpoint not signed by the log are refused and leave the state
as it was, including across a restart from the state file."""
from __future__ import annotations

import json
import os
import pathlib
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.witness import (
    ALARMS,
    KEY_FILE,
    STATE_FILE,
    VKEY_FILE,
    StateFile,
    WitnessRunner,
    WitnessSetupError,
    keygen,
    load_key,
    locked,
    write_atomic,
)
from client.witness_rules import Refusal, Witness, WitnessRefused, WitnessState
from contract import merkle
from contract.cosignature import WitnessKey, verify_cosignature
from contract.note import Checkpoint, sign_note
from tests.fake_log import FakeLog

NOW = 1_780_000_000


def witness_key() -> WitnessKey:
    return WitnessKey("mx.example/witness", Ed25519PrivateKey.from_private_bytes(b"\x09" * 32))


def make(log: FakeLog) -> Witness:
    return Witness(witness_key(), [log.verifier])


def first_state(log: FakeLog, witness: Witness, size: int) -> WitnessState:
    decision = witness.consider(None, log.note(size), [], NOW)
    assert decision.cosigned and decision.to_send is not None
    return decision.state


# --- the state machine ---------------------------------------------------------------------------

def test_first_checkpoint_is_cosigned_then_each_extension_with_its_proof():
    log = FakeLog()
    log.grow(5)
    witness = make(log)
    state = first_state(log, witness, 5)
    assert (state.size, state.root_hash) == (5, merkle.root(log.leaves))
    [cosig] = verify_cosignature(state.note, [witness.key.verifier])
    assert cosig.timestamp == NOW
    for grow in (1, 2, 9, 50):
        log.grow(grow)
        offered = witness.open(log.note())
        sizes = Witness.proof_range(state, offered)
        assert sizes == (state.size, len(log.leaves))
        decision = witness.consider(state, log.note(), merkle.consistency_proof(state.size, log.leaves), NOW + grow)
        assert decision.cosigned and decision.to_send == decision.state.note
        assert decision.to_send.startswith(log.note())  # the log's note, our line appended
        state = decision.state
    assert state.size == 67


def test_every_size_pair_up_to_40_extends():
    log = FakeLog()
    log.grow(40)
    witness = make(log)
    for old in range(1, 40):
        state = first_state(log, witness, old)
        for new in range(old + 1, 41):
            proof = merkle.consistency_proof(old, log.leaves[:new])
            assert witness.consider(state, log.note(new), proof, NOW).state.size == new


def test_rollback_is_refused_as_an_alarm():
    log = FakeLog()
    log.grow(10)
    witness = make(log)
    state = first_state(log, witness, 10)
    with pytest.raises(WitnessRefused) as refused:
        witness.consider(state, log.note(9), [], NOW)
    assert refused.value.refusal is Refusal.ROLLBACK and refused.value.refusal.alarm
    assert refused.value.offered is not None and refused.value.offered.size == 9


def test_fork_same_size_other_root_is_refused():
    log = FakeLog()
    log.grow(10)
    witness = make(log)
    state = first_state(log, witness, 10)
    rewritten = list(log.leaves)
    rewritten[3] = merkle.leaf_hash(b"a decision changed after the fact")
    with pytest.raises(WitnessRefused) as refused:
        witness.consider(state, log.note(leaves=rewritten), [], NOW)
    assert refused.value.refusal is Refusal.FORK and "fork" in refused.value.message


def test_a_rewritten_history_fails_its_consistency_proof():
    """An insider recomputes the whole tree over an altered entry and grows it: the log signs it, but
    no proof connects it to the tree the witness cosigned."""
    log = FakeLog()
    log.grow(10)
    witness = make(log)
    state = first_state(log, witness, 10)
    rewritten = list(log.leaves)
    rewritten[3] = merkle.leaf_hash(b"altered")
    rewritten += [merkle.leaf_hash(b"more")] * 6
    honest_looking = merkle.consistency_proof(10, rewritten)  # the best the insider can serve
    with pytest.raises(WitnessRefused) as refused:
        witness.consider(state, log.note(leaves=rewritten), honest_looking, NOW)
    assert refused.value.refusal is Refusal.INCONSISTENT and refused.value.refusal.alarm


@pytest.mark.parametrize("damage", ["empty", "flipped", "short", "extra"])
def test_a_bad_proof_is_refused(damage):
    log = FakeLog()
    log.grow(7)
    witness = make(log)
    state = first_state(log, witness, 7)
    log.grow(6)
    proof = merkle.consistency_proof(7, log.leaves)
    if damage == "empty":
        proof = []
    elif damage == "flipped":
        proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    elif damage == "short":
        proof = proof[:-1]
    else:
        proof = proof + [bytes(32)]
    with pytest.raises(WitnessRefused) as refused:
        witness.consider(state, log.note(), proof, NOW)
    assert refused.value.refusal is Refusal.INCONSISTENT


def test_a_checkpoint_not_signed_by_the_log_is_refused_without_alarm():
    log = FakeLog()
    log.grow(4)
    witness = make(log)
    state = first_state(log, witness, 4)
    log.grow(1)
    proof = merkle.consistency_proof(4, log.leaves)
    forged = log.note(key=Ed25519PrivateKey.generate())  # same name, another key
    with pytest.raises(WitnessRefused) as refused:
        witness.consider(state, forged, proof, NOW)
    assert refused.value.refusal is Refusal.BAD_SIGNATURE and not refused.value.refusal.alarm
    tampered = log.note().replace(f"\n{len(log.leaves)}\n", f"\n{len(log.leaves) + 1}\n")
    with pytest.raises(WitnessRefused) as refused:
        witness.consider(state, tampered, proof, NOW)
    assert refused.value.refusal is Refusal.BAD_SIGNATURE


def test_other_origin_empty_tree_and_misplaced_proofs():
    log = FakeLog()
    log.grow(3)
    witness = make(log)
    state = first_state(log, witness, 3)
    other = FakeLog(origin="other.example/log", key=log.key)
    other.grow(4)
    with pytest.raises(WitnessRefused) as refused:
        Witness(witness.key, [other.verifier]).consider(state, other.note(), merkle.consistency_proof(3, other.leaves), NOW)
    assert refused.value.refusal is Refusal.OTHER_LOG
    with pytest.raises(WitnessRefused) as refused:
        Witness(witness.key, [other.verifier], origin=log.origin).open(other.note())
    assert refused.value.refusal is Refusal.OTHER_LOG
    bad_empty = sign_note(Checkpoint(log.origin, 0, bytes(32)).text(), log.origin, log.key)
    with pytest.raises(WitnessRefused) as refused:
        witness.consider(None, bad_empty, [], NOW)
    assert refused.value.refusal is Refusal.MALFORMED
    with pytest.raises(WitnessRefused, match="needs no consistency proof"):
        witness.consider(None, log.note(), [bytes(32)], NOW)
    with pytest.raises(WitnessRefused, match="between equal trees"):
        witness.consider(state, log.note(), [bytes(32)], NOW)


def test_the_empty_tree_then_growth():
    log = FakeLog()
    witness = make(log)
    state = first_state(log, witness, 0)
    assert state.root_hash == merkle.EMPTY_ROOT
    log.grow(3)
    assert Witness.proof_range(state, witness.open(log.note())) is None  # every tree extends the empty one
    assert witness.consider(state, log.note(), [], NOW).state.size == 3


def test_the_same_checkpoint_again_is_not_cosigned_twice():
    log = FakeLog()
    log.grow(6)
    witness = make(log)
    state = first_state(log, witness, 6)
    # The log served it without our cosignature (the hand-in was lost): the stored one is resent.
    again = witness.consider(state, log.note(), [], NOW + 5)
    assert (again.cosigned, again.to_send, again.state) == (False, state.note, state)
    # The log serves it with our cosignature: nothing to do.
    served = witness.consider(state, state.note, [], NOW + 5)
    assert (served.cosigned, served.to_send) == (False, None)


# --- the data folder and the polling step --------------------------------------------------------

def runner(tmp_path: pathlib.Path, log: FakeLog, name: str = "mx.example/witness") -> WitnessRunner:
    if not (tmp_path / KEY_FILE).exists():
        keygen(tmp_path, name)
    key = load_key(tmp_path)
    state = StateFile(tmp_path / STATE_FILE).load([log.verifier], key.verifier)
    return WitnessRunner(Witness(key, [log.verifier], state.checkpoint.origin if state else None), tmp_path, log, state,
                         clock=lambda: NOW)


def test_keygen_writes_key_verifier_key_and_an_empty_state(tmp_path):
    verifier = keygen(tmp_path / "w", "mx.example/witness")
    assert (tmp_path / "w" / VKEY_FILE).read_text().strip() == verifier.text()
    assert os.stat(tmp_path / "w" / KEY_FILE).st_mode & 0o777 == 0o600
    assert load_key(tmp_path / "w").verifier == verifier
    assert json.loads((tmp_path / "w" / STATE_FILE).read_text()) == {"version": 1, "note": None}
    with pytest.raises(WitnessSetupError, match="already holds a witness"):
        keygen(tmp_path / "w", "mx.example/witness")
    with pytest.raises(WitnessSetupError, match="name"):
        keygen(tmp_path / "v", "two words")


def test_steps_cosign_persist_and_hand_in(tmp_path):
    log = FakeLog()
    log.grow(3)
    w = runner(tmp_path, log)
    step = w.step()
    assert (step.action, step.size, step.cosignatures) == ("cosigned", 3, 1)
    stored = json.loads((tmp_path / STATE_FILE).read_text())
    assert stored["size"] == 3 and stored["origin"] == log.origin and stored["note"] == log.cosigned[3][0]
    assert w.step().action == "resent"  # FakeLog serves its notes without stored cosignatures
    log.grow(4)
    step = w.step()
    assert (step.action, step.size) == ("cosigned", 7)
    assert verify_cosignature(log.cosigned[7][0], [w.witness.key.verifier])


def test_a_restart_remembers_and_refuses_the_rollback(tmp_path):
    log = FakeLog()
    log.grow(12)
    runner(tmp_path, log).step()
    before = (tmp_path / STATE_FILE).read_text()
    log.size = 8  # the log, rolled back, restarts serving an older tree
    restarted = runner(tmp_path, log)
    assert restarted.state is not None and restarted.state.size == 12
    with pytest.raises(WitnessRefused) as refused:
        restarted.step()
    assert refused.value.refusal is Refusal.ROLLBACK
    assert (tmp_path / STATE_FILE).read_text() == before
    [alarm] = (tmp_path / ALARMS).iterdir()
    evidence = json.loads(alarm.read_text())
    assert evidence["refusal"] == "ROLLBACK" and evidence["cosigned_note"] == restarted.state.note
    assert "\n8\n" in evidence["offered_note"]


def test_a_fork_across_two_answers_and_a_bad_proof_keep_the_state(tmp_path):
    log = FakeLog()
    log.grow(5)
    w = runner(tmp_path, log)
    w.step()
    before = (tmp_path / STATE_FILE).read_text()
    log.grow(3)
    log.proof_override = [bytes(32)]
    with pytest.raises(WitnessRefused) as refused:
        w.step()
    assert refused.value.refusal is Refusal.INCONSISTENT
    assert (tmp_path / STATE_FILE).read_text() == before and w.state is not None and w.state.size == 5
    assert 8 not in log.cosigned
    # Two views: the latest checkpoint of one history, and the proof with a checkpoint of another.
    log.proof_override = None
    log.proof_leaves = log.leaves[:5] + [merkle.leaf_hash(b"another third entry")] * 3
    with pytest.raises(WitnessRefused) as refused:
        w.step()
    assert refused.value.refusal is Refusal.FORK and "two answers" in refused.value.message
    assert (tmp_path / STATE_FILE).read_text() == before and len(list((tmp_path / ALARMS).iterdir())) == 2


def test_a_bad_log_signature_writes_no_alarm_and_keeps_the_state(tmp_path):
    log = FakeLog()
    log.grow(5)
    w = runner(tmp_path, log)
    w.step()
    before = (tmp_path / STATE_FILE).read_text()
    log.key = Ed25519PrivateKey.generate()  # someone else signs under the log's name
    log.grow(1)
    with pytest.raises(WitnessRefused) as refused:
        w.step()
    assert refused.value.refusal is Refusal.BAD_SIGNATURE
    assert (tmp_path / STATE_FILE).read_text() == before and not (tmp_path / ALARMS).exists()


def test_a_missing_or_damaged_state_file_stops_the_witness(tmp_path):
    log = FakeLog()
    log.grow(2)
    runner(tmp_path, log).step()
    key = load_key(tmp_path)
    state_file = StateFile(tmp_path / STATE_FILE)
    good = state_file.path.read_text()
    state_file.path.write_text("{not json")
    with pytest.raises(WitnessSetupError, match="not valid JSON"):
        state_file.load([log.verifier], key.verifier)
    document = json.loads(good)
    document["note"] = document["note"].replace("\n2\n", "\n1\n")
    state_file.path.write_text(json.dumps(document))
    with pytest.raises(WitnessSetupError, match="does not verify"):
        state_file.load([log.verifier], key.verifier)
    document = json.loads(good)
    document["note"] = log.note()  # the log's note, but never cosigned by this witness
    state_file.path.write_text(json.dumps(document))
    with pytest.raises(WitnessSetupError, match="no cosignature of this witness"):
        state_file.load([log.verifier], key.verifier)
    state_file.path.unlink()
    with pytest.raises(WitnessSetupError, match="no state file"):
        state_file.load([log.verifier], key.verifier)


def test_state_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_atomic(path, "old\n")

    def crash(*args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_one_witness_per_folder(tmp_path):
    with locked(tmp_path):
        failed: list[BaseException] = []

        def second() -> None:
            try:
                with locked(tmp_path):
                    pass
            except WitnessSetupError as error:
                failed.append(error)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        assert failed and "another witness" in str(failed[0])
