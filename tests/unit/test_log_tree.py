"""The stored tree (server/domain/log_tree.py) against merkle.py's naive recomputation: the same
roots and proofs at every size up to a few hundred, each proof read from O(log n) stored nodes."""
from __future__ import annotations

import hashlib

import pytest

from contract import merkle
from contract.log_entry import LogEntry, entry, receipt_entry
from server.domain import log_tree

MAX = 300


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"entry {i}".encode()) for i in range(n)]


def positions(size: int, first: int = 0) -> list[int]:
    """Every position in small trees; in larger ones the edges, the middle and the powers of two."""
    last = size if first else size - 1
    if size <= 64:
        return list(range(first, last + 1))
    picks = {first, first + 1, size // 2, last - 1, last, *(1 << b for b in range(size.bit_length()))}
    return sorted(p for p in picks if first <= p <= last)


def grown(sizes_batches: list[int]) -> tuple[dict, list[bytes], list[bytes]]:
    """A tree grown in batches of the given sizes, as the sequencer grows it: stored nodes, leaves, roots."""
    nodes: dict = {}
    all_leaves: list[bytes] = []
    roots = []
    for batch in sizes_batches:
        new_leaves = leaves(len(all_leaves) + batch)[len(all_leaves):]
        frontier = {key: nodes[key] for key in log_tree.frontier(len(all_leaves))}
        new, root = log_tree.append(len(all_leaves), frontier, new_leaves)
        assert not set(new) & set(nodes)  # a node is written once, never rewritten
        nodes.update(new)
        all_leaves += new_leaves
        roots.append(root)
    return nodes, all_leaves, roots


def test_roots_and_proofs_match_the_naive_tree_at_every_size():
    nodes, all_leaves, roots = grown([1] * MAX)
    assert len(nodes) == 2 * MAX - bin(MAX).count("1")
    assert log_tree.range_hash(0, 0, nodes.__getitem__) == merkle.EMPTY_ROOT == merkle.root([])
    for size in range(1, MAX + 1):
        assert roots[size - 1] == merkle.root(all_leaves[:size]), size
        for index in positions(size):
            ranges = log_tree.inclusion_ranges(index, size)
            needed = log_tree.nodes_for(ranges)
            assert len(needed) <= 2 * size.bit_length()  # O(log n) nodes read
            proof = log_tree.hashes(ranges, {k: nodes[k] for k in needed})
            assert proof == merkle.inclusion_proof(index, all_leaves[:size]), (index, size)
        for old in positions(size, first=1):
            ranges = log_tree.consistency_ranges(old, size)
            needed = log_tree.nodes_for(ranges)
            assert len(needed) <= 2 * size.bit_length()
            proof = log_tree.hashes(ranges, {k: nodes[k] for k in needed})
            assert proof == merkle.consistency_proof(old, all_leaves[:size]), (old, size)
            assert merkle.verify_consistency(old, size, roots[old - 1], roots[size - 1], proof)


@pytest.mark.parametrize("batches", [[MAX], [7, 1, 64, 3, 100, 125], [2] * 150, [0, 5, 0, 31]])
def test_batches_of_any_size_store_the_same_tree(batches):
    nodes, all_leaves, roots = grown(batches)
    one_by_one, _, _ = grown([1] * len(all_leaves))
    assert nodes == one_by_one
    assert roots[-1] == merkle.root(all_leaves)


def test_a_compact_range_recomputes_every_root():
    compact = log_tree.CompactRange()
    assert compact.root() == merkle.EMPTY_ROOT
    all_leaves = leaves(MAX)
    for n, leaf in enumerate(all_leaves, 1):
        compact.append(leaf)
        assert compact.size == n and compact.root() == merkle.root(all_leaves[:n])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        log_tree.inclusion_ranges(3, 3)
    with pytest.raises(ValueError):
        log_tree.consistency_ranges(0, 3)
    with pytest.raises(ValueError):
        log_tree.consistency_ranges(4, 3)


def test_entries_are_canonical_bytes_with_a_tag():
    import datetime as dt

    made = entry(dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc), "DECISION", "entry:X/1#1", {"b": "2", "a": ["1"]})
    data = made.encode()
    assert data == b'ecert.v1.LogEntry\n{"at":"2026-11-30T12:00:00+00:00","facts":{"a":["1"],"b":"2"},"kind":"DECISION","subject":"entry:X/1#1"}'
    assert made.leaf_hash == hashlib.sha256(b"\x00" + data).digest()
    assert LogEntry.decode(data) == made
    for bad in (b"x" + data, data + b" ", data.replace(b'"a"', b'"z"').replace(b'"b"', b'"a"')):
        with pytest.raises(ValueError):
            LogEntry.decode(bad)


def test_a_receipts_entry_is_rebuilt_from_the_receipt_alone():
    from tests.unit.test_receipts import receipt as made_receipt

    receipt = made_receipt()
    first, again = receipt_entry(receipt), receipt_entry(receipt)
    assert first.encode() == again.encode() and first.kind == "RECEIPT"
    assert first.facts["receipt_signature_sha256"] == hashlib.sha256(receipt.signature).hexdigest()
