"""Every Python implementation of the wire contract reproduces tests/vectors/wire-contract.json byte for byte.

The file is the contract's test (generated once, see tests/vectors/generate.py; these tests only read it). The
implementation is the contract package: canonical bytes, digests, sealing and signature checks of envelopes
(contract.envelope, contract.canonical), receipts' bytes and verification (contract.receipt, read off the wire
by contract.messages). Its users are checked on the same vectors: the server reading an envelope off the wire
and judging its signature with the partners' trust store, the simulated partner (gateway_sim's Gateway seals
with the contract; the SDK's PartnerClient goes through unsigned_envelope/seal_envelope), the SDK's check of a
stored certificate's signature, and `ecert receipt verify` fed the SDK's receipt JSON. Each vector also has a
negative case: one byte of one field changed gives another digest and a signature that no longer verifies.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import pathlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from typer.testing import CliRunner

from client.cli import app as ecert
from client.sdk import models as sdk
from client.sdk.services import seal_envelope, unsigned_envelope
from contract.canonical import envelope_bytes
from contract.certificate import CertificateDraft, PartyDraft
from contract import envelope
from contract.envelope import seal
from contract.messages import receipt_from_proto
from contract.signing import Signer, sha256
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import transmission_pb2 as tpb
from server.api.converters import envelope_from_proto
from server.domain.errors import DomainError
from server.domain.trust_store import TrustedKey, TrustStore

VECTORS_PATH = pathlib.Path(__file__).resolve().parents[1] / "vectors" / "wire-contract.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
ENVELOPES = VECTORS["envelopes"]
RECEIPTS = VECTORS["receipts"]
UTC = dt.timezone.utc


def _signer(role: str) -> Signer:
    key = VECTORS["keys"][role]
    return Signer(key["key_id"], Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key["secret_key_hex"])))


def _public(role: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(VECTORS["keys"][role]["public_key_hex"]))


PARTNER, CUSTOMS = _signer("partner"), _signer("customs")


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


def _tweak(text: str) -> str:
    """The same text with one byte of its last (ASCII) character changed."""
    assert text and text[-1].isascii()
    return text[:-1] + chr(ord(text[-1]) ^ 1)


def _one_byte_changed(envelope_input: dict[str, Any]) -> dict[str, Any]:
    """A copy of an envelope vector's input with one byte of its certificate number changed."""
    data = json.loads(json.dumps(envelope_input))
    data["certificate"]["certificate_number"] = _tweak(data["certificate"]["certificate_number"])
    return data


