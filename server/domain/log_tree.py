"""The Merkle tree of merkle.py kept as stored nodes, so that a proof reads O(log n) of them.

A node (level, index) is the hash of the perfect subtree over leaves [index * 2^level, (index + 1) *
2^level): level 0 holds the leaf hashes. Only complete subtrees are stored; a subtree on the tree's
right edge, not yet complete, is computed from the perfect ones that tile it (at most one per level).
Every proof of RFC 6962 is a list of subtree hashes MTH(D[a:b]); here they are first named as ranges
(a, b), then the nodes they need are fetched at once, then hashed. Pure: the caller stores and
fetches nodes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from contract.merkle import EMPTY_ROOT, node_hash

Node = tuple[int, int]  # (level, index)
Range = tuple[int, int]  # leaves [start, end)


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The perfect subtrees that tile [start, end), left to right (start aligned as RFC 6962's
    recursion leaves it: a multiple of the largest power of two not above end - start)."""
    nodes = []
    while start < end:
        size = end - start
        level = size.bit_length() - 1
        while start % (1 << level):
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def range_hash(start: int, end: int, node: Callable[[Node], bytes]) -> bytes:
    """MTH(D[start:end]) from the stored perfect subtrees."""
    if start == end:
        return EMPTY_ROOT
    size = end - start
    if size & (size - 1) == 0 and start % size == 0:
        level = size.bit_length() - 1
        return node((level, start >> level))
    k = _split(size)
    return node_hash(range_hash(start, start + k, node), range_hash(start + k, end, node))


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes make PATH(index, D[size]), in proof order."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    ranges: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The ranges whose hashes make PROOF(old_size, D[new_size]), in proof order."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size}")
    ranges: list[Range] = []
    start, end, m, whole = 0, new_size, old_size, True
    while True:
        if m == end - start:
            if not whole:
                ranges.append((start, end))
            break
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, whole = start + k, m - k, False
    ranges.reverse()
    return ranges


def nodes_for(ranges: Iterable[Range]) -> set[Node]:
    return {n for start, end in ranges for n in range_nodes(start, end)}


def hashes(ranges: Sequence[Range], nodes: Mapping[Node, bytes]) -> list[bytes]:
    return [range_hash(start, end, nodes.__getitem__) for start, end in ranges]


def frontier(size: int) -> list[Node]:
    """The perfect subtrees that tile the whole tree of `size` leaves: all a new leaf can join."""
    return range_nodes(0, size)


def append(size: int, frontier_nodes: Mapping[Node, bytes], leaves: Sequence[bytes]) -> tuple[dict[Node, bytes], bytes]:
    """Leaves (already hashed) added to a tree of `size` whose frontier nodes are given: the nodes to
    store (each leaf, and every subtree they complete) and the new tree's root."""
    known = dict(frontier_nodes)
    new: dict[Node, bytes] = {}
    for offset, leaf in enumerate(leaves):
        index, level, value = size + offset, 0, leaf
        new[(0, index)] = known[(0, index)] = value
        while index & 1:  # a right child: its parent is complete
            value = node_hash(known[(level, index - 1)], value)
            level, index = level + 1, index >> 1
            new[(level, index)] = known[(level, index)] = value
    total = size + len(leaves)
    return new, range_hash(0, total, known.__getitem__)


class CompactRange:
    """The root of a growing list of leaf hashes in O(log n) memory: for recomputing a whole log."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (level, hash), levels strictly decreasing

    def append(self, leaf: bytes) -> None:
        level, value = 0, leaf
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            value = node_hash(left, value)
            level += 1
        self._stack.append((level, value))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        value = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value
