"""tlog.merkle on published RFC 6962/9162 vectors (transparency-dev/merkle, see vectors/tlog), then
properties of every proof of every tree of 1..300 random leaves.

One seeded list of 300 leaves: the tree of size n is its first n leaves, so "every index of every
size" and "every (m, n) with m <= n <= 300" is every proof of every tree up to 300 leaves.

Mutations: flipping one bit of a proof hash, a root or the leaf hash always fails, and so does
flipping a bit of the leaf index. Flipping a bit of a *size* fails unless the mutated size gives the
proof exactly the same shape (the same siblings on the same sides), in which case RFC 9162
verification does the very same hashing and must pass: a bare proof does not bind the tree size,
the signed checkpoint does (test_tlog_checkpoint shows every bit flip of it is refused). The shape
comes from the RFC's PATH / SUBPROOF recursions written out over leaf ranges below.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from tests.unit.vectors.tlog.load import hexes, vectors
from tlog.errors import (
    ConsistencyProofInvalid,
    InclusionProofInvalid,
    IndexOutOfRange,
    MalformedHash,
    SizeBeyondTree,
    SizesReversed,
    TlogError,
)
from tlog.merkle import (
    EMPTY_ROOT,
    MAX_TREE_SIZE,
    MerkleTree,
    VerifiedConsistency,
    VerifiedInclusion,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_at,
    verify_consistency,
    verify_inclusion,
)

RFC = vectors("merkle-rfc6962.json")
SHAPES = vectors("merkle-proof-shapes.json")

MAX_LEAVES = 300
RNG = random.Random(0x7106)
LEAVES = [leaf_hash(RNG.randbytes(RNG.randrange(0, 48))) for _ in range(MAX_LEAVES)]
TREE = MerkleTree(LEAVES)


def flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- RFC 9162 reference recursions over leaf ranges (the test's own oracle) ----------------------


def _k(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def ref_mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) straight from RFC 9162 §2.1.1."""
    if hi - lo == 1:
        return leaves[lo]
    k = _k(hi - lo)
    return node_hash(ref_mth(leaves, lo, lo + k), ref_mth(leaves, lo + k, hi))


