"""The transparency log (ecert.v1.LogService): checkpoints and proofs for every role, cosignatures for
witnesses. Checking a proof needs nothing from here: contract/merkle.py and note.py (or any RFC 6962
and C2SP signed-note implementation) do it offline."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from client.sdk.services import _Connection
from ecert.v1 import log_pb2 as lpb


@dataclass
class LogCheckpoint:
    note: str  # the signed note, customs' signature first, then each stored witness cosignature
    tree_size: int
    root_hash: bytes
    signed_at: dt.datetime
    log_verifier_key: str  # as the service states it; compare with the key customs publishes


@dataclass
class InclusionProof:
    leaf_index: int
    tree_size: int
    hashes: list[bytes]
    checkpoint_note: str


@dataclass
class ConsistencyProof:
    first_size: int
    second_size: int
    hashes: list[bytes]
    checkpoint_note: str


@dataclass
class LoggedEntry:
    index: int
    entry: bytes
    leaf_hash: bytes


class LogReads(_Connection):
    def log_checkpoint(self, tree_size: int = 0, *, timeout: float | None = None) -> LogCheckpoint:
        """The latest checkpoint, or the one signed for exactly `tree_size`."""
        m = self.call(self.stubs.log.GetCheckpoint, lpb.GetCheckpointRequest(tree_size=tree_size), timeout=timeout)
        return LogCheckpoint(m.note, m.tree_size, m.root_hash, m.signed_at.ToDatetime(dt.timezone.utc), m.log_verifier_key)

    def inclusion_proof(
        self, *, leaf_hash: bytes | None = None, leaf_index: int | None = None, tree_size: int = 0, timeout: float | None = None
    ) -> InclusionProof:
        """The audit path of one entry, by leaf hash (as receipts and claim answers carry it) or by index."""
        request = lpb.GetInclusionProofRequest(tree_size=tree_size)
        if leaf_hash is not None:
            request.leaf_hash = leaf_hash
        elif leaf_index is not None:
            request.leaf_index = leaf_index
        m = self.call(self.stubs.log.GetInclusionProof, request, timeout=timeout)
        return InclusionProof(m.leaf_index, m.tree_size, list(m.hashes), m.checkpoint_note)

    def consistency_proof(self, first_size: int, second_size: int = 0, *, timeout: float | None = None) -> ConsistencyProof:
        m = self.call(self.stubs.log.GetConsistencyProof, lpb.GetConsistencyProofRequest(first_size=first_size, second_size=second_size),
                      timeout=timeout)
        return ConsistencyProof(m.first_size, m.second_size, list(m.hashes), m.checkpoint_note)

    def log_entries(self, start: int, end: int, *, timeout: float | None = None) -> list[LoggedEntry]:
        """Entries [start, end) in index order; the service may return fewer (a page)."""
        m = self.call(self.stubs.log.GetEntries, lpb.GetEntriesRequest(start=start, end=end), timeout=timeout)
        return [LoggedEntry(e.index, e.entry, e.leaf_hash) for e in m.entries]


class Cosigning(_Connection):
    def add_cosignature(self, cosigned_note: str, *, timeout: float | None = None) -> tuple[int, int]:
        """Hand in a cosigned checkpoint (witness role); (tree size, cosignatures stored for it)."""
        m = self.call(self.stubs.log.AddCosignature, lpb.AddCosignatureRequest(cosigned_note=cosigned_note), timeout=timeout)
        return m.tree_size, m.cosignatures
