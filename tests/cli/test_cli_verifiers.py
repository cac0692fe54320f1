"""Every verifier a user runs, fed a tampered input through the same entry point: it must say no.

`ecert receipt verify` is the one a sender runs offline; a version of it that accepted any signature
must fail here, not only on valid receipts."""
from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from contract.keys import public_key_pem
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import envelope


@pytest.fixture
def receipt(transmission, partner) -> tpb.Receipt:  # type: ignore[no-untyped-def]
    env = envelope(partner.signer, sent_at=dt.datetime.now(dt.timezone.utc))
    return transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env)).receipt


def changed(receipt: tpb.Receipt, change) -> tpb.Receipt:  # type: ignore[no-untyped-def]
    copy = tpb.Receipt()
    copy.CopyFrom(receipt)
    change(copy)
    return copy


def flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


TAMPERED = {
    "outcome": lambda r: setattr(r, "outcome", tpb.TRANSMISSION_OUTCOME_REJECTED),
    "digest": lambda r: setattr(r, "digest_sha256", flip(r.digest_sha256)),
    "certificate version": lambda r: setattr(r, "certificate_version", r.certificate_version + 1),
    "judged signature": lambda r: setattr(r, "signature_sha256", hashlib.sha256(b"other").digest()),
    "judged signature removed": lambda r: r.ClearField("signature_sha256"),
    "a second earlier": lambda r: setattr(r.received_at, "seconds", r.received_at.seconds - 1),
    "a nanosecond later": lambda r: setattr(r.received_at, "nanos", r.received_at.nanos + 1),
    "signature": lambda r: setattr(r, "signature", flip(r.signature)),
    "no signature": lambda r: r.ClearField("signature"),
}


def verify(ecert, tmp_path, receipt: tpb.Receipt, public_key: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "receipt.json"
    path.write_text(json_format.MessageToJson(receipt), encoding="utf-8")
    return ecert("receipt", "verify", str(path), "--public-key", public_key)


@pytest.mark.parametrize("change", TAMPERED.values(), ids=TAMPERED.keys())
def test_receipt_verify_refuses_a_tampered_receipt(ecert, tmp_path, settings, receipt, change):
    public_key = str(settings.resolved_receipt_key()) + ".pub"
    assert verify(ecert, tmp_path, receipt, public_key).code == 0  # the genuine one, as a control
    result = verify(ecert, tmp_path, changed(receipt, change), public_key)
    assert result.code == 1 and result.stderr.startswith("INVALID"), result.stderr
    assert "VALID receipt" not in result.stdout


def test_receipt_verify_refuses_a_receipt_under_another_key(ecert, tmp_path, receipt):
    other = tmp_path / "other.pub"
    other.write_text(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    result = verify(ecert, tmp_path, receipt, str(other))
    assert result.code == 1 and result.stderr.startswith("INVALID")
