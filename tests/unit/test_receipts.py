"""Receipts' signed bytes: the judged signature's hash is covered, older receipts still verify."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.receipt import Outcome, Receipt
from contract.signing import Signer
from server.adapters.repositories import receipt_from_json, receipt_to_json

UTC = dt.timezone.utc
SIGNER = Signer("cbp-1", Ed25519PrivateKey.generate())


def receipt(**changes: object) -> Receipt:
    base = Receipt("R-1", "m-1", "MX", "US-CBP", b"\x01" * 32, dt.datetime(2026, 3, 2, 15, 0, 0, 123456, tzinfo=UTC),
                   Outcome.ACCEPTED, (), "CREATE", "MX26-00000001", 1, "")
    return dataclasses.replace(base, **changes).signed_by(SIGNER)  # type: ignore[arg-type]


def test_the_judged_signature_hash_is_signed():
    signed = receipt(signature_sha256=b"\x07" * 32)
    assert b'"signature_sha256":"' + (b"07" * 32) + b'"' in signed.signing_bytes()
    assert signed.verify(SIGNER.public_key)
    assert not dataclasses.replace(signed, signature_sha256=b"\x08" * 32).verify(SIGNER.public_key)
    assert not dataclasses.replace(signed, signature_sha256=b"").verify(SIGNER.public_key)


def test_a_receipt_stored_before_the_field_existed_still_verifies():
    old = receipt()  # signed without the field, as every receipt was
    assert b"signature_sha256" not in old.signing_bytes()
    stored = json.loads(receipt_to_json(old))
    assert "signature_sha256" not in stored
    reread = receipt_from_json(json.dumps(stored), old.signature)
    assert reread.signature_sha256 == b"" and reread.verify(SIGNER.public_key)
    new = receipt(signature_sha256=b"\x07" * 32)
    assert receipt_from_json(receipt_to_json(new), new.signature) == new


def test_the_instant_is_verified_at_the_precision_it_is_carried():
    from contract.messages import receipt_from_proto
    from server.api.converters import receipt_to_proto

    carried = receipt_to_proto(receipt())
    assert carried.received_at.nanos == 123456000 and receipt_from_proto(carried).verify(SIGNER.public_key)
    carried.received_at.nanos += 1  # below the microsecond a datetime holds
    assert not receipt_from_proto(carried).verify(SIGNER.public_key)
