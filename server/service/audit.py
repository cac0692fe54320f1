"""`ecert audit verify`: the transparency log recomputed from its stored entries.

Every integrated entry's leaf hash is recomputed from its bytes, the indices must run 0, 1, 2, ...
without a gap, the stored tree nodes that proofs are made from must be what the entries make, and the tree rebuilt from them must have, at the size of each stored checkpoint, the
root that checkpoint signs (each checkpoint's signature is checked with the log key). The latest
checkpoint must cover exactly the integrated entries. A checkpoint held outside the database (one a
witness cosigned, one a client kept) must be consistent with the recomputed tree: an insider who
rewrites an old entry and recomputes every node and checkpoint is caught by it. Finally, every stored
claim must be as its latest logged decision says (decision, grant, reversed or not), and every stored
transmission's receipt must make exactly its logged entry (an emptied log, or an edited claim or receipt,
is caught by them; edited balances then by `ecert audit reconcile`, which recomputes them from the claims).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from contract import merkle
from contract.log_entry import RECEIPT, LogEntry, claim_subject, receipt_entry
from contract.note import Checkpoint, NoteError, NoteVerifier, open_note
from server.adapters.database import Database
from server.adapters.orm import ClaimRow, TransmissionRow
from server.adapters.repositories import receipt_from_json
from server.domain.log_tree import CompactRange
from server.domain.quantity import format_quantity
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
        if first_broken is None:
            problems += _stored_tree(uow, tree.size)
        logged = _logged_state(uow)
        problems += _claims_against_log(uow, logged)
        problems += _receipts_against_log(uow, logged)
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
    return AuditVerification(size, latest, problems, first_broken, pending)


NODE_BATCH = 4096


def _stored_tree(uow: UnitOfWork, size: int) -> list[str]:
    """The stored nodes proofs are made from: level 0 holds the entries' leaf hashes, each node above is
    the hash of the two below it, and nothing else is stored (read a level at a time, in batches)."""
    expected_count = 0
    level = 0
    while size >> level:
        count = size >> level
        expected_count += count
        for start in range(0, count, NODE_BATCH):
            end = min(count, start + NODE_BATCH)
            stored = uow.log.node_range(level, start, end)
            if level == 0:
                below = uow.log.leaf_range(start, end)
                wanted = [(i, h) for i, h in below]
            else:
                children = dict(uow.log.node_range(level - 1, 2 * start, 2 * end))
                try:
                    wanted = [(i, merkle.node_hash(children[2 * i], children[2 * i + 1])) for i in range(start, end)]
                except KeyError:
                    return [f"the stored tree lacks nodes of level {level - 1} below index {2 * end}"]
            if stored != wanted:
                bad = next((i for (i, h), (j, w) in zip(stored, wanted) if (i, h) != (j, w)), start)
                return [f"the stored tree node ({level}, {bad}) is not what the entries make: proofs from it would not verify"]
        level += 1
    if uow.log.node_count() != expected_count:
        return [f"the stored tree holds {uow.log.node_count()} nodes, the entries make {expected_count}"]
    return []


@dataclass
class _Logged:
    """What the entries say about each claim revision and receipt (every entry, integrated or not)."""

    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # subject -> latest DECISION/ALLOCATION facts
    reversed: set[str] = field(default_factory=set)
    receipts: dict[str, bytes] = field(default_factory=dict)  # subject -> entry bytes


def _logged_state(uow: UnitOfWork) -> _Logged:
    logged = _Logged()
    for kind, subject, data in uow.log.claim_and_receipt_entries():
        if kind == RECEIPT:
            logged.receipts[subject] = data
        elif kind == "REVERSAL":
            logged.reversed.add(subject)
        else:
            try:
                logged.decisions[subject] = LogEntry.decode(data).facts
            except ValueError:
                continue  # a changed entry: reported by the tree's check
    return logged


def _claims_against_log(uow: UnitOfWork, logged: _Logged) -> list[str]:
    """Every stored claim revision as its latest logged decision says (decision, grant) and reversed
    exactly when a reversal is logged: a direct edit of a claim row shows here, one of a balance then
    in `ecert audit reconcile`."""
    missing = edited = 0
    examples: list[str] = []
    rows = uow.session.execute(select(
        ClaimRow.claim_id, ClaimRow.entry_number, ClaimRow.line_number, ClaimRow.revision, ClaimRow.decision,
        ClaimRow.granted_quantity, ClaimRow.unit, ClaimRow.reversed_at))
    for claim_id, entry, line, revision, decision, granted, unit, reversed_at in rows:
        subject = claim_subject(entry, line, revision)
        facts = logged.decisions.get(subject)
        if facts is None:
            missing += 1
            continue
        if (facts.get("claim_id"), facts.get("decision"), facts.get("granted")) != (claim_id, decision, f"{format_quantity(granted)} {unit}") \
                or (reversed_at is not None) != (subject in logged.reversed):
            edited += 1
            examples.append(subject)
    problems = []
    if missing:
        problems.append(f"{missing} stored claims have no entry in the log")
    if edited:
        problems.append(f"{edited} stored claims differ from what the log says of them (e.g. {', '.join(examples[:3])})")
    return problems


def _receipts_against_log(uow: UnitOfWork, logged: _Logged) -> list[str]:
    """Every stored transmission's receipt makes exactly the entry the log holds for it."""
    missing = edited = 0
    examples: list[str] = []
    for receipt_id, receipt_json, signature in uow.session.execute(
            select(TransmissionRow.receipt_id, TransmissionRow.receipt_json, TransmissionRow.receipt_signature)):
        data = logged.receipts.get(f"receipt:{receipt_id}")
        if data is None:
            missing += 1
            continue
        try:
            made = receipt_entry(receipt_from_json(receipt_json, bytes(signature))).encode()
        except (ValueError, KeyError, TypeError):
            made = b""
        if made != data:
            edited += 1
            examples.append(receipt_id)
    problems = []
    if missing:
        problems.append(f"{missing} stored transmissions have no receipt entry in the log")
    if edited:
        problems.append(f"{edited} stored receipts differ from their entries in the log (e.g. {', '.join(examples[:3])})")
    return problems
