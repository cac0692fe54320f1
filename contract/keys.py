"""Ed25519 keys in files, as parties exchange them: private keys in PKCS#8 PEM (written owner-only),
public keys in SubjectPublicKeyInfo PEM. A key's id is published beside it, not inside the file.

A partner's document-signing key is registered with the service in a trust store file:
{"keys": [{key_id, partner, public_key_pem, not_before, not_after}]} (the service reads it with
server/adapters/keystore.py, which also knows its "revoked" list)."""
from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract.signing import Signer


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def save_private_key(path: str | pathlib.Path, key: Ed25519PrivateKey) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def load_signer(path: str | pathlib.Path, key_id: str) -> Signer:
    key = serialization.load_pem_private_key(pathlib.Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return Signer(key_id, key)


def trust_entry(signer: Signer, partner: str, not_before: dt.datetime, not_after: dt.datetime) -> dict[str, Any]:
    return {
        "key_id": signer.key_id,
        "partner": partner,
        "public_key_pem": public_key_pem(signer.public_key),
        "not_before": not_before.isoformat(),
        "not_after": not_after.isoformat(),
    }


def write_trust_store(path: str | pathlib.Path, entries: list[dict[str, Any]]) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"keys": entries}, indent=2) + "\n", encoding="utf-8")
