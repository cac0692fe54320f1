"""`ecert audit verify`: the transparency log recomputed from its stored entries.

Every integrated entry's leaf hash is recomputed from its bytes, the indices must run 0, 1, 2, ...
without a gap, and the tree rebuilt from them must have, at the size of each stored checkpoint, the
root that checkpoint signs (each checkpoint's signature is checked with the log key). The latest
checkpoint must cover exactly the integrated entries. A checkpoint held outside the database (one a
witness cosigned, one a client kept) must be consistent with the recomputed tree: an insider who
rewrites an old entry and recomputes every node and checkpoint is caught by it. Finally, every stored
claim and accepted transmission must have its entry in the log (an emptied log is caught by them).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from server.adapters.database import Database
from server.adapters.orm import ClaimRow, TransmissionRow
from server.domain import merkle
from server.domain.log_entry import CLAIM_KINDS, RECEIPT, claim_subject
from server.domain.log_tree import CompactRange
from server.domain.note import Checkpoint, NoteError, NoteVerifier, open_note
from server.service.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class AuditVerification:
    records: int  # integrated entries read
    tree_size: int  # the latest stored checkpoint's size (0: none)
    problems: list[str] = field(default_factory=list)
    first_broken: int | None = None  # index of the first entry that does not verify, if one is to blame
    pending: int = 0  # entries recorded, not integrated yet

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_audit_log(database: Database, verifier: NoteVerifier | None, outside_checkpoint: str | None = None) -> AuditVerification:
    """`verifier`: the log's key; None when it is not at hand (then any checkpoint stored or given is a
    problem: it cannot be checked)."""
    problems: list[str] = []
    verifiers = [verifier] if verifier is not None else []
    first_broken: int | None = None
    outside: Checkpoint | None = None
    if outside_checkpoint is not None:
        try:
            outside = Checkpoint.parse(open_note(outside_checkpoint, verifiers).text)
        except NoteError as exc:
            problems.append(f"the checkpoint given is not signed by the log key: {exc}")
    with UnitOfWork(database, write=False, snapshot=True) as uow:
        checkpoints = uow.log.checkpoints()
        wanted = {c.tree_size for c in checkpoints} | ({outside.size} if outside else set())
        roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT}
        tree = CompactRange()
        for index, data, stored_leaf in uow.log.all_entries():
            if index != tree.size:
                problems.append(f"entry {tree.size} is missing (the next stored index is {index})")
                first_broken = tree.size if first_broken is None else first_broken
                break
            leaf = merkle.leaf_hash(data)
            if leaf != stored_leaf:
                problems.append(f"entry {index} does not hash to its stored leaf hash (its bytes were changed)")
                first_broken = index if first_broken is None else first_broken
            tree.append(leaf)
            if tree.size in wanted:
                roots[tree.size] = tree.root()
        pending = uow.log.pending_count()
        covered = uow.log.subjects((*CLAIM_KINDS, RECEIPT))
        claims = {claim_subject(e, n, r) for e, n, r in uow.session.execute(
            select(ClaimRow.entry_number, ClaimRow.line_number, ClaimRow.revision))}
        receipts = {f"receipt:{r}" for r in uow.session.scalars(select(TransmissionRow.receipt_id))}
    size = tree.size
    if checkpoints and not verifiers:
        problems.append("no log key to check the checkpoints with: give --log-key (the log's verifier key)")
    for stored in checkpoints if verifiers else []:
        try:
            signed = Checkpoint.parse(open_note(stored.note, verifiers).text)
        except NoteError as exc:
            problems.append(f"the checkpoint of size {stored.tree_size} does not verify with the log key: {exc}")
            continue
        if signed.size != stored.tree_size or signed.root_hash != stored.root_hash:
            problems.append(f"the checkpoint stored as size {stored.tree_size} signs another tree")
        elif signed.size > size:
            problems.append(f"the checkpoint of size {signed.size} covers entries that are gone: the log holds {size}")
        elif roots.get(signed.size) != signed.root_hash:
            problems.append(f"the entries do not make the root the checkpoint of size {signed.size} signs")
    latest = checkpoints[-1].tree_size if checkpoints else 0
    if size > latest:
        problems.append(f"{size - latest} entries carry an index no checkpoint covers")
    if outside is not None:
        if outside.size > size:
            problems.append(f"the checkpoint given has {outside.size} entries, the log {size}: the log was cut back")
        elif roots.get(outside.size) != outside.root_hash:
            problems.append(f"the log is not consistent with the checkpoint given (size {outside.size}): history was rewritten")
    unlogged_claims = len(claims - covered)
    if unlogged_claims:
        problems.append(f"{unlogged_claims} stored claims have no entry in the log")
    unlogged_receipts = len(receipts - covered)
    if unlogged_receipts:
        problems.append(f"{unlogged_receipts} stored transmissions have no receipt entry in the log")
    return AuditVerification(size, latest, problems, first_broken, pending)