def path_ranges(m: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The leaf range of each hash of PATH(m, D[lo:hi]) (RFC 9162 §2.1.3.1)."""
    n = hi - lo
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*path_ranges(m, lo, lo + k), (lo + k, hi)]
    return [*path_ranges(m - k, lo + k, hi), (lo, lo + k)]


def subproof_ranges(m: int, lo: int, hi: int, whole: bool) -> list[tuple[int, int]]:
    """The leaf range of each hash of SUBPROOF(m, D[lo:hi], b) (RFC 9162 §2.1.4.1)."""
    n = hi - lo
    if m == n:
        return [] if whole else [(lo, hi)]
    k = _k(n)
    if m <= k:
        return [*subproof_ranges(m, lo, lo + k, whole), (lo + k, hi)]
    return [*subproof_ranges(m - k, lo + k, hi, False), (lo, lo + k)]


def inclusion_shape(index: int, size: int) -> tuple[bool, ...]:
    """For each proof hash: is it a left sibling? Verification hashes exactly along this."""
    return tuple(hi <= index for _, hi in path_ranges(index, 0, size))


def consistency_shape(size1: int, size2: int) -> tuple[bool, tuple[bool, ...]]:
    """Is the old root the seed (size1 a power of two), and which hashes lie inside the old tree."""
    ranges = subproof_ranges(size1, 0, size2, True)
    return size1 & (size1 - 1) == 0, tuple(hi <= size1 for _, hi in ranges)


# --- Published vectors ---------------------------------------------------------------------------


def test_empty_root_is_sha256_of_nothing() -> None:
    assert bytes.fromhex(RFC["empty_root"]) == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT


def test_leaf_hash_vectors() -> None:
    for case in RFC["leaf_hashes"]:
        assert leaf_hash(bytes.fromhex(case["entry"])).hex() == case["hash"]


def vector_tree() -> MerkleTree:
    return MerkleTree(leaf_hash(leaf) for leaf in hexes(RFC["leaves"]))


def test_roots_of_sizes_1_to_8() -> None:
    tree = vector_tree()
    assert [tree.root(n).hex() for n in range(1, 9)] == RFC["roots"]


def test_inclusion_vectors_are_generated_and_verify() -> None:
    tree = vector_tree()
    leaves = hexes(RFC["leaves"])
    for case in RFC["inclusion"]:
        index, size, proof = case["index"], case["size"], hexes(case["proof"])
        assert list(tree.inclusion_proof(index, size)) == proof
        root = bytes.fromhex(RFC["roots"][size - 1])
        verified = verify_inclusion(leaf_hash(leaves[index]), index, size, proof, root)
        assert verified == VerifiedInclusion(leaf_hash(leaves[index]), index, size, root)


def test_consistency_vectors_are_generated_and_verify() -> None:
    tree = vector_tree()
    for case in RFC["consistency"]:
        size1, size2, proof = case["size1"], case["size2"], hexes(case["proof"])
        assert list(tree.consistency_proof(size1, size2)) == proof
        root1, root2 = (bytes.fromhex(RFC["roots"][s - 1]) for s in (size1, size2))
        assert verify_consistency(size1, size2, proof, root1, root2) == VerifiedConsistency(
            size1, size2, root1, root2
        )


def test_transparency_dev_inclusion_probes_fail() -> None:
    """The corruptions transparency-dev's verify_test.go applies to each vector."""
    leaves = hexes(RFC["leaves"])
    some_hash = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    for case in RFC["inclusion"][1:]:
        i, n, proof = case["index"], case["size"], hexes(case["proof"])
        root, leaf = bytes.fromhex(RFC["roots"][n - 1]), leaf_hash(leaves[i])
        probes: list[tuple[int, int, bytes, list[bytes], bytes]] = [
            (i - 1, n, leaf, proof, root),
            (i + 1, n, leaf, proof, root),
            (i ^ 2, n, leaf, proof, root),
            (i, n * 2, leaf, proof, root),
            (i, n // 2, leaf, proof, root),
            (i, n, leaf_hash(b"WrongLeaf"), proof, root),
            (i, n, leaf, proof, EMPTY_ROOT),
            (i, n, leaf, proof, some_hash),
            (i, n, leaf, [*proof, root], root),
            (i, n, leaf, [root, *proof], root),
            (i, n, leaf, proof[:-1], root),
            (i, n, leaf, [proof[0], some_hash, *proof[1:]], root),
        ]
        probes += [
            (i, n, leaf, [*proof[:k], flip(proof[k], 3), *proof[k + 1 :]], root) for k in range(len(proof))
        ]
        for index, size, leaf_h, path, r in probes:
            with pytest.raises(InclusionProofInvalid):
                verify_inclusion(leaf_h, index, size, path, r)


def test_transparency_dev_consistency_probes_fail() -> None:
    some_hash = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    for case in RFC["consistency"][1:]:
        m, n, proof = case["size1"], case["size2"], hexes(case["proof"])
        r1, r2 = (bytes.fromhex(RFC["roots"][s - 1]) for s in (m, n))
        probes: list[tuple[int, int, list[bytes], bytes, bytes]] = [
            (m - 1, n, proof, r1, r2),
            (m + 1, n, proof, r1, r2),
            (m ^ 2, n, proof, r1, r2),
            (m, n * 2, proof, r1, r2),
            (m, n // 2, proof, r1, r2),
            (m, n, proof, some_hash, r2),
            (m, n, proof, r1, some_hash),
            (m, n, proof, r2, r1),
            (m, n, [], r1, r2),
            (m, n, [*proof, r1], r1, r2),
            (m, n, [*proof, r2], r1, r2),
            (m, n, [r1, *proof], r1, r2),
            (m, n, [r2, *proof], r1, r2),
            (m, n, [proof[0], *proof], r1, r2),
            (m, n, proof[:-1], r1, r2),
        ]
        probes += [
            (m, n, [*proof[:k], flip(proof[k], 4), *proof[k + 1 :]], r1, r2) for k in range(len(proof))
        ]
        for size1, size2, path, root1, root2 in probes:
            with pytest.raises(ConsistencyProofInvalid):
                verify_consistency(size1, size2, path, root1, root2)


def test_proof_shapes_of_transparency_dev() -> None:
    """Which subtree each generated proof hash is the root of, sizes up to 95."""
    for case in SHAPES["inclusion"]:
        expected = [ref_mth(LEAVES, lo, hi) for lo, hi in case["ranges"]]
        assert list(TREE.inclusion_proof(case["index"], case["size"])) == expected, case
    for case in SHAPES["consistency"]:
        expected = [ref_mth(LEAVES, lo, hi) for lo, hi in case["ranges"]]
        assert list(TREE.consistency_proof(case["size1"], case["size2"])) == expected, case


def test_proof_requests_those_tests_refuse() -> None:
    small = MerkleTree(LEAVES[:9])
    for case in SHAPES["inclusion_errors"]:
        with pytest.raises(IndexOutOfRange):
            small.inclusion_proof(case["index"], case["size"])
    for case in SHAPES["consistency_errors"]:
        with pytest.raises(SizesReversed):
            small.consistency_proof(case["size1"], case["size2"])


# --- Bad requests and malformed hashes -----------------------------------------------------------


def test_sizes_beyond_the_tree_are_refused() -> None:
    small = MerkleTree(LEAVES[:5])
    with pytest.raises(SizeBeyondTree):
        small.root(6)
    with pytest.raises(SizeBeyondTree):
        small.inclusion_proof(0, 6)
    with pytest.raises(SizeBeyondTree):
        small.consistency_proof(2, 6)
    with pytest.raises(SizeBeyondTree):
        small.consistency_proof(-1, 5)
    with pytest.raises(SizeBeyondTree):
        root_at(small, -1)
    with pytest.raises(IndexOutOfRange):
        small.inclusion_proof(-1, 5)
    with pytest.raises(SizeBeyondTree):
        small.subtree(3, 0)


def test_hashes_must_be_32_bytes() -> None:
    good = LEAVES[0]
    with pytest.raises(MalformedHash):
        node_hash(good[:31], good)
    with pytest.raises(MalformedHash):
        MerkleTree().append(good + b"\x00")
    proof = TREE.inclusion_proof(3, 8)
    with pytest.raises(MalformedHash):
        verify_inclusion(good[:31], 3, 8, proof, TREE.root(8))
    with pytest.raises(MalformedHash):
        verify_inclusion(LEAVES[3], 3, 8, proof, TREE.root(8) + b"\x00")
    with pytest.raises(MalformedHash):
        verify_inclusion(LEAVES[3], 3, 8, [*proof[:2], b""], TREE.root(8))
    with pytest.raises(MalformedHash):
        verify_consistency(3, 8, TREE.consistency_proof(3, 8), TREE.root(3)[:16], TREE.root(8))


def test_out_of_range_sizes_fail_verification() -> None:
    root = TREE.root(1)
    for index, size in [(0, 0), (1, 1), (-1, 1), (0, MAX_TREE_SIZE + 1), (0, -1)]:
        with pytest.raises(InclusionProofInvalid):
            verify_inclusion(LEAVES[0], index, size, [], root)
    with pytest.raises(ConsistencyProofInvalid):
        verify_consistency(5, 4, [], TREE.root(5), TREE.root(4))
    with pytest.raises(ConsistencyProofInvalid):
        verify_consistency(-1, 4, [], TREE.root(4), TREE.root(4))


def test_trivial_consistency_cases() -> None:
    for n in (0, 1, 5, 300):
        assert verify_consistency(0, n, [], EMPTY_ROOT, TREE.root(n)).size2 == n
        assert verify_consistency(n, n, [], TREE.root(n), TREE.root(n)).size1 == n
    with pytest.raises(ConsistencyProofInvalid, match="empty tree"):
        verify_consistency(0, 5, [], TREE.root(1), TREE.root(5))
    with pytest.raises(ConsistencyProofInvalid, match="different roots"):
        verify_consistency(5, 5, [], TREE.root(5), TREE.root(6))
    with pytest.raises(ConsistencyProofInvalid, match="must be empty"):
        verify_consistency(5, 5, [TREE.root(5)], TREE.root(5), TREE.root(5))
    with pytest.raises(ConsistencyProofInvalid, match="must be empty"):
        verify_consistency(0, 5, [TREE.root(5)], EMPTY_ROOT, TREE.root(5))


# --- Properties on every tree of 1..300 leaves --------------------------------------------------


def test_every_root_matches_the_rfc_definition() -> None:
    for n in range(1, MAX_LEAVES + 1):
        assert TREE.root(n) == ref_mth(LEAVES, 0, n)
        assert MerkleTree(LEAVES[:n]).root() == TREE.root(n)


def test_every_inclusion_proof_verifies() -> None:
    for n in range(1, MAX_LEAVES + 1):
        root = TREE.root(n)
        for i in range(n):
            proof = inclusion_proof(TREE, i, n)
            assert len(proof) == len(path_ranges(i, 0, n))
            assert verify_inclusion(LEAVES[i], i, n, proof, root).index == i


def test_every_consistency_proof_verifies() -> None:
    roots = [EMPTY_ROOT] + [TREE.root(n) for n in range(1, MAX_LEAVES + 1)]
    for n in range(1, MAX_LEAVES + 1):
        for m in range(n + 1):
            proof = consistency_proof(TREE, m, n)
            expected = len(subproof_ranges(m, 0, n, True)) if 0 < m < n else 0
            assert len(proof) == expected
            assert verify_consistency(m, n, proof, roots[m], roots[n]).size1 == m


def _sample(rng: random.Random, n: int, count: int) -> list[int]:
    """The ends and a few random points of range(n)."""
    return sorted({0, n - 1, *(rng.randrange(n) for _ in range(count))})


def _assert_inclusion_mutations(rng: random.Random, i: int, n: int, every_bit: bool) -> None:
    proof, root, leaf = list(TREE.inclusion_proof(i, n)), TREE.root(n), LEAVES[i]
    bits = range(256) if every_bit else [rng.randrange(256)]
    for k in range(len(proof)):
        for bit in bits:
            with pytest.raises(InclusionProofInvalid):
                verify_inclusion(leaf, i, n, [*proof[:k], flip(proof[k], bit), *proof[k + 1 :]], root)
    for bit in bits:
        with pytest.raises(InclusionProofInvalid):
            verify_inclusion(flip(leaf, bit), i, n, proof, root)
        with pytest.raises(InclusionProofInvalid):
            verify_inclusion(leaf, i, n, proof, flip(root, bit))
    for bit in range(n.bit_length() + 1):
        i2 = i ^ (1 << bit)
        assert i2 >= n or inclusion_shape(i2, n) != inclusion_shape(i, n)
        with pytest.raises(InclusionProofInvalid):
            verify_inclusion(leaf, i2, n, proof, root)
        n2 = n ^ (1 << bit)
        if n2 > i and inclusion_shape(i, n2) == inclusion_shape(i, n):
            assert verify_inclusion(leaf, i, n2, proof, root).size == n2
        else:
            with pytest.raises(InclusionProofInvalid):
                verify_inclusion(leaf, i, n2, proof, root)


def test_one_bit_mutations_of_inclusion_proofs_fail() -> None:
    rng = random.Random(1)
    for n in range(1, MAX_LEAVES + 1):
        for i in _sample(rng, n, 3):
            _assert_inclusion_mutations(rng, i, n, every_bit=False)


def test_every_bit_of_some_inclusion_proofs() -> None:
    rng = random.Random(2)
    for i, n in [(0, 1), (5, 8), (6, 7), (255, 256), (256, 257), (81, 95), (123, 300), (299, 300)]:
        _assert_inclusion_mutations(rng, i, n, every_bit=True)


def _assert_consistency_mutations(rng: random.Random, m: int, n: int, every_bit: bool) -> None:
    proof, r1, r2 = list(TREE.consistency_proof(m, n)), TREE.root(m), TREE.root(n)
    bits = range(256) if every_bit else [rng.randrange(256)]
    for k in range(len(proof)):
        for bit in bits:
            with pytest.raises(ConsistencyProofInvalid):
                verify_consistency(m, n, [*proof[:k], flip(proof[k], bit), *proof[k + 1 :]], r1, r2)
    for bit in bits:
        with pytest.raises(ConsistencyProofInvalid):
            verify_consistency(m, n, proof, flip(r1, bit), r2)
        with pytest.raises(ConsistencyProofInvalid):
            verify_consistency(m, n, proof, r1, flip(r2, bit))
    shape = consistency_shape(m, n)
    for bit in range(n.bit_length() + 1):
        m2, n2 = m ^ (1 << bit), n ^ (1 << bit)
        for size1, size2 in ((m2, n), (m, n2)):
            if 0 < size1 < size2 and consistency_shape(size1, size2) == shape:
                assert verify_consistency(size1, size2, proof, r1, r2).size2 == size2
            else:
                with pytest.raises(ConsistencyProofInvalid):
                    verify_consistency(size1, size2, proof, r1, r2)


def test_one_bit_mutations_of_consistency_proofs_fail() -> None:
    rng = random.Random(3)
    for n in range(2, MAX_LEAVES + 1):
        for m in _sample(rng, n - 1, 3):
            _assert_consistency_mutations(rng, m + 1, n, every_bit=False)


def test_every_bit_of_some_consistency_proofs() -> None:
    rng = random.Random(4)
    for m, n in [(1, 2), (3, 7), (4, 7), (6, 8), (127, 128), (128, 300), (81, 95), (299, 300)]:
        _assert_consistency_mutations(rng, m, n, every_bit=True)


def test_size_flips_that_keep_the_shape_exist() -> None:
    """Why a bare proof cannot be trusted for the size: these are RFC 9162, not a bug here."""
    proof, root = TREE.inclusion_proof(0, 5), TREE.root(5)
    assert verify_inclusion(LEAVES[0], 0, 7, proof, root).size == 7  # 5 ^ 0b10
    proof = TREE.consistency_proof(4, 6)
    assert verify_consistency(4, 5, proof, TREE.root(4), TREE.root(6)).size2 == 5


def test_errors_carry_stable_codes() -> None:
    errors: list[type[TlogError]] = [
        InclusionProofInvalid,
        ConsistencyProofInvalid,
        MalformedHash,
        IndexOutOfRange,
        SizeBeyondTree,
        SizesReversed,
    ]
    assert [e.code for e in errors] == [
        "inclusion-proof-invalid",
        "consistency-proof-invalid",
        "malformed-hash",
        "index-out-of-range",
        "size-beyond-tree",
        "sizes-reversed",
    ]
