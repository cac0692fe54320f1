"""Signed notes and log checkpoints in the C2SP formats (signed-note, tlog-checkpoint), Ed25519 only.

A note is UTF-8 text ending in a newline, then a blank line, then one line per signature:
"— <key name> <base64(key hash || signature)>". The key hash is the first four bytes of
SHA-256(name || "\\n" || 0x01 || public key); a verifier key is written "<name>+<hash hex>+<base64(0x01
|| public key)>". A checkpoint is the note text "<origin>\\n<tree size>\\n<base64(root hash)>\\n",
optionally followed by extension lines. Pure: a witness or a court needs only these rules.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space
MAX_SIGNATURES = 100


class NoteError(ValueError):
    """A note, key or checkpoint that does not follow the format, or whose signature does not verify."""


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise NoteError("not base64") from exc


def _valid_name(name: str) -> bool:
    return bool(name) and all(c.isprintable() and not c.isspace() and c != "+" for c in name)


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519 + public_key).digest()[:4]


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class NoteVerifier:
    name: str
    public_key: bytes  # raw Ed25519, 32 bytes

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.public_key)

    def text(self) -> str:
        """The verifier key as published: name+hash+base64(alg || key)."""
        return f"{self.name}+{self.key_hash.hex()}+{base64.b64encode(ED25519 + self.public_key).decode()}"

    @classmethod
    def parse(cls, text: str) -> NoteVerifier:
        name, _, rest = text.partition("+")
        hash_hex, _, key = rest.partition("+")
        if not _valid_name(name) or len(hash_hex) != 8 or not key:
            raise NoteError("a verifier key is name+hash+key")
        raw = _b64decode(key)
        if len(raw) != 33 or raw[:1] != ED25519:
            raise NoteError("only Ed25519 verifier keys are known")
        verifier = cls(name, raw[1:])
        if verifier.key_hash.hex() != hash_hex.lower() or hash_hex != hash_hex.lower():
            raise NoteError("the verifier key's hash does not match its name and key")
        return verifier


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """`text` signed by `name`: the note as it is sent."""
    if not text.endswith("\n") or "\n\n" in text or not _valid_name(name):
        raise NoteError("a note's text is non-empty lines, each ending in a newline; a key name has no spaces or '+'")
    signature = private_key.sign(text.encode("utf-8"))
    line = base64.b64encode(key_hash(name, raw_public_key(private_key.public_key())) + signature).decode()
    return f"{text}\n{SIGNATURE_PREFIX}{name} {line}\n"


@dataclass(frozen=True)
class OpenedNote:
    text: str
    signed_by: tuple[str, ...]  # the names of the known keys whose signatures verified
    other_signatures: int  # lines by keys not given (a witness's cosignature, say)


def open_note(note: str, verifiers: list[NoteVerifier]) -> OpenedNote:
    """The note's text, if at least one signature by a key in `verifiers` verifies; NoteError when
    the note is malformed, when a known key's signature does not verify, or when none is known."""
    text, separator, signatures = note.rpartition("\n\n")
    if not separator or not signatures.endswith("\n") or not text:
        raise NoteError("malformed note: text, a blank line, then signature lines")
    text += "\n"
    known = {(v.name, v.key_hash): v for v in verifiers}
    signed_by: list[str] = []
    others = 0
    lines = signatures[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("malformed note: too many signatures")
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("malformed note: a signature line starts with an em dash and a space")
        name, _, encoded = line[len(SIGNATURE_PREFIX):].partition(" ")
        raw = _b64decode(encoded)
        if not _valid_name(name) or len(raw) < 5:
            raise NoteError("malformed note: a signature line is name and base64(key hash || signature)")
        verifier = known.get((name, raw[:4]))
        if verifier is None:
            others += 1
            continue
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public_key).verify(raw[4:], text.encode("utf-8"))
        except InvalidSignature:
            raise NoteError(f"the signature of {name} does not verify") from None
        signed_by.append(name)
    if not signed_by:
        raise NoteError("no signature by a known key")
    return OpenedNote(text, tuple(signed_by), others)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        if not self.origin or "\n" in self.origin or self.size < 0 or len(self.root_hash) != 32:
            raise NoteError("a checkpoint has an origin line, a size and a 32-byte root hash")
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode(), *self.extensions]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise NoteError("a checkpoint's text ends in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not lines[0]:
            raise NoteError("a checkpoint is origin, size and root hash lines")
        origin, size, root = lines[:3]
        if not size.isascii() or not size.isdigit() or (size.startswith("0") and size != "0"):
            raise NoteError("a checkpoint's size is a decimal number without leading zeros")
        root_hash = _b64decode(root)
        if len(root_hash) != 32:
            raise NoteError("a checkpoint's root hash is 32 bytes")
        return cls(origin, int(size), root_hash, tuple(lines[3:]))
