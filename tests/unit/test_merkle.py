"""The Merkle tree of the transparency log against the RFC 6962 reference vectors (the leaves, roots,
inclusion and consistency proofs published with the Certificate Transparency reference code and
transparency-dev/merkle), and every verifier against corrupted proofs that must fail."""
from __future__ import annotations

import pytest

from contract import merkle

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (  # by tree size 1..8
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
H = {  # node hashes of the reference tree, by the names the vectors use
    "l1": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", "l4": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "l6": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f", "n01": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "n23": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "n45": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "n67": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0", "n0123": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "n4567": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4", "l0": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
}
INCLUSION = [  # (leaf index, tree size, proof)
    (0, 8, ["l1", "n23", "n4567"]), (5, 8, ["l4", "n67", "n0123"]), (2, 3, ["n01"]), (1, 5, ["l0", "n23", "l4"]),
]
CONSISTENCY = [  # (old size, new size, proof)
    (1, 8, ["l1", "n23", "n4567"]), (6, 8, ["n45", "n67", "n0123"]), (2, 5, ["n23", "l4"]), (6, 7, ["n45", "l6", "n0123"]),
]
hashed = [merkle.leaf_hash(entry) for entry in LEAVES]


def proof(names: list[str]) -> list[bytes]:
    return [bytes.fromhex(H[n]) for n in names]


def test_roots_of_every_prefix_are_the_published_ones():
    assert merkle.root([]) == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert [merkle.root(hashed[:n]) for n in range(1, 9)] == ROOTS


@pytest.mark.parametrize(("index", "size", "names"), INCLUSION)
def test_inclusion_proofs_are_the_published_ones_and_verify(index: int, size: int, names: list[str]):
    assert merkle.inclusion_proof(index, hashed[:size]) == proof(names)
    assert merkle.verify_inclusion(index, size, hashed[index], proof(names), ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "names"), CONSISTENCY)
def test_consistency_proofs_are_the_published_ones_and_verify(old: int, new: int, names: list[str]):
    assert merkle.consistency_proof(old, hashed[:new]) == proof(names)
    assert merkle.verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof(names))


def test_every_proof_of_every_tree_up_to_twenty_leaves_verifies():
    leaves = [merkle.leaf_hash(bytes([n])) for n in range(20)]
    for size in range(1, 21):
        top = merkle.root(leaves[:size])
        for index in range(size):
            assert merkle.verify_inclusion(index, size, leaves[index], merkle.inclusion_proof(index, leaves[:size]), top)
        for old in range(1, size + 1):
            assert merkle.verify_consistency(old, size, merkle.root(leaves[:old]), top, merkle.consistency_proof(old, leaves[:size]))


@pytest.mark.parametrize(("index", "size", "names"), INCLUSION)
def test_a_corrupted_inclusion_proof_never_verifies(index: int, size: int, names: list[str]):
    good, top, leaf = proof(names), ROOTS[size - 1], hashed[index]
    wrong = [
        (index + 1, size, leaf, good, top), (index ^ 2, size, leaf, good, top), (index, size * 2, leaf, good, top),
        (index, size // 2, leaf, good, top), (index, size, merkle.leaf_hash(b"other"), good, top), (index, size, leaf, good, merkle.EMPTY_ROOT),
        (index, size, leaf, good + [top], top), (index, size, leaf, [top] + good, top), (index, size, leaf, good[:-1], top),
        (index, size, leaf, good + [b""], top),
    ]
    for n in range(len(good)):
        flipped = list(good)
        flipped[n] = bytes([flipped[n][0] ^ 8]) + flipped[n][1:]
        wrong.append((index, size, leaf, flipped, top))
    assert not any(merkle.verify_inclusion(*case) for case in wrong)


@pytest.mark.parametrize(("old", "new", "names"), CONSISTENCY)
def test_a_corrupted_consistency_proof_never_verifies(old: int, new: int, names: list[str]):
    good, r1, r2 = proof(names), ROOTS[old - 1], ROOTS[new - 1]
    wrong = [
        (old - 1, new, r1, r2, good), (old + 1, new, r1, r2, good), (old, new * 2, r1, r2, good), (old, new, r2, r1, good),
        (old, new, merkle.EMPTY_ROOT, r2, good), (old, new, r1, merkle.EMPTY_ROOT, good), (old, new, r1, r2, []),
        (old, new, r1, r2, good + [r1]), (old, new, r1, r2, [r2] + good), (old, new, r1, r2, good[:-1]), (new, old, r2, r1, good),
    ]
    for n in range(len(good)):
        flipped = list(good)
        flipped[n] = bytes([flipped[n][0] ^ 16]) + flipped[n][1:]
        wrong.append((old, new, r1, r2, flipped))
    assert not any(merkle.verify_consistency(*case) for case in wrong)
