"""`ecert log`: a partner proves offline that customs logged its receipt, and that a later checkpoint
extends an earlier one; every tampered input is refused (exit 1), unusable input is exit 2."""
from __future__ import annotations

import datetime as dt
import json

from google.protobuf import json_format

from ecert.v1 import transmission_pb2 as tpb
from tests.factories import certificate, envelope


def test_a_receipt_is_proved_in_the_log_offline_and_tampering_is_refused(ecert, server, transmission, partner, tmp_path):
    env = envelope(partner.signer, sent_at=dt.datetime.now(dt.timezone.utc))
    answer = transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env))
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json_format.MessageToJson(answer.receipt))
    server.use_cases.log.integrate()
    older = tmp_path / "older.txt"
    key = tmp_path / "log.vkey"
    assert ecert("log", "checkpoint", "--out", str(older), "--key-out", str(key)).code == 0
    assert key.read_text().strip() == server.use_cases.log.verifier.text()

    proof = tmp_path / "proof.json"
    fetched = ecert("log", "proof", "--receipt", str(receipt), "--out", str(proof))
    assert fetched.code == 0, fetched.stderr
    verified = ecert("log", "verify", "--proof", str(proof), "--receipt", str(receipt), "--log-key", str(key))
    assert verified.code == 0 and verified.stdout.startswith("VERIFIED"), verified.stderr
    # By leaf hash too (what the answer carried), against the checkpoint kept separately.
    by_hash = ecert("log", "verify", "--proof", str(proof), "--leaf-hash", answer.log_leaf_hash.hex(), "--log-key", str(key),
                    "--checkpoint", str(older))
    assert by_hash.code == 0, by_hash.stderr

    # By index, and checked against the entry's own bytes.
    index = json.loads(proof.read_text())["leaf_index"]
    by_index = tmp_path / "by-index.json"
    assert ecert("log", "proof", "--index", str(index), "--out", str(by_index)).code == 0
    entry_file = tmp_path / "entry.bin"
    entry_file.write_bytes(server.use_cases.log.entries(index, index + 1)[0][1])
    assert ecert("log", "verify", "--proof", str(by_index), "--entry", str(entry_file), "--log-key", str(key)).code == 0

    # A receipt that says something else is not the logged one.
    other = json.loads(receipt.read_text())
    other["certificateVersion"] = 7
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(other))
    refused = ecert("log", "verify", "--proof", str(proof), "--receipt", str(forged), "--log-key", str(key))
    assert refused.code == 1 and "FAILED" in refused.stderr
    # A proof with a changed hash, or a checkpoint not signed by the log key, proves nothing.
    document = json.loads(proof.read_text())
    if document["hashes"]:
        document["hashes"][0] = "A" * 43 + "="
        bad = tmp_path / "bad-proof.json"
        bad.write_text(json.dumps(document))
        assert ecert("log", "verify", "--proof", str(bad), "--receipt", str(receipt), "--log-key", str(key)).code == 1
    from contract.note import NoteVerifier

    stranger = NoteVerifier(server.use_cases.log.origin, bytes(32)).text()
    assert ecert("log", "verify", "--proof", str(proof), "--receipt", str(receipt), "--log-key", stranger).code == 1
    assert ecert("log", "verify", "--proof", str(proof), "--receipt", str(receipt), "--log-key", "nonsense").code == 2

    # The log grows; the later checkpoint extends the one kept.
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(
        envelope=envelope(partner.signer, certificate("MX26-00000002"), message_id="msg-0002", sent_at=dt.datetime.now(dt.timezone.utc))))
    server.use_cases.log.integrate()
    newer = tmp_path / "newer.txt"
    assert ecert("log", "checkpoint", "--out", str(newer)).code == 0
    consistent = ecert("log", "verify-consistency", str(older), str(newer), "--log-key", str(key))
    assert consistent.code == 0 and consistent.stdout.startswith("VERIFIED"), consistent.stderr
    rollback = ecert("log", "verify-consistency", str(newer), str(older), "--log-key", str(key))
    assert rollback.code == 1 and "rollback" in rollback.stderr
