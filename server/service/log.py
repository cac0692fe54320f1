"""The transparency log: the sequencer that integrates recorded entries into the Merkle tree and signs
checkpoints, and the proofs anyone may ask for.

Writers only INSERT entries (server/adapters/claim_repository.py AuditRepository; receipts from server/service/transmissions.py).
The sequencer runs on every replica, at most one at a time across them (PostgreSQL: a transaction-scoped
advisory lock; SQLite: its single writer): it takes the entries without an index in id order, gives them
the next indices, stores the tree nodes they complete (server/domain/log_tree.py) and signs a C2SP
checkpoint of the new tree with the log key, all in one transaction.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.cosignature import CosignatureError, WitnessVerifier, verify_cosignature
from contract.log_entry import claim_subject
from contract.merkle import HASH_SIZE
from contract.note import Checkpoint, NoteError, NoteVerifier, open_note, raw_public_key, sign_note
from server.adapters.database import Database
from server.adapters.log_repository import StoredCheckpoint
from server.domain import log_tree
from server.domain.errors import DomainError, ErrorKind, Finding
from server.domain.records import ClaimRecord
from server.service.clock import Clock
from server.service.transactions import run_in_transaction
from server.service.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

# Entries integrated per transaction: on SQLite the sequencer holds the one writer meanwhile, so a
# batch stays short (tens of milliseconds) and claims waiting for the writer go between batches.
BATCH = 1000
MAX_ENTRIES_PAGE = 1000
# How far ahead of customs' clock a witness's cosignature may be dated (its clock may run ahead).
COSIGNATURE_CLOCK_SKEW_SECONDS = 300


def _invalid(reason: str, field: str, description: str) -> DomainError:
    return DomainError(reason, f"{field} {description}", ErrorKind.INVALID, [Finding(reason, field, description)])


class LogUseCases:
    def __init__(self, database: Database, *, key: Ed25519PrivateKey, origin: str, clock: Clock, witnesses: Sequence[WitnessVerifier] = ()):
        self.database = database
        self.key = key
        self.origin = origin
        self.clock = clock
        self.witnesses = list(witnesses)
        self.verifier = NoteVerifier(origin, raw_public_key(key.public_key()))

    @property
    def verifier_key(self) -> str:
        return self.verifier.text()

    # -- the sequencer ----------------------------------------------------------------------------

    def integrate(self) -> int:
        """Integrate what is pending and sign a checkpoint if the tree grew (or if none exists yet);
        the tree's size after, or -1 when another replica's sequencer holds the lock."""
        with UnitOfWork(self.database, write=False) as uow:  # most ticks find nothing: no writer taken then
            latest = uow.log.latest_checkpoint()
            if latest is not None and not uow.log.pending(1) and latest.tree_size == uow.log.size():
                return latest.tree_size
        while True:
            size, more = run_in_transaction(self.database, self._integrate_batch, unique_races=False)
            if not more:
                return size

    def _integrate_batch(self, uow: UnitOfWork) -> tuple[int, bool]:
        if not uow.log.try_sequencer_lock():
            return -1, False
        size = uow.log.size()
        pending = uow.log.pending(BATCH)
        latest = uow.log.latest_checkpoint()
        if latest is not None and latest.tree_size > size:
            # Entries a checkpoint covered are gone: never sign over that (`ecert audit verify` reports it).
            log.error("the log holds %d entries but its checkpoint of %d was signed: not integrating", size, latest.tree_size)
            return size, False
        if not pending and latest is not None and latest.tree_size == size:
            return size, False
        frontier = uow.log.nodes(log_tree.frontier(size))
        uow.log.assign([entry_id for entry_id, _ in pending], size)
        nodes, root = log_tree.append(size, frontier, [leaf for _, leaf in pending])
        uow.log.add_nodes(nodes)
        new_size = size + len(pending)
        note = sign_note(Checkpoint(self.origin, new_size, root).text(), self.origin, self.key)
        uow.log.add_checkpoint(new_size, root, note, self.clock.now())
        uow.commit()
        return new_size, len(pending) == BATCH

    def run(self, stop: threading.Event, interval: float) -> None:
        """The sequencer's loop, until `stop` is set."""
        while not stop.wait(interval):
            try:
                self.integrate()
            except Exception:
                if stop.is_set():
                    return  # the database is closing with the server
                log.exception("log integration failed; retrying at the next tick")

    # -- reading ----------------------------------------------------------------------------------

    def checkpoint(self, tree_size: int = 0) -> tuple[StoredCheckpoint, str]:
        """The checkpoint (latest, or of exactly this size) and its note with every stored cosignature."""
        if tree_size < 0:
            raise _invalid("TREE_SIZE_NEGATIVE", "tree_size", "must be 0 (the latest) or a tree size")
        with UnitOfWork(self.database, write=False) as uow:
            stored = self._checkpoint(uow, tree_size)
            lines = uow.log.cosignatures(stored.tree_size)
        note = stored.note + "".join(f"{line}\n" for _, line in lines)
        return stored, note

    def _checkpoint(self, uow: UnitOfWork, tree_size: int) -> StoredCheckpoint:
        stored = uow.log.latest_checkpoint() if tree_size == 0 else uow.log.checkpoint(tree_size)
        if stored is None:
            raise DomainError(
                "CHECKPOINT_NOT_FOUND",
                "no checkpoint yet" if tree_size == 0 else f"no checkpoint was signed for tree size {tree_size}",
                ErrorKind.NOT_FOUND, metadata={"tree_size": str(tree_size)},
            )
        return stored

    def inclusion_proof(self, *, leaf_index: int | None, leaf_hash: bytes | None, tree_size: int) -> tuple[int, StoredCheckpoint, list[bytes]]:
        """(leaf index, the checkpoint of the tree, the audit path)."""
        if leaf_index is None and leaf_hash is None:
            raise _invalid("LEAF_MISSING", "leaf", "give leaf_index or leaf_hash")
        if leaf_index is not None and leaf_index < 0:
            raise _invalid("LEAF_INDEX_NEGATIVE", "leaf_index", "must not be negative")
        if leaf_hash is not None and len(leaf_hash) != HASH_SIZE:
            raise _invalid("LEAF_HASH_MALFORMED", "leaf_hash", "must be 32 bytes (SHA-256)")
        if tree_size < 0:
            raise _invalid("TREE_SIZE_NEGATIVE", "tree_size", "must be 0 (the latest) or a tree size")
        with UnitOfWork(self.database, write=False) as uow:
            if leaf_hash is not None:
                try:
                    leaf_index = uow.log.index_of(leaf_hash)
                except KeyError:
                    raise DomainError("LEAF_NOT_FOUND", "no log entry has this leaf hash", ErrorKind.NOT_FOUND,
                                      metadata={"leaf_hash": leaf_hash.hex()}) from None
                if leaf_index is None:
                    raise DomainError("LEAF_NOT_INTEGRATED", "the entry is recorded but not in a checkpoint yet; ask again in a second",
                                      ErrorKind.PRECONDITION, metadata={"leaf_hash": leaf_hash.hex()})
            assert leaf_index is not None
            stored = self._checkpoint(uow, tree_size)
            if leaf_index >= stored.tree_size:
                raise DomainError(
                    "LEAF_NOT_IN_TREE", f"leaf {leaf_index} is not in the tree of size {stored.tree_size}",
                    ErrorKind.NOT_FOUND if leaf_hash is None and tree_size == 0 else ErrorKind.INVALID,
                    metadata={"leaf_index": str(leaf_index), "tree_size": str(stored.tree_size)},
                )
            ranges = log_tree.inclusion_ranges(leaf_index, stored.tree_size)
            proof = log_tree.hashes(ranges, uow.log.nodes(log_tree.nodes_for(ranges)))
        return leaf_index, stored, proof

    def consistency_proof(self, first_size: int, second_size: int) -> tuple[StoredCheckpoint, list[bytes]]:
        if first_size <= 0:
            raise _invalid("FIRST_SIZE_INVALID", "first_size", "must be a tree size of at least 1")
        if second_size < 0:
            raise _invalid("TREE_SIZE_NEGATIVE", "second_size", "must be 0 (the latest) or a tree size")
        if second_size and first_size > second_size:
            raise _invalid("SIZES_OUT_OF_ORDER", "first_size", "must not be larger than second_size")
        with UnitOfWork(self.database, write=False) as uow:
            stored = self._checkpoint(uow, second_size)
            if first_size > stored.tree_size:
                raise _invalid("SIZES_OUT_OF_ORDER", "first_size", f"must not be larger than the latest tree size {stored.tree_size}")
            ranges = log_tree.consistency_ranges(first_size, stored.tree_size)
            proof = log_tree.hashes(ranges, uow.log.nodes(log_tree.nodes_for(ranges)))
        return stored, proof

    def entries(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        if start < 0:
            raise _invalid("ENTRIES_START_NEGATIVE", "start", "must not be negative")
        if end <= start:
            raise _invalid("ENTRIES_RANGE_EMPTY", "end", "must be larger than start")
        with UnitOfWork(self.database, write=False) as uow:
            latest = uow.log.latest_checkpoint()
            size = latest.tree_size if latest else 0
            if start >= size:
                raise DomainError("ENTRIES_BEYOND_TREE", f"start {start} is not below the tree size {size}", ErrorKind.NOT_FOUND,
                                  metadata={"tree_size": str(size)})
            return uow.log.entries(start, min(end, size, start + MAX_ENTRIES_PAGE))

    def claim_leaf(self, record: ClaimRecord) -> bytes:
        """The leaf hash of the claim's latest DECISION, ALLOCATION or REVERSAL entry; empty if none
        (a check, which stores nothing), or when it cannot be read now: the claim is decided and stored
        whatever happens here, and its leaf hash can be read again (GetClaim)."""
        try:
            with UnitOfWork(self.database, write=False) as uow:
                return uow.log.latest_claim_leaf(claim_subject(record.entry_number, record.line_number, record.revision)) or b""
        except DomainError as error:
            log.warning("the claim's log entry could not be read for its answer: %s", error.reason)
            return b""

    # -- witnesses --------------------------------------------------------------------------------

    def add_cosignature(self, cosigned_note: str) -> tuple[int, int]:
        """Store the configured witnesses' lines of a cosigned checkpoint customs signed; (tree size,
        cosignatures now stored for it)."""
        if not cosigned_note:
            raise _invalid("FIELD_REQUIRED", "cosigned_note", "is required")
        try:
            opened = open_note(cosigned_note, [self.verifier])
            checkpoint = Checkpoint.parse(opened.text)
        except NoteError as exc:
            raise _invalid("CHECKPOINT_SIGNATURE_INVALID", "cosigned_note", f"is not a checkpoint signed by this log: {exc}") from None
        if checkpoint.origin != self.origin:
            raise _invalid("CHECKPOINT_ORIGIN_UNKNOWN", "cosigned_note", f"names origin {checkpoint.origin!r}, not {self.origin!r}")
        now = self.clock.now()
        try:
            # C2SP tlog-cosignature: a known witness's line that does not verify, or is dated ahead of
            # customs' clock (plus the skew a witness's clock may have), refuses the whole note.
            lines = {c.name: c.line for c in verify_cosignature(
                cosigned_note, self.witnesses, latest=int(now.timestamp()) + COSIGNATURE_CLOCK_SKEW_SECONDS)}
        except CosignatureError as exc:
            raise DomainError("COSIGNATURE_NOT_ACCEPTED", f"a witness cosignature does not verify: {exc}", ErrorKind.PERMISSION,
                              metadata={"tree_size": str(checkpoint.size)}) from None
        if not lines:
            raise DomainError("COSIGNATURE_NOT_ACCEPTED", "no cosignature by a configured witness key verifies", ErrorKind.PERMISSION,
                              metadata={"tree_size": str(checkpoint.size)})

        def work(uow: UnitOfWork) -> int:
            stored = uow.log.checkpoint(checkpoint.size)
            if stored is None or stored.root_hash != checkpoint.root_hash:
                raise DomainError("CHECKPOINT_NOT_FOUND", f"customs signed no such checkpoint of size {checkpoint.size}",
                                  ErrorKind.NOT_FOUND, metadata={"tree_size": str(checkpoint.size)})
            for name, line in sorted(lines.items()):
                uow.log.set_cosignature(checkpoint.size, name, line, now)
            count = len(uow.log.cosignatures(checkpoint.size))
            uow.commit()
            return count

        return checkpoint.size, run_in_transaction(self.database, work)

