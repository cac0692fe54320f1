"""A transparency log in memory for witness tests: entries, checkpoints signed with a log key, and
the proofs an honest log serves; tests then make it lie (fork, rollback, a bad proof)."""
from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract import merkle
from contract.note import Checkpoint, NoteVerifier, raw_public_key, sign_note

ORIGIN = "customs.example/ecert-log"


@dataclass
class FakeLog:
    origin: str = ORIGIN
    key: Ed25519PrivateKey = field(default_factory=lambda: Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
    leaves: list[bytes] = field(default_factory=list)
    size: int | None = None  # the size served as latest (None: every entry)
    cosigned: dict[int, list[str]] = field(default_factory=dict)  # size -> notes handed in
    proof_override: list[bytes] | None = None
    proof_leaves: list[bytes] | None = None  # another history, shown with consistency proofs only

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.origin, raw_public_key(self.key.public_key()))

    def append(self, *entries: bytes) -> None:
        self.leaves += [merkle.leaf_hash(e) for e in entries]

    def grow(self, count: int) -> None:
        start = len(self.leaves)
        self.append(*(f"entry {i}".encode() for i in range(start, start + count)))

    def note(self, size: int | None = None, leaves: list[bytes] | None = None, key: Ed25519PrivateKey | None = None) -> str:
        leaves = self.leaves if leaves is None else leaves
        size = len(leaves) if size is None else size
        text = Checkpoint(self.origin, size, merkle.root(leaves[:size])).text()
        return sign_note(text, self.origin, key or self.key)

    # LogClient (client/witness.py)
    def checkpoint(self) -> str:
        return self.note(self.size)

    def consistency_proof(self, first_size: int, second_size: int) -> tuple[list[bytes], str]:
        if self.proof_override is not None:
            return self.proof_override, self.note(second_size)
        leaves = self.leaves if self.proof_leaves is None else self.proof_leaves
        return merkle.consistency_proof(first_size, leaves[:second_size]), self.note(second_size, leaves)

    def add_cosignature(self, cosigned_note: str) -> int:
        size = Checkpoint.parse(cosigned_note.split("\n\n")[0] + "\n").size
        self.cosigned.setdefault(size, []).append(cosigned_note)
        return len(self.cosigned[size])
