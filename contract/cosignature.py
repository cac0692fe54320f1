"""Witness cosignatures of log checkpoints in the C2SP tlog-cosignature format (version 1, Ed25519).

A cosignature is one more signature line on the checkpoint's signed note:
"— <witness name> <base64(key id || timestamp || signature)>", where
- the key id is the first four bytes of SHA-256(name || "\\n" || 0x04 || Ed25519 public key): the
  algorithm byte 0x04 (timestamped Ed25519 cosignature), not the 0x01 of a plain note signature, so
  a cosignature never passes for the log's own signature, nor the other way round;
- the timestamp is the signing time in POSIX seconds, eight bytes big-endian, at most 2^63 - 1;
- the signature is Ed25519 over "cosignature/v1\\n" "time <timestamp in decimal>\\n" followed by the
  whole checkpoint body (the note text up to and including its last newline, without signature lines).

A witness's public key is published as a verifier key "<name>+<key id hex>+<base64(0x04 || key)>".
The statement a cosignature makes: as of its time, this is the largest tree the witness has seen for
the log named by the checkpoint's origin line, consistent with every earlier one it saw. Pure: a
court, an importer or the log itself checks a cosignature with these rules and the witness's key.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract.note import SIGNATURE_PREFIX, Checkpoint, NoteError, raw_public_key

ALGORITHM = b"\x04"  # signed-note signature type: timestamped Ed25519 checkpoint cosignature
HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1
MAX_LINES = 100  # signature lines a note may carry (the signed-note format asks for at least 16)
_SIGNATURE_BYTES = 4 + 8 + 64


class CosignatureError(NoteError):
    """A witness key, a cosignature line or a cosigned note that does not follow the format, or a
    cosignature by a known witness key that does not verify."""


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CosignatureError("not base64") from exc


def _valid_name(name: str) -> bool:
    return bool(name) and all(c.isprintable() and not c.isspace() and c != "+" for c in name)


def key_id(name: str, public_key: bytes) -> bytes:
    """The four-byte key id of a witness's cosignatures."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + ALGORITHM + public_key).digest()[:4]


def signed_message(body: str, timestamp: int) -> bytes:
    """What the witness's Ed25519 key signs for `body` (the checkpoint note's text) at `timestamp`."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"a cosignature's time is 0 to 2^63-1 seconds, not {timestamp}")
    return f"{HEADER}time {timestamp}\n{body}".encode("utf-8")


@dataclass(frozen=True)
class WitnessVerifier:
    """A witness's public key, as its verifier key text names it."""

    name: str
    public_key: bytes  # raw Ed25519, 32 bytes

    def __post_init__(self) -> None:
        if not _valid_name(self.name) or len(self.public_key) != 32:
            raise CosignatureError("a witness key has a name without spaces or '+' and a 32-byte Ed25519 key")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def text(self) -> str:
        """The verifier key as published: name+key id hex+base64(0x04 || key)."""
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ALGORITHM + self.public_key).decode()}"

    @classmethod
    def parse(cls, text: str) -> WitnessVerifier:
        name, _, rest = text.strip().partition("+")
        id_hex, _, encoded = rest.partition("+")  # base64 may itself hold '+': split twice only
        if not _valid_name(name) or len(id_hex) != 8 or not encoded:
            raise CosignatureError("a witness verifier key is name+key id+key")
        raw = _b64decode(encoded)
        if raw[:1] != ALGORITHM:
            raise CosignatureError(
                f"not a cosignature/v1 key: its type byte is 0x{raw[:1].hex() or '--'}, a witness key's is 0x04")
        if len(raw) != 33:
            raise CosignatureError("a cosignature/v1 key is 32 bytes of Ed25519 after its type byte")
        verifier = cls(name, raw[1:])
        if id_hex != verifier.key_id.hex():
            raise CosignatureError("the witness key's id does not match its name and key")
        return verifier


@dataclass(frozen=True)
class WitnessKey:
    """A witness's name and Ed25519 private key: what it cosigns with."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise CosignatureError("a witness name is non-empty, without spaces or '+'")

    @classmethod
    def generate(cls, name: str) -> WitnessKey:
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def verifier(self) -> WitnessVerifier:
        return WitnessVerifier(self.name, raw_public_key(self.private_key.public_key()))


@dataclass(frozen=True)
class Cosignature:
    """One verified cosignature line of a note."""

    name: str
    key_id: bytes
    timestamp: int
    line: str  # the signature line as it stands in the note, without its newline


def split_note(note: str) -> tuple[str, list[str]]:
    """A signed note's text (ending in its newline) and its signature lines (without newlines):
    the text ends at the note's last blank line."""
    text, separator, signatures = note.rpartition("\n\n")
    if not separator or not text or not signatures.endswith("\n"):
        raise CosignatureError("malformed note: text, a blank line, then signature lines")
    lines = signatures[:-1].split("\n")
    if len(lines) > MAX_LINES:
        raise CosignatureError("malformed note: too many signature lines")
    if any(not line.startswith(SIGNATURE_PREFIX) for line in lines):
        raise CosignatureError("malformed note: a signature line starts with an em dash and a space")
    return text + "\n", lines