def _expected(vector: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    canonical = bytes.fromhex(vector["canonical_hex"])
    assert canonical.decode("utf-8") == vector["canonical_text"]
    return canonical, bytes.fromhex(vector["sha256_hex"]), bytes.fromhex(vector["signature_hex"])


# -- building each implementation's input from a vector's fields -----------------------------------------


def _draft(certificate: dict[str, Any]) -> CertificateDraft:
    rest = {k: v for k, v in certificate.items() if k not in ("exporter", "producer")}
    return CertificateDraft(**rest, exporter=PartyDraft(**certificate.get("exporter", {})),
                            producer=PartyDraft(**certificate.get("producer", {})))


def _envelope_proto(data: dict[str, Any], signature: bytes = b"") -> tpb.SignedEnvelope:
    return tpb.SignedEnvelope(
        message_id=data["message_id"], sender=data["sender"],
        sent_at=Timestamp(seconds=data["sent_at"]["seconds"], nanos=data["sent_at"]["nanos"]),
        action=tpb.TransmissionAction.Value("TRANSMISSION_ACTION_" + data["action"]),
        replaces_version=data["replaces_version"], key_id=data["key_id"],
        certificate=json_format.ParseDict(data["certificate"], cpb.Certificate()), signature=signature,
    )


def _receipt_proto(data: dict[str, Any], signature: bytes) -> tpb.Receipt:
    return tpb.Receipt(
        receipt_id=data["receipt_id"], message_id=data["message_id"], sender=data["sender"], recipient=data["recipient"],
        digest_sha256=bytes.fromhex(data["digest_sha256"]),
        received_at=Timestamp(seconds=data["received_at"]["seconds"], nanos=data["received_at"]["nanos"]),
        outcome=tpb.TransmissionOutcome.Value("TRANSMISSION_OUTCOME_" + data["outcome"]),
        issues=[tpb.TransmissionIssue(code=i["code"], field=i["field"], description=i["description"],
                                      severity=tpb.Severity.Value("SEVERITY_" + i["severity"].upper())) for i in data["issues"]],
        action=tpb.TransmissionAction.Value("TRANSMISSION_ACTION_" + data["action"]),
        certificate_number=data["certificate_number"], certificate_version=data["certificate_version"],
        signing_key_id=data["signing_key_id"], signature=signature,
        signature_sha256=bytes.fromhex(data.get("signature_sha256", "")),
    )


def _trust_store() -> TrustStore:
    return TrustStore([TrustedKey(PARTNER.key_id, "MX", _public("partner"), dt.datetime(2020, 1, 1, tzinfo=UTC),
                                  dt.datetime(2100, 1, 1, tzinfo=UTC))])


# -- the keys ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["partner", "customs"])
def test_the_keys_are_rfc_8032s_and_sign_its_own_test_message(role):
    key = VECTORS["keys"][role]
    signer = _signer(role)
    assert signer.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex() == key["public_key_hex"]
    assert signer.sign(bytes.fromhex(key["check_message_hex"])).hex() == key["check_signature_hex"]


def test_the_file_covers_what_the_contract_promises():
    assert {v["input"]["action"] for v in ENVELOPES} >= {"CREATE", "REPLACE", "CANCEL"}
    assert any(v["input"]["replaces_version"] for v in ENVELOPES)
    assert {v["input"]["outcome"] for v in RECEIPTS} >= {"ACCEPTED", "REJECTED"}
    assert any(v["input"]["issues"] for v in RECEIPTS) and any("signature_sha256" not in v["input"] for v in RECEIPTS)
    assert all(not v["canonical_text"].isascii() for v in ENVELOPES if v["input"]["certificate"].get("exporter"))


# -- envelopes: the contract -------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", ENVELOPES, ids=_ids(ENVELOPES))
def test_the_contracts_canonical_bytes_digest_and_signature_check_reproduce_the_vector(vector):
    canonical, digest, signature = _expected(vector)
    data = vector["input"]
    carried = _envelope_proto(data, signature)
    assert envelope.signed_bytes(carried) == canonical
    assert envelope.digest(carried) == digest == hashlib.sha256(canonical).digest()
    assert envelope.signature_ok(carried, _public("partner"))
    direct = envelope_bytes(message_id=data["message_id"], sender=data["sender"], sent_at_seconds=data["sent_at"]["seconds"],
                            sent_at_nanos=data["sent_at"]["nanos"], action=data["action"], replaces_version=data["replaces_version"],
                            key_id=data["key_id"], certificate=_draft(data["certificate"]))
    assert direct == canonical
    assert PARTNER.sign(canonical) == signature  # Ed25519 is deterministic: the same bytes, the same signature


@pytest.mark.parametrize("vector", ENVELOPES, ids=_ids(ENVELOPES))
def test_the_contract_refuses_an_envelope_with_one_changed_byte(vector):
    canonical, digest, signature = _expected(vector)
    tampered = _envelope_proto(_one_byte_changed(vector["input"]), signature)
    assert len(envelope.signed_bytes(tampered)) == len(canonical) and envelope.signed_bytes(tampered) != canonical
    assert envelope.digest(tampered) != digest
    assert not envelope.signature_ok(tampered, _public("partner"))


# -- envelopes: the server, as its servicer reads them off the wire ----------------------------------------


@pytest.mark.parametrize("vector", ENVELOPES, ids=_ids(ENVELOPES))
def test_the_servers_canonical_bytes_digest_and_signature_check_reproduce_the_vector(vector):
    canonical, digest, signature = _expected(vector)
    data = vector["input"]
    received = envelope_from_proto(_envelope_proto(data, signature))  # as the servicer reads it off the wire
    assert received.signed_bytes() == canonical
    assert received.digest() == digest == hashlib.sha256(canonical).digest()
    assert _trust_store().verify(sender=received.sender, key_id=received.key_id, signature=received.signature,
                                 data=received.signed_bytes(), signed_at=received.sent_at).key_id == PARTNER.key_id


@pytest.mark.parametrize("vector", ENVELOPES, ids=_ids(ENVELOPES))
def test_one_changed_byte_changes_the_envelope_digest_and_fails_the_signature(vector):
    canonical, digest, signature = _expected(vector)
    tampered = envelope_from_proto(_envelope_proto(_one_byte_changed(vector["input"]), signature))
    assert len(tampered.signed_bytes()) == len(canonical) and tampered.signed_bytes() != canonical
    assert tampered.digest() != digest
    with pytest.raises(DomainError) as refused:
        _trust_store().verify(sender=tampered.sender, key_id=tampered.key_id, signature=signature,
                              data=tampered.signed_bytes(), signed_at=tampered.sent_at)
    assert refused.value.reason == "SIGNATURE_INVALID"


# -- envelopes: the simulated partner and the SDK ------------------------------------------------------------


@pytest.mark.parametrize("vector", ENVELOPES, ids=_ids(ENVELOPES))
def test_the_contracts_seal_produces_the_same_bytes_and_signature(vector):
    canonical, digest, signature = _expected(vector)
    unsigned = _envelope_proto({**vector["input"], "key_id": ""})  # seal sets the key id; sent_at is kept as given
    sealed = seal(unsigned, PARTNER)
    assert sealed.key_id == PARTNER.key_id and sealed.signature == signature
    assert envelope.signed_bytes(sealed) == canonical and envelope_from_proto(sealed).signed_bytes() == canonical


def test_the_simulated_partner_seals_and_digests_with_the_contract_only():
    """gateway_sim's Gateway has no sealing path of its own: what it sends is what the vectors above check."""
    from gateway_sim.gateway import gateway

    assert gateway.seal is envelope.seal and gateway.envelope_digest is envelope.digest


SDK_SEALABLE = [v for v in ENVELOPES if v["input"]["action"] != "UNSPECIFIED" and v["input"]["sent_at"]["nanos"] % 1000 == 0]


@pytest.mark.parametrize("vector", SDK_SEALABLE, ids=_ids(SDK_SEALABLE))
def test_the_sdk_partners_seal_path_signs_the_same_bytes(vector):
    """What gateway_sim's PartnerClient.seal does: SDK Certificate -> unsigned_envelope -> seal_envelope(sent_at as a
    datetime, hence only vectors whose nanos a datetime can hold, and an action, since the SDK defaults it to CREATE)."""
    canonical, digest, signature = _expected(vector)
    data = vector["input"]
    certificate = sdk.Certificate.from_dict(data["certificate"])
    sent_at = dt.datetime.fromtimestamp(data["sent_at"]["seconds"], UTC) + dt.timedelta(microseconds=data["sent_at"]["nanos"] // 1000)
    envelope = unsigned_envelope(certificate, sender=data["sender"], action=sdk.Action[data["action"]],
                                 replaces_version=data["replaces_version"], message_id=data["message_id"])
    sealed = seal_envelope(envelope, PARTNER, sent_at)
    assert (sealed.sent_at.seconds, sealed.sent_at.nanos) == (data["sent_at"]["seconds"], data["sent_at"]["nanos"])
    assert sealed.signature == signature and envelope_from_proto(sealed).signed_bytes() == canonical


@pytest.mark.parametrize("vector", ENVELOPES, ids=_ids(ENVELOPES))
def test_the_sdks_stored_certificate_check_accepts_the_vector_and_refuses_one_changed_byte(vector):
    canonical, digest, signature = _expected(vector)

    def stored(signed_bytes: bytes) -> sdk.StoredCertificate:
        return sdk.StoredCertificate(sdk.Certificate("x"), 1, None, None, None, "", "", digest, "MX", True,
                                     signed_bytes=signed_bytes, signature=signature, signing_key_id=PARTNER.key_id)

    assert stored(canonical).verify(_public("partner"))
    tampered = canonical.replace(b'"sender":"MX"', b'"sender":"MY"')
    assert tampered != canonical and sha256(tampered) != digest and not stored(tampered).verify(_public("partner"))


# -- receipts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", RECEIPTS, ids=_ids(RECEIPTS))
def test_the_contracts_receipt_bytes_and_verification_reproduce_the_vector(vector):
    canonical, digest, signature = _expected(vector)
    carried = receipt_from_proto(_receipt_proto(vector["input"], signature))
    assert carried.signing_bytes() == canonical and sha256(canonical) == digest
    assert carried.verify(_public("customs"))
    assert carried.signed_by(CUSTOMS).signature == signature  # customs' signer, deterministic


@pytest.mark.parametrize("vector", RECEIPTS, ids=_ids(RECEIPTS))
def test_one_changed_byte_of_a_receipt_changes_its_hash_and_fails_the_contracts_verification(vector):
    canonical, digest, signature = _expected(vector)
    data = {**vector["input"], "receipt_id": _tweak(vector["input"]["receipt_id"])}
    tampered = receipt_from_proto(_receipt_proto(data, signature))
    assert sha256(tampered.signing_bytes()) != digest and not tampered.verify(_public("customs"))


def test_each_receipt_judges_a_vector_envelope_by_its_digest_and_signature():
    by_message = {v["input"]["message_id"]: v for v in ENVELOPES}
    for vector in RECEIPTS:
        judged = by_message[vector["input"]["message_id"]]
        assert vector["input"]["digest_sha256"] == judged["sha256_hex"]
        if "signature_sha256" in vector["input"]:
            assert vector["input"]["signature_sha256"] == sha256(bytes.fromhex(judged["signature_hex"])).hex()


@pytest.fixture
def customs_pem(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "customs.pub"
    path.write_bytes(_public("customs").public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.mark.parametrize("vector", RECEIPTS, ids=_ids(RECEIPTS))
def test_the_sdks_receipt_verifies_offline_and_one_changed_byte_does_not(vector, tmp_path, customs_pem):
    """The SDK keeps the receipt as customs sent it (Receipt.to_json); `ecert receipt verify` checks that file."""
    canonical, digest, signature = _expected(vector)
    received = sdk.Receipt.from_proto(_receipt_proto(vector["input"], signature))
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(received.to_json(), encoding="utf-8")
    changed = json.loads(received.to_json())
    changed["certificateNumber"] = _tweak(changed["certificateNumber"])
    bad.write_text(json.dumps(changed), encoding="utf-8")
    runner = CliRunner()
    ok = runner.invoke(ecert, ["receipt", "verify", str(good), "--public-key", str(customs_pem)])
    assert ok.exit_code == 0 and f"VALID receipt {vector['input']['receipt_id']}" in ok.output, ok.output
    refused = runner.invoke(ecert, ["receipt", "verify", str(bad), "--public-key", str(customs_pem)])
    assert refused.exit_code == 1, refused.output
