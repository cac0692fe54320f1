"""The partners' registered document-signing keys and the rules an envelope's signature must meet:
a known key, the sender's own, not revoked, valid when the envelope was sent, and a signature that checks."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contract.signing import signature_valid
from server.domain.errors import DomainError, ErrorKind, Finding


@dataclass(frozen=True)
class TrustedKey:
    """A partner's registered document-signing public key and the window in which it may sign."""

    key_id: str
    partner: str
    public_key: Ed25519PublicKey
    not_before: dt.datetime
    not_after: dt.datetime


class TrustStore:
    def __init__(self, keys: list[TrustedKey], revoked: Iterable[str] = ()):
        self._keys = {k.key_id: k for k in keys}
        # Key ids revoked by the operator (a compromised key): refused whatever the key's window says.
        self.revoked = frozenset(revoked)

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> list[TrustedKey]:
        return list(self._keys.values())

    def verify(self, *, sender: str, key_id: str, signature: bytes, data: bytes, signed_at: dt.datetime) -> TrustedKey:
        """Check that `sender` signed `data` with a key valid at `signed_at`; raise otherwise."""

        def reject(reason: str, field: str, message: str) -> DomainError:
            return DomainError(reason, message, ErrorKind.INVALID, [Finding(reason, field, message)])

        if not key_id:
            raise reject("SIGNING_KEY_ID_MISSING", "key_id", "the envelope names no signing key")
        if not signature:
            raise reject("SIGNATURE_MISSING", "signature", "the envelope is not signed")
        if key_id in self.revoked:
            raise reject("SIGNING_KEY_REVOKED", "key_id", "the document-signing key was revoked")
        key = self._keys.get(key_id)
        if key is None:
            raise reject("SIGNING_KEY_UNKNOWN", "key_id", "no document-signing key with this id is registered")
        if key.partner != sender:
            raise reject("SIGNING_KEY_NOT_SENDERS", "key_id", "the signing key belongs to another partner")
        if not key.not_before <= signed_at <= key.not_after:
            raise reject("SIGNING_KEY_EXPIRED", "key_id", "the signing key was not valid when the envelope was sent")
        if not signature_valid(key.public_key, signature, data):
            raise reject("SIGNATURE_INVALID", "signature", "the signature does not match the envelope's content")
        return key
