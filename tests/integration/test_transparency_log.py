"""The transparency log over a real server, on each engine: receipts and claim decisions become entries,
the sequencer integrates them and signs checkpoints, and anyone checks inclusion and consistency with
nothing but merkle.py and note.py; `ecert audit verify` catches each kind of tampering an insider could
do to the stored log."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc
import pytest
from sqlalchemy import text

from contract import merkle
from contract.log_entry import LogEntry, receipt_entry
from contract.messages import receipt_from_proto
from contract.note import Checkpoint, NoteVerifier, open_note, sign_note
from ecert.v1 import log_pb2 as lpb
from ecert.v1 import log_pb2_grpc
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from server.service.audit import verify_audit_log
from tests.factories import NOW, certificate, claim_line, envelope
from tests.grpc_errors import rich_error


@pytest.fixture
def log(channel: grpc.Channel) -> log_pb2_grpc.LogServiceStub:
    return log_pb2_grpc.LogServiceStub(channel)


def ecert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *args], capture_output=True, text=True, timeout=60)


def verifier(server) -> NoteVerifier:  # type: ignore[no-untyped-def]
    return server.use_cases.log.verifier


def checkpoint_of(log, server, size: int = 0) -> Checkpoint:  # type: ignore[no-untyped-def]
    answer = log.GetCheckpoint(lpb.GetCheckpointRequest(tree_size=size))
    opened = open_note(answer.note, [NoteVerifier.parse(answer.log_verifier_key)])
    assert answer.log_verifier_key == verifier(server).text()
    parsed = Checkpoint.parse(opened.text)
    assert (parsed.size, parsed.root_hash) == (answer.tree_size, answer.root_hash)
    return parsed


def submit_and_claim(transmission, match, partner, n: int = 1):  # type: ignore[no-untyped-def]
    submitted = transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer)))
    claims = [match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(k))) for k in range(1, n + 1)]
    return submitted, claims


def test_receipts_and_claims_are_proved_included_in_a_signed_checkpoint(server, transmission, match, log, partner):
    submitted, claims = submit_and_claim(transmission, match, partner, 2)
    receipt = receipt_from_proto(submitted.receipt)
    # The receipt's leaf hash is recomputed from the receipt alone.
    assert submitted.log_leaf_hash == receipt_entry(receipt).leaf_hash
    assert all(len(c.result.log_leaf_hash) == 32 for c in claims)
    # Recorded; until the sequencer integrates it, asked by leaf hash, the answer says to come back.
    try:
        log.GetInclusionProof(lpb.GetInclusionProofRequest(leaf_hash=submitted.log_leaf_hash))
    except grpc.RpcError as early:
        assert (early.code(), rich_error(early).reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEAF_NOT_INTEGRATED")
    # The background sequencer integrates within a second.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        size = log.GetCheckpoint(lpb.GetCheckpointRequest()).tree_size
        if size >= 2 + 3:  # two packaged reference tables, the receipt, two decisions
            break
        time.sleep(0.1)
    checkpoint = checkpoint_of(log, server)
    for leaf in (submitted.log_leaf_hash, *(c.result.log_leaf_hash for c in claims)):
        proof = log.GetInclusionProof(lpb.GetInclusionProofRequest(leaf_hash=leaf))
        signed = Checkpoint.parse(open_note(proof.checkpoint_note, [verifier(server)]).text)
        assert signed == checkpoint and proof.tree_size == checkpoint.size
        assert merkle.verify_inclusion(proof.leaf_index, proof.tree_size, leaf, list(proof.hashes), signed.root_hash)
        assert not merkle.verify_inclusion(proof.leaf_index, proof.tree_size, merkle.leaf_hash(b"other"), list(proof.hashes), signed.root_hash)
        entry = log.GetEntries(lpb.GetEntriesRequest(start=proof.leaf_index, end=proof.leaf_index + 1)).entries[0]
        assert merkle.leaf_hash(entry.entry) == leaf
    decision = LogEntry.decode(log.GetEntries(lpb.GetEntriesRequest(
        start=log.GetInclusionProof(lpb.GetInclusionProofRequest(leaf_hash=claims[0].result.log_leaf_hash)).leaf_index, end=10**6)).entries[0].entry)
    assert decision.kind == "DECISION" and decision.facts["claim_id"] == claims[0].result.claim_id
    # The claim's answer read later names the same entry.
    got = match.GetClaim(mpb.GetClaimRequest(entry_number=claims[0].result.entry_number, line_number=1))
    assert got.result.log_leaf_hash == claims[0].result.log_leaf_hash


def test_a_later_checkpoint_is_consistent_with_an_earlier_one(server, transmission, match, log, partner):
    submit_and_claim(transmission, match, partner, 1)
    server.use_cases.log.integrate()
    first = checkpoint_of(log, server)
    for n in range(2, 5):
        match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(n)))
        server.use_cases.log.integrate()
    second = checkpoint_of(log, server)
    assert second.size == first.size + 3
    proof = log.GetConsistencyProof(lpb.GetConsistencyProofRequest(first_size=first.size))
    assert proof.second_size == second.size
    assert merkle.verify_consistency(first.size, second.size, first.root_hash, second.root_hash, list(proof.hashes))
    assert not merkle.verify_consistency(first.size, second.size, merkle.leaf_hash(b"x"), second.root_hash, list(proof.hashes))
    # An earlier checkpoint is served by its size; integrating with nothing new signs nothing new.
    assert checkpoint_of(log, server, first.size) == first
    assert server.use_cases.log.integrate() == second.size
    assert checkpoint_of(log, server) == second


def test_a_rejected_transmission_is_logged_too(server, transmission, log, partner):
    bad = envelope(partner.signer, certificate(quantity="-5"), message_id="bad-1")
    with pytest.raises(grpc.RpcError) as refused:
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=bad))
    from grpc_status import rpc_status

    status = rpc_status.from_call(refused.value)
    receipt_message, logged = tpb.Receipt(), lpb.LogEntry()
    for detail in status.details:
        if detail.Is(tpb.Receipt.DESCRIPTOR):
            detail.Unpack(receipt_message)
        elif detail.Is(lpb.LogEntry.DESCRIPTOR):
            detail.Unpack(logged)
    receipt = receipt_from_proto(receipt_message)
    assert receipt.outcome.value == "REJECTED"
    assert logged.leaf_hash == receipt_entry(receipt).leaf_hash == merkle.leaf_hash(logged.entry)
    server.use_cases.log.integrate()
    proof = log.GetInclusionProof(lpb.GetInclusionProofRequest(leaf_hash=logged.leaf_hash))
    root = Checkpoint.parse(open_note(proof.checkpoint_note, [verifier(server)]).text).root_hash
    assert merkle.verify_inclusion(proof.leaf_index, proof.tree_size, logged.leaf_hash, list(proof.hashes), root)


def test_bad_requests_get_clear_errors(server, transmission, match, log, partner):
    submit_and_claim(transmission, match, partner, 1)
    server.use_cases.log.integrate()
    size = log.GetCheckpoint(lpb.GetCheckpointRequest()).tree_size
    cases = [
        (log.GetCheckpoint, lpb.GetCheckpointRequest(tree_size=-1), grpc.StatusCode.INVALID_ARGUMENT, "TREE_SIZE_NEGATIVE"),
        (log.GetCheckpoint, lpb.GetCheckpointRequest(tree_size=size + 7), grpc.StatusCode.NOT_FOUND, "CHECKPOINT_NOT_FOUND"),
        (log.GetInclusionProof, lpb.GetInclusionProofRequest(), grpc.StatusCode.INVALID_ARGUMENT, "LEAF_MISSING"),
        (log.GetInclusionProof, lpb.GetInclusionProofRequest(leaf_index=-1), grpc.StatusCode.INVALID_ARGUMENT, "LEAF_INDEX_NEGATIVE"),
        (log.GetInclusionProof, lpb.GetInclusionProofRequest(leaf_index=size), grpc.StatusCode.NOT_FOUND, "LEAF_NOT_IN_TREE"),
        (log.GetInclusionProof, lpb.GetInclusionProofRequest(leaf_hash=b"short"), grpc.StatusCode.INVALID_ARGUMENT, "LEAF_HASH_MALFORMED"),
        (log.GetInclusionProof, lpb.GetInclusionProofRequest(leaf_hash=bytes(32)), grpc.StatusCode.NOT_FOUND, "LEAF_NOT_FOUND"),
        (log.GetInclusionProof, lpb.GetInclusionProofRequest(leaf_index=0, tree_size=size + 7), grpc.StatusCode.NOT_FOUND, "CHECKPOINT_NOT_FOUND"),
        (log.GetInclusionProof, lpb.GetInclusionProofRequest(leaf_index=0, tree_size=-2), grpc.StatusCode.INVALID_ARGUMENT, "TREE_SIZE_NEGATIVE"),
        (log.GetConsistencyProof, lpb.GetConsistencyProofRequest(first_size=0), grpc.StatusCode.INVALID_ARGUMENT, "FIRST_SIZE_INVALID"),
        (log.GetConsistencyProof, lpb.GetConsistencyProofRequest(first_size=3, second_size=2), grpc.StatusCode.INVALID_ARGUMENT, "SIZES_OUT_OF_ORDER"),
        (log.GetConsistencyProof, lpb.GetConsistencyProofRequest(first_size=size + 1), grpc.StatusCode.INVALID_ARGUMENT, "SIZES_OUT_OF_ORDER"),
        (log.GetConsistencyProof, lpb.GetConsistencyProofRequest(first_size=1, second_size=-1), grpc.StatusCode.INVALID_ARGUMENT, "TREE_SIZE_NEGATIVE"),
        (log.GetEntries, lpb.GetEntriesRequest(start=-1, end=2), grpc.StatusCode.INVALID_ARGUMENT, "ENTRIES_START_NEGATIVE"),
        (log.GetEntries, lpb.GetEntriesRequest(start=2, end=2), grpc.StatusCode.INVALID_ARGUMENT, "ENTRIES_RANGE_EMPTY"),
        (log.GetEntries, lpb.GetEntriesRequest(start=size, end=size + 1), grpc.StatusCode.NOT_FOUND, "ENTRIES_BEYOND_TREE"),
        (log.AddCosignature, lpb.AddCosignatureRequest(), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_REQUIRED"),
        (log.AddCosignature, lpb.AddCosignatureRequest(cosigned_note="not a note"), grpc.StatusCode.INVALID_ARGUMENT, "CHECKPOINT_SIGNATURE_INVALID"),
        (log.AddCosignature, lpb.AddCosignatureRequest(cosigned_note=log.GetCheckpoint(lpb.GetCheckpointRequest()).note),
         grpc.StatusCode.PERMISSION_DENIED, "COSIGNATURE_NOT_ACCEPTED"),
    ]
    for method, request, code, reason in cases:
        with pytest.raises(grpc.RpcError) as failed:
            method(request)
        error = rich_error(failed.value)
        assert (error.code, error.reason) == (code, reason), (request, error)


def test_a_configured_witness_cosignature_is_stored_and_served(server, transmission, match, log, partner):
    import base64
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from contract.cosignature import WitnessVerifier
    from contract.note import raw_public_key

    key = Ed25519PrivateKey.generate()
    name = "witness.mx.example/w1"
    public = raw_public_key(key.public_key())
    key_hash = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    encoded = base64.b64encode(b"\x04" + public).decode()
    witness = WitnessVerifier.parse(f"{name}+{key_hash.hex()}+{encoded}")
    server.use_cases.log.witnesses = [witness]
    submit_and_claim(transmission, match, partner, 1)
    server.use_cases.log.integrate()
    note = log.GetCheckpoint(lpb.GetCheckpointRequest()).note
    body = note.rpartition("\n\n")[0] + "\n"
    stamp = 1_772_460_000  # shortly before the test clock's NOW (2026-03-02 15:00 UTC)
    signature = key.sign(f"cosignature/v1\ntime {stamp}\n{body}".encode())
    line = f"— {name} {base64.b64encode(key_hash + stamp.to_bytes(8, 'big') + signature).decode()}"
    added = log.AddCosignature(lpb.AddCosignatureRequest(cosigned_note=note + line + "\n"))
    assert added.cosignatures == 1 and added.tree_size == Checkpoint.parse(body).size
    served = log.GetCheckpoint(lpb.GetCheckpointRequest()).note
    assert served == note + line + "\n"
    assert open_note(served, [verifier(server)]).other_signatures == 1
    # A line whose signature does not verify is not stored.
    forged = f"— {name} {base64.b64encode(key_hash + stamp.to_bytes(8, 'big') + bytes(64)).decode()}"
    with pytest.raises(grpc.RpcError) as refused:
        log.AddCosignature(lpb.AddCosignatureRequest(cosigned_note=note + forged + "\n"))
    assert rich_error(refused.value).reason == "COSIGNATURE_NOT_ACCEPTED"
    # So is a cosignature dated well after customs' clock (beyond a 5-minute skew).
    ahead = 1_790_000_000
    signature = key.sign(f"cosignature/v1\ntime {ahead}\n{body}".encode())
    future = f"— {name} {base64.b64encode(key_hash + ahead.to_bytes(8, 'big') + signature).decode()}"
    with pytest.raises(grpc.RpcError) as refused:
        log.AddCosignature(lpb.AddCosignatureRequest(cosigned_note=note + future + "\n"))
    assert rich_error(refused.value).reason == "COSIGNATURE_NOT_ACCEPTED"


# -- tampering ------------------------------------------------------------------------------------


@pytest.fixture
def logged(server, transmission, match, partner):  # type: ignore[no-untyped-def]
    """A log with a receipt and three decisions, integrated and checkpointed; an untampered log verifies."""
    submit_and_claim(transmission, match, partner, 3)
    server.use_cases.log.integrate()
    result = verify_audit_log(server.database, verifier(server))
    assert result.intact, result.problems
    assert result.records == result.tree_size == 2 + 1 + 3  # two packaged reference tables, a receipt, three decisions
    return server


def sql(server, statement: str, **params: object) -> None:  # type: ignore[no-untyped-def]
    with server.database.write_engine.begin() as connection:
        connection.execute(text(statement), params)


def last_decision(server) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    with server.database.read_engine.connect() as connection:
        row = connection.execute(text("SELECT log_index, entry FROM log_entries WHERE kind = 'DECISION' ORDER BY log_index DESC")).first()
    return int(row[0]), bytes(row[1])


def audit(server, settings, *extra: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return ecert("audit", "verify", "--database-url", settings.resolved_database_url(), "--log-key", verifier(server).text(), "--json", *extra)


def test_an_untampered_log_verifies_from_the_command_line(logged, settings, tmp_path):
    note = tmp_path / "checkpoint.txt"
    note.write_text(logged.use_cases.log.checkpoint()[1])
    done = audit(logged, settings, "--checkpoint", str(note))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["intact"] is True


def test_truncating_the_log_is_detected(logged, settings):
    sql(logged, "DELETE FROM log_entries WHERE log_index = (SELECT max(log_index) FROM log_entries)")
    done = audit(logged, settings)
    assert done.returncode == 1
    assert any("covers entries that are gone" in p for p in json.loads(done.stdout)["problems"])


def test_rewriting_an_entry_is_detected_whether_or_not_its_leaf_hash_is_recomputed(logged, settings):
    index, data = last_decision(logged)
    changed = data.replace(b"PREFERENTIAL", b"MFN_REQUIRED")
    sql(logged, "UPDATE log_entries SET entry = :e WHERE log_index = :i", e=changed, i=index)
    result = verify_audit_log(logged.database, verifier(logged))
    assert not result.intact and result.first_broken == index
    sql(logged, "UPDATE log_entries SET leaf_hash = :h WHERE log_index = :i", h=merkle.leaf_hash(changed), i=index)
    result = verify_audit_log(logged.database, verifier(logged))
    assert not result.intact and any("do not make the root" in p for p in result.problems), result.problems


def test_a_full_recompute_by_an_insider_is_caught_by_an_earlier_checkpoint(logged, settings, tmp_path, match):
    held = tmp_path / "witnessed.txt"
    held.write_text(logged.use_cases.log.checkpoint()[1])  # what a witness or a client kept
    match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(9)))
    logged.use_cases.log.integrate()
    # The insider (holding the log key) rewrites an old decision and rebuilds every node and checkpoint.
    index, data = last_decision(logged)
    index -= 1
    with logged.database.read_engine.connect() as connection:
        data = bytes(connection.execute(text("SELECT entry FROM log_entries WHERE log_index = :i"), {"i": index}).scalar_one())
    # What the claim rows do not repeat (the conversion factor the decision used), so that they still agree.
    changed = data.replace(b'"factor":"6.0@', b'"factor":"5.0@')
    assert changed != data
    sql(logged, "UPDATE log_entries SET entry = :e, leaf_hash = :h WHERE log_index = :i", e=changed, h=merkle.leaf_hash(changed), i=index)
    sql(logged, "DELETE FROM log_checkpoints")
    sql(logged, "DELETE FROM log_nodes")
    sql(logged, "UPDATE log_entries SET log_index = NULL")
    logged.use_cases.log.integrate()
    assert verify_audit_log(logged.database, verifier(logged)).intact  # the database alone cannot tell
    done = audit(logged, settings, "--checkpoint", str(held))
    assert done.returncode == 1
    assert any("not consistent with the checkpoint given" in p for p in json.loads(done.stdout)["problems"])


def test_emptying_the_log_is_detected(logged, settings, tmp_path):
    held = tmp_path / "witnessed.txt"
    held.write_text(logged.use_cases.log.checkpoint()[1])
    for table in ("log_entries", "log_nodes", "log_checkpoints"):
        sql(logged, f"DELETE FROM {table}")
    result = verify_audit_log(logged.database, verifier(logged))
    assert not result.intact and any("have no entry in the log" in p for p in result.problems), result.problems
    done = audit(logged, settings, "--checkpoint", str(held))
    assert done.returncode == 1
    assert any("the log was cut back" in p for p in json.loads(done.stdout)["problems"])


def test_a_checkpoint_signed_by_another_key_is_refused(logged):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stored = logged.use_cases.log.checkpoint()[0]
    forged = sign_note(Checkpoint(logged.use_cases.log.origin, stored.tree_size, stored.root_hash).text(), logged.use_cases.log.origin,
                       Ed25519PrivateKey.generate())
    sql(logged, "UPDATE log_checkpoints SET note = :n WHERE tree_size = :s", n=forged, s=stored.tree_size)
    result = verify_audit_log(logged.database, verifier(logged))
    assert not result.intact and any("does not verify with the log key" in p for p in result.problems)


def test_claim_answers_name_their_latest_entry_fresh_replayed_and_reversed(server, transmission, match, log, partner):
    _, (first,) = submit_and_claim(transmission, match, partner, 1)
    replay = match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(1)))
    assert replay.replayed and replay.result.log_leaf_hash == first.result.log_leaf_hash  # read back, the same entry
    reversed_answer = match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=first.result.entry_number, line_number=1,
                                                                 kind=mpb.REVERSAL_KIND_CANCELED))
    got = match.GetClaim(mpb.GetClaimRequest(entry_number=first.result.entry_number, line_number=1))
    assert reversed_answer.reversed.log_leaf_hash == got.result.log_leaf_hash != first.result.log_leaf_hash
    checked = match.CheckClaim(mpb.CheckClaimRequest(line=claim_line(5)))
    assert checked.result.log_leaf_hash == b""  # a check stores nothing
    server.use_cases.log.integrate()
    kinds = {}
    for leaf in (first.result.log_leaf_hash, reversed_answer.reversed.log_leaf_hash):
        index = log.GetInclusionProof(lpb.GetInclusionProofRequest(leaf_hash=leaf)).leaf_index
        entry = log.GetEntries(lpb.GetEntriesRequest(start=index, end=index + 1)).entries[0]
        assert entry.leaf_hash == leaf
        kinds[leaf] = LogEntry.decode(entry.entry).kind
    assert kinds == {first.result.log_leaf_hash: "DECISION", reversed_answer.reversed.log_leaf_hash: "REVERSAL"}


def test_an_edited_claim_or_receipt_no_longer_matches_its_entry(logged, transmission):
    sql(logged, "UPDATE claims SET decision = 'MFN_REQUIRED' WHERE claim_id = (SELECT min(claim_id) FROM claims)")
    result = verify_audit_log(logged.database, verifier(logged))
    assert not result.intact and any("claims differ from what the log says" in p for p in result.problems), result.problems
    sql(logged, "UPDATE claims SET decision = 'PREFERENTIAL'")
    assert verify_audit_log(logged.database, verifier(logged)).intact
    sql(logged, "UPDATE claims SET reversed_at = :at", at=NOW)
    assert any("claims differ" in p for p in verify_audit_log(logged.database, verifier(logged)).problems)
    sql(logged, "UPDATE claims SET reversed_at = NULL")
    sql(logged, "UPDATE transmissions SET receipt_json = replace(receipt_json, 'ACCEPTED', 'REJECTED')")
    result = verify_audit_log(logged.database, verifier(logged))
    assert not result.intact and any("receipts differ from their entries" in p for p in result.problems), result.problems


def test_a_changed_tree_node_is_detected(logged):
    sql(logged, "UPDATE log_nodes SET hash = :h WHERE level = 1 AND idx = 0", h=bytes(32))
    result = verify_audit_log(logged.database, verifier(logged))
    assert not result.intact and any("stored tree node (1, 0)" in p for p in result.problems), result.problems
