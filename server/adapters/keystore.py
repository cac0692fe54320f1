"""Key material on disk: partners' registered public keys and customs' receipt-signing key."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import pathlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.keys import load_public_key, load_signer, public_key_pem, save_private_key
from contract.signing import Signer
from server.domain.trust_store import TrustedKey, TrustStore

log = logging.getLogger(__name__)


def _instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def load_trust_store(path: str | pathlib.Path) -> TrustStore:
    """Partner document-signing keys: {"keys": [{key_id, partner, public_key_pem, not_before, not_after}],
    "revoked": [{key_id, reason, revoked_at}]}. A revoked key id is refused (SIGNING_KEY_REVOKED) whether
    or not its entry is still under "keys"; "revoked" may be absent."""
    path = pathlib.Path(path)
    if not path.exists():
        log.warning("no partner trust store at %s: every transmission will be rejected", path)
        return TrustStore([])
    document = json.loads(path.read_text(encoding="utf-8"))
    return TrustStore(
        [
            TrustedKey(
                key_id=entry["key_id"],
                partner=entry["partner"],
                public_key=load_public_key(entry["public_key_pem"]),
                not_before=_instant(entry["not_before"]),
                not_after=_instant(entry["not_after"]),
            )
            for entry in document["keys"]
        ],
        revoked=[_revoked_key_id(entry) for entry in document.get("revoked", [])],
    )


def _revoked_key_id(entry: Any) -> str:
    key_id = entry.get("key_id") if isinstance(entry, dict) else None
    if not isinstance(key_id, str) or not key_id:
        raise ValueError(f"a \"revoked\" entry without a key_id: {entry!r}")
    return key_id


def revoke_key(path: str | pathlib.Path, key_id: str, reason: str, at: dt.datetime) -> bool:
    """Adds `key_id` to the trust store's "revoked" list (rewriting the file atomically); False when it
    was already there. Its entry under "keys" stays, so that the store still says whose key it was."""
    path = pathlib.Path(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    revoked = document.setdefault("revoked", [])
    if any(_revoked_key_id(entry) == key_id for entry in revoked):
        return False
    revoked.append({"key_id": key_id, "reason": reason, "revoked_at": at.isoformat()})
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return True


def derived_key(signer: Signer, purpose: bytes) -> bytes:
    """A 32-byte secret for `purpose` derived from a private signing key: every replica holding the
    key derives the same one, and it reveals nothing about the key."""
    raw = signer.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return hashlib.sha256(b"ecert derived key\n" + purpose + b"\n" + raw).digest()


class SigningKeyMissing(Exception):
    """A configured signing key file does not exist (and creating one was not asked for)."""

    def __init__(self, path: pathlib.Path, message: str):
        super().__init__(message)
        self.path = path


class ReceiptKeyMissing(SigningKeyMissing):
    """The receipt-signing key file does not exist."""

    def __init__(self, path: pathlib.Path):
        super().__init__(path, (
            f"the receipt-signing key {path} does not exist; mount the key customs publishes "
            "(ECERT_RECEIPT_KEY), or start with --create-receipt-key to make a new one (development only)"
        ))


class LogKeyMissing(SigningKeyMissing):
    """The transparency log's checkpoint-signing key file does not exist: a replica that made its own
    would sign checkpoints no witness or client can verify."""

    def __init__(self, path: pathlib.Path):
        super().__init__(path, (
            f"the log-signing key {path} does not exist; mount the key whose verifier key customs publishes "
            "(ECERT_LOG_KEY; `openssl genpkey -algorithm ed25519 -out FILE` makes one, once, for every replica), "
            "or start with --create-receipt-key to make new keys (development only)"
        ))


def load_receipt_signer(path: str | pathlib.Path, key_id: str, *, create_if_missing: bool) -> Signer:
    """Customs' receipt-signing key; a missing file is ReceiptKeyMissing unless creating it was asked for."""
    path = pathlib.Path(path)
    if not path.exists() and not create_if_missing:
        raise ReceiptKeyMissing(path)
    return load_or_create_signer(path, key_id)


def load_or_create_signer(path: str | pathlib.Path, key_id: str) -> Signer:
    """The receipt-signing key; a development setup without one gets a fresh key (logged)."""
    path = pathlib.Path(path)
    if not path.exists():
        log.warning("no receipt-signing key at %s: generating one", path)
        save_private_key(path, Ed25519PrivateKey.generate())
        pathlib.Path(str(path) + ".pub").write_text(public_key_pem(load_signer(path, key_id).public_key))
    return load_signer(path, key_id)


def load_log_key(path: str | pathlib.Path, *, create_if_missing: bool) -> Ed25519PrivateKey:
    """The log's checkpoint-signing key; a missing file is LogKeyMissing unless creating it was asked for."""
    path = pathlib.Path(path)
    if not path.exists() and not create_if_missing:
        raise LogKeyMissing(path)
    return load_or_create_log_key(path)


def load_or_create_log_key(path: str | pathlib.Path) -> Ed25519PrivateKey:
    """The transparency log's checkpoint-signing key (PEM), made if missing (logged). Made atomically:
    replicas starting together over one key folder all end up with the one key that was linked first."""
    path = pathlib.Path(path)
    if not path.exists():
        log.warning("no log-signing key at %s: generating one", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_private_key(scratch, Ed25519PrivateKey.generate())
        try:
            os.link(scratch, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            scratch.unlink()
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key
