"""Which cosignature lines of a cosigned checkpoint the log keeps: those by a configured witness key
whose signature verifies. Pure.

A witness key is written as a note verifier key, "<name>+<key hash hex>+<base64(alg || Ed25519 key)>",
with alg 0x04 (C2SP tlog-cosignature, cosignature/v1: the line's value is key hash || 8-byte big-endian
timestamp || signature over "cosignature/v1\\ntime <timestamp>\\n" and the checkpoint text) or 0x01 (a
plain signed-note signature over the checkpoint text).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from server.domain.note import SIGNATURE_PREFIX, NoteError

ED25519 = 0x01
COSIGNATURE_V1 = 0x04


@dataclass(frozen=True)
class WitnessKey:
    name: str
    algorithm: int
    public_key: bytes

    @property
    def key_hash(self) -> bytes:
        return hashlib.sha256(self.name.encode("utf-8") + b"\n" + bytes([self.algorithm]) + self.public_key).digest()[:4]

    @classmethod
    def parse(cls, text: str) -> WitnessKey:
        name, _, rest = text.strip().partition("+")
        hash_hex, _, encoded = rest.partition("+")
        try:
            raw = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise NoteError("a witness key is name+hash+base64(alg || key)") from None
        if not name or len(hash_hex) != 8 or len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError("a witness key is name+hash+base64(alg || key), alg 0x04 (cosignature/v1) or 0x01 (Ed25519)")
        key = cls(name, raw[0], raw[1:])
        if key.key_hash.hex() != hash_hex:
            raise NoteError("the witness key's hash does not match its name and key")
        return key

    def verifies(self, checkpoint_text: str, value: bytes) -> bool:
        if value[:4] != self.key_hash:
            return False
        if self.algorithm == COSIGNATURE_V1:
            if len(value) != 4 + 8 + 64:
                return False
            timestamp = int.from_bytes(value[4:12], "big")
            message = f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode("utf-8")
            signature = value[12:]
        else:
            message, signature = checkpoint_text.encode("utf-8"), value[4:]
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


def accepted_cosignatures(note: str, witnesses: list[WitnessKey]) -> dict[str, str]:
    """Witness name -> its whole signature line, for each line of `note` by a key in `witnesses` whose
    signature over the note's text verifies; other lines are ignored (customs' own, unknown ones)."""
    text, separator, signatures = note.rpartition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise NoteError("malformed note: text, a blank line, then signature lines")
    text += "\n"
    by_name = {w.name: w for w in witnesses}
    accepted: dict[str, str] = {}
    for line in signatures[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("malformed note: a signature line starts with an em dash and a space")
        name, _, encoded = line[len(SIGNATURE_PREFIX):].partition(" ")
        witness = by_name.get(name)
        if witness is None:
            continue
        try:
            value = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise NoteError("malformed note: a signature is base64") from None
        if witness.verifies(text, value):
            accepted[name] = line
    return accepted