def _checkpoint(body: str) -> Checkpoint:
    try:
        return Checkpoint.parse(body)
    except CosignatureError:
        raise
    except NoteError as error:
        raise CosignatureError(f"a cosignature/v1 is over a checkpoint: {error}") from None


def _parse_line(line: str) -> tuple[str, bytes]:
    name, _, encoded = line[len(SIGNATURE_PREFIX):].partition(" ")
    if not _valid_name(name) or not encoded:
        raise CosignatureError("malformed note: a signature line is a key name and base64")
    return name, _b64decode(encoded)


def cosign(note: str, key: WitnessKey, timestamp: int) -> str:
    """The cosignature line (no trailing newline) of `key` on the checkpoint `note` at `timestamp`
    (POSIX seconds). `note` is the signed checkpoint as the log serves it (its signatures are not
    checked here: a witness checks them first, see client/witness_rules.py) or its bare text."""
    body = split_note(note)[0] if "\n\n" in note else note
    _checkpoint(body)  # origin, size and root hash lines
    signature = key.private_key.sign(signed_message(body, timestamp))
    encoded = base64.b64encode(key.verifier.key_id + timestamp.to_bytes(8, "big") + signature).decode()
    return f"{SIGNATURE_PREFIX}{key.name} {encoded}"


def with_cosignatures(note: str, lines: Iterable[str]) -> str:
    """`note` with signature `lines` appended (those it already carries are not repeated)."""
    present = set(split_note(note)[1])
    added = [line for line in lines if line not in present]
    return note + "".join(f"{line}\n" for line in added)


def cosignature_timestamp(line: str) -> int:
    """The time a cosignature line states, unverified (e.g. to show it)."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise CosignatureError("a signature line starts with an em dash and a space")
    raw = _parse_line(line.rstrip("\n"))[1]
    if len(raw) != _SIGNATURE_BYTES:
        raise CosignatureError("not a cosignature/v1 line: 4 + 8 + 64 bytes expected")
    return int.from_bytes(raw[4:12], "big")


def verify_cosignature(
    note: str, verifiers: Sequence[WitnessVerifier | str], *, latest: int | None = None
) -> list[Cosignature]:
    """The cosignatures on `note` by the witnesses of `verifiers` (keys or verifier key texts), each
    verified over the note's checkpoint body: one per witness key (its latest, should a note carry two),
    in the note's order; [] when none of them cosigned it.

    As the signed-note rules ask: lines by other keys (the log's own signature, unknown witnesses,
    a known name with another key id) are skipped; a line by a known witness key that does not
    verify, or states a time after `latest` (POSIX seconds; None: no limit), makes the whole note
    refused with CosignatureError, as does a note that is not a checkpoint."""
    known: dict[tuple[str, bytes], WitnessVerifier] = {}
    for given in verifiers:
        parsed = WitnessVerifier.parse(given) if isinstance(given, str) else given
        known[(parsed.name, parsed.key_id)] = parsed
    body, lines = split_note(note)
    _checkpoint(body)
    found: dict[tuple[str, bytes], Cosignature] = {}
    for line in lines:
        name, raw = _parse_line(line)
        verifier = known.get((name, raw[:4]))
        if verifier is None:
            continue
        if len(raw) != _SIGNATURE_BYTES:
            raise CosignatureError(f"the cosignature of {name} is not 4 + 8 + 64 bytes")
        timestamp = int.from_bytes(raw[4:12], "big")
        if timestamp > MAX_TIMESTAMP:
            raise CosignatureError(f"the cosignature of {name} states a time beyond 2^63-1")
        if latest is not None and timestamp > latest:
            raise CosignatureError(f"the cosignature of {name} is dated {timestamp}, after {latest}")
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public_key).verify(raw[12:], signed_message(body, timestamp))
        except InvalidSignature:
            raise CosignatureError(f"the cosignature of {name} does not verify") from None
        earlier = found.get((name, raw[:4]))
        if earlier is None or timestamp > earlier.timestamp:  # one per witness key: its latest
            found[(name, raw[:4])] = Cosignature(name, raw[:4], timestamp, line)
    return list(found.values())
