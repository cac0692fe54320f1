"""The transparency log's tables: entries, the tree's stored nodes, checkpoints, cosignatures."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, insert, select, text, tuple_, update

from contract.log_entry import CLAIM_KINDS, RECEIPT
from server.adapters.orm import ClaimRow, LogCheckpointRow, LogCosignatureRow, LogEntryRow, LogNodeRow, table_of
from server.adapters.prepared import PreparedRepository, Statements
from server.domain.log_tree import Node

# pg_try_advisory_xact_lock key of the sequencer: one replica integrates at a time.
SEQUENCER_LOCK_KEY = 0x65636572746C6F67  # "ecertlog"

_entries = table_of(LogEntryRow)
_nodes = table_of(LogNodeRow)
_checkpoints = table_of(LogCheckpointRow)
_cosignatures = table_of(LogCosignatureRow)

LOG_STATEMENTS = Statements(
    size=select(func.coalesce(func.max(_entries.c.log_index) + 1, 0)),
    pending=select(_entries.c.id, _entries.c.leaf_hash).where(_entries.c.log_index.is_(None)).order_by(_entries.c.id).limit(bindparam("limit")),
    assign=update(_entries).where(_entries.c.id == bindparam("entry_id"), _entries.c.log_index.is_(None)).values(log_index=bindparam("index")),
    add_node=(insert(_nodes), ("level", "idx", "hash")),
    latest_checkpoint=select(_checkpoints.c.tree_size, _checkpoints.c.root_hash, _checkpoints.c.note, _checkpoints.c.signed_at)
    .order_by(_checkpoints.c.tree_size.desc()).limit(1),
    checkpoint=select(_checkpoints.c.tree_size, _checkpoints.c.root_hash, _checkpoints.c.note, _checkpoints.c.signed_at)
    .where(_checkpoints.c.tree_size == bindparam("size")),
    add_checkpoint=(insert(_checkpoints), ("tree_size", "root_hash", "note", "signed_at")),
    by_leaf=select(_entries.c.log_index).where(_entries.c.leaf_hash == bindparam("leaf")).order_by(_entries.c.id).limit(1),
    latest_of_claim=select(_entries.c.leaf_hash).where(_entries.c.subject == bindparam("subject"), text("kind IN (" + ", ".join(f"'{k}'" for k in CLAIM_KINDS) + ")"))
    .order_by(_entries.c.id.desc()).limit(1),
    entries=select(_entries.c.log_index, _entries.c.entry, _entries.c.leaf_hash)
    .where(_entries.c.log_index >= bindparam("start"), _entries.c.log_index < bindparam("end")).order_by(_entries.c.log_index),
    cosignatures=select(_cosignatures.c.key_name, _cosignatures.c.line).where(_cosignatures.c.tree_size == bindparam("size")).order_by(_cosignatures.c.key_name),
)


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: bytes
    note: str  # signed by the log key only
    signed_at: dt.datetime


class LogRepository(PreparedRepository):
    statements = LOG_STATEMENTS

    # -- the sequencer ----------------------------------------------------------------------------

    def try_sequencer_lock(self) -> bool:
        """PostgreSQL: the transaction-scoped advisory lock only one sequencer holds; SQLite's single
        writer already makes the sequencer alone."""
        if self.connection.dialect.name != "postgresql":
            return True
        return bool(self.connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK_KEY}).scalar())

    def size(self) -> int:
        row = self._first("size")
        return int(row[0]) if row else 0

    def pending(self, limit: int) -> list[tuple[int, bytes]]:
        """Entries not yet integrated, by id: (id, leaf hash). Not "ids after the last one": on
        PostgreSQL a smaller id can commit after a larger one."""
        return [(int(i), bytes(h)) for i, h in self._all("pending", {"limit": limit})]

    def assign(self, ids: list[int], first_index: int) -> None:
        rows = [{"entry_id": entry_id, "index": first_index + n} for n, entry_id in enumerate(ids)]
        if self._execute_many("assign", rows) != len(rows):
            raise LookupError("an entry was integrated by another sequencer meanwhile")

    def add_nodes(self, nodes: dict[Node, bytes]) -> None:
        self._execute_many("add_node", [{"level": level, "idx": index, "hash": value} for (level, index), value in sorted(nodes.items())])

    def nodes(self, keys: Iterable[Node]) -> dict[Node, bytes]:
        wanted = sorted(set(keys))
        found: dict[Node, bytes] = {}
        for start in range(0, len(wanted), 200):
            chunk = wanted[start:start + 200]
            rows = self.connection.execute(
                select(_nodes.c.level, _nodes.c.idx, _nodes.c.hash).where(tuple_(_nodes.c.level, _nodes.c.idx).in_(chunk))
            )
            found.update({(int(level), int(index)): bytes(value) for level, index, value in rows})
        return found

    def add_checkpoint(self, size: int, root: bytes, note: str, at: dt.datetime) -> None:
        self._execute("add_checkpoint", {"tree_size": size, "root_hash": root, "note": note, "signed_at": at})

    # -- readers ----------------------------------------------------------------------------------

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        row = self._first("latest_checkpoint")
        return None if row is None else StoredCheckpoint(int(row[0]), bytes(row[1]), row[2], row[3])

    def checkpoint(self, size: int) -> StoredCheckpoint | None:
        row = self._first("checkpoint", {"size": size})
        return None if row is None else StoredCheckpoint(int(row[0]), bytes(row[1]), row[2], row[3])

    def checkpoints(self) -> list[StoredCheckpoint]:
        rows = self.connection.execute(select(_checkpoints).order_by(_checkpoints.c.tree_size))
        return [StoredCheckpoint(int(r.tree_size), bytes(r.root_hash), r.note, r.signed_at) for r in rows]

    def index_of(self, leaf: bytes) -> int | None:
        """The index of the first entry with this leaf hash; None if there is none or it is not integrated yet."""
        row = self._first("by_leaf", {"leaf": leaf})
        if row is None:
            raise KeyError(leaf)
        return None if row[0] is None else int(row[0])

    def latest_claim_leaf(self, subject: str) -> bytes | None:
        """The leaf hash of the latest DECISION, ALLOCATION or REVERSAL entry about this claim subject."""
        row = self._first("latest_of_claim", {"subject": subject})
        return None if row is None else bytes(row[0])

    def entries(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        return [(int(i), bytes(e), bytes(h)) for i, e, h in self._all("entries", {"start": start, "end": end})]

    def all_entries(self, batch: int = 1000) -> Iterator[tuple[int | None, bytes, bytes]]:
        """Every entry in the tree's order, then those not integrated: (index or None, bytes, stored leaf hash)."""
        after = -1
        while True:
            rows = self.connection.execute(
                select(_entries.c.log_index, _entries.c.entry, _entries.c.leaf_hash)
                .where(_entries.c.log_index > after).order_by(_entries.c.log_index).limit(batch)
            ).fetchall()
            if not rows:
                break
            for index, data, leaf in rows:
                yield int(index), bytes(data), bytes(leaf)
            after = int(rows[-1][0])

    def node_range(self, level: int, start: int, end: int) -> list[tuple[int, bytes]]:
        """Stored nodes (index, hash) of one level with start <= index < end, by index."""
        rows = self.connection.execute(
            select(_nodes.c.idx, _nodes.c.hash).where(_nodes.c.level == level, _nodes.c.idx >= start, _nodes.c.idx < end).order_by(_nodes.c.idx))
        return [(int(i), bytes(h)) for i, h in rows]

    def leaf_range(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """(index, stored leaf hash) of the integrated entries with start <= index < end, by index."""
        rows = self.connection.execute(
            select(_entries.c.log_index, _entries.c.leaf_hash)
            .where(_entries.c.log_index >= start, _entries.c.log_index < end).order_by(_entries.c.log_index))
        return [(int(i), bytes(h)) for i, h in rows]

    def node_count(self) -> int:
        return int(self.connection.execute(select(func.count()).select_from(_nodes)).scalar_one())

    def pending_count(self) -> int:
        return int(self.connection.execute(select(func.count()).select_from(_entries).where(_entries.c.log_index.is_(None))).scalar_one())

    def claim_and_receipt_entries(self, batch: int = 5000) -> Iterator[tuple[str, str, bytes]]:
        """(kind, subject, bytes) of every claim and receipt entry, integrated or not, in the order recorded."""
        after = 0
        while True:
            rows = self.connection.execute(
                select(_entries.c.id, _entries.c.kind, _entries.c.subject, _entries.c.entry)
                .where(_entries.c.id > after, _entries.c.kind.in_((*CLAIM_KINDS, RECEIPT))).order_by(_entries.c.id).limit(batch)
            ).fetchall()
            if not rows:
                return
            for _, kind, subject, data in rows:
                yield kind, subject, bytes(data)
            after = int(rows[-1][0])

    def claim_entries_after(self, after: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """(index, bytes, leaf hash) of the integrated claim entries (CLAIM_KINDS) with index > after, by index."""
        rows = self.connection.execute(
            select(_entries.c.log_index, _entries.c.entry, _entries.c.leaf_hash)
            .where(_entries.c.log_index > after, _entries.c.kind.in_(CLAIM_KINDS)).order_by(_entries.c.log_index).limit(limit))
        return [(int(i), bytes(e), bytes(h)) for i, e, h in rows]

    def claim_certificates(self, claim_ids: Iterable[str]) -> dict[str, tuple[str, str, int, str]]:
        """claim id -> (issuing country, certificate number, version, unit) of these claims."""
        wanted = sorted(set(claim_ids))
        found: dict[str, tuple[str, str, int, str]] = {}
        for start in range(0, len(wanted), 200):
            rows = self.connection.execute(
                select(ClaimRow.claim_id, ClaimRow.issuing_country, ClaimRow.certificate_number, ClaimRow.certificate_version, ClaimRow.unit)
                .where(ClaimRow.claim_id.in_(wanted[start:start + 200])))
            found.update({claim_id: (country, number, int(version), unit) for claim_id, country, number, version, unit in rows})
        return found

    def cosignatures(self, size: int) -> list[tuple[str, str]]:
        return [(name, line) for name, line in self._all("cosignatures", {"size": size})]

    def set_cosignature(self, size: int, key_name: str, line: str, at: dt.datetime) -> None:
        """The witness's latest line for this checkpoint replaces an earlier one."""
        self.connection.execute(delete(_cosignatures).where(_cosignatures.c.tree_size == size, _cosignatures.c.key_name == key_name))
        self.connection.execute(insert(_cosignatures).values(tree_size=size, key_name=key_name, line=line, added_at=at))
