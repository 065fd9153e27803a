"""RFC 9162 Merkle tree math: hashing, roots, and inclusion and consistency proofs, with SHA-256 only.

Generation works over any `SubtreeHashes`: something that returns the hash of a *complete* subtree
(2**level leaves, aligned). Complete subtrees never change once the log has grown past them, so a
store can keep them (the in-memory `MerkleTree` here, tiles on disk in `tlog.tiles`); the ragged
right edge of a tree is recomputed from them, O(log n) hashes per root or proof.

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step and returns a verified object or
raises `InclusionProofInvalid` / `ConsistencyProofInvalid` / `MalformedHash`.

Note what a proof does *not* bind: an inclusion proof checked against a bare root does not pin the
tree size, only the shape of the path (index 0 of size 5 and of size 7 take the same path). The
size is bound by the signed checkpoint that carries the root, so callers verify against a
`VerifiedCheckpoint` (see `tlog.checkpoint`), never against a size from the same untrusted source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tlog.errors import (
    ConsistencyProofInvalid,
    InclusionProofInvalid,
    IndexOutOfRange,
    MalformedHash,
    SizeBeyondTree,
    SizesReversed,
)

HASH_SIZE = 32
# The SQL BIGINT bound: far above any real log, and every size we store or sign fits a column.
MAX_TREE_SIZE = 2**63 - 1
# MTH({}) = SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) of two 32-byte child hashes."""
    _check_hash(left, "left child")
    _check_hash(right, "right child")
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _hash_children(left: bytes, right: bytes) -> bytes:
    # Internal: inputs already checked.
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        size = len(value) if isinstance(value, bytes) else type(value).__name__
        raise MalformedHash(f"{what} must be {HASH_SIZE} bytes, got {size}")


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


class SubtreeHashes(Protocol):
    """A store of complete-subtree hashes of one append-only tree."""

    @property
    def size(self) -> int:
        """The number of leaves the store holds."""
        ...

    def subtree(self, level: int, index: int) -> bytes:
        """MTH(D[index * 2**level : (index + 1) * 2**level]); only asked within `size`."""
        ...


class MerkleTree:
    """An in-memory append-only tree of leaf hashes that keeps every complete subtree hash.

    Memory is about two hashes per leaf: meant for tests, bundles and batches, not for a log of
    millions of entries (that is what tiles are for).
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf_hash: bytes) -> int:
        """Add a leaf hash; returns its index. Completes every subtree it closes."""
        _check_hash(leaf_hash, "leaf hash")
        index = self.size
        self._levels[0].append(leaf_hash)
        level, i = 0, index
        while i % 2 == 1:
            parent = _hash_children(self._levels[level][i - 1], self._levels[level][i])
            level, i = level + 1, i // 2
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(parent)
        return index

    def subtree(self, level: int, index: int) -> bytes:
        if level < 0 or index < 0 or level >= len(self._levels) or index >= len(self._levels[level]):
            raise SizeBeyondTree(f"no complete subtree at level {level}, index {index}")
        return self._levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return root_at(self, self.size if size is None else size)

    def inclusion_proof(self, index: int, size: int | None = None) -> tuple[bytes, ...]:
        return inclusion_proof(self, index, self.size if size is None else size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> tuple[bytes, ...]:
        return consistency_proof(self, size1, self.size if size2 is None else size2)


def _check_size(store: SubtreeHashes, size: int) -> None:
    if size < 0 or size > MAX_TREE_SIZE:
        raise SizeBeyondTree(f"tree size {size} is outside 0..{MAX_TREE_SIZE}")
    if size > store.size:
        raise SizeBeyondTree(f"tree size {size} is beyond the tree ({store.size} leaves)")


def _mth(store: SubtreeHashes, lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) for 0 <= lo < hi <= size, splitting as RFC 9162 §2.1.1 does."""
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        return store.subtree(n.bit_length() - 1, lo // n)
    k = _split(n)
    return _hash_children(_mth(store, lo, lo + k), _mth(store, lo + k, hi))


def root_at(store: SubtreeHashes, size: int) -> bytes:
    """The tree head MTH(D[0:size]); EMPTY_ROOT for size 0."""
    _check_size(store, size)
    return EMPTY_ROOT if size == 0 else _mth(store, 0, size)


def inclusion_proof(store: SubtreeHashes, index: int, size: int) -> tuple[bytes, ...]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf to root."""
    _check_size(store, size)
    if not 0 <= index < size:
        raise IndexOutOfRange(f"leaf index {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    _path(store, index, 0, size, proof)
    return tuple(proof)


def _path(store: SubtreeHashes, m: int, lo: int, hi: int, out: list[bytes]) -> None:
    n = hi - lo
    if n == 1:
        return
    k = _split(n)
    if m < k:
        _path(store, m, lo, lo + k, out)
        out.append(_mth(store, lo + k, hi))
    else:
        _path(store, m - k, lo + k, hi, out)
        out.append(_mth(store, lo, lo + k))


def consistency_proof(store: SubtreeHashes, size1: int, size2: int) -> tuple[bytes, ...]:
    """PROOF(size1, D[0:size2]) of RFC 9162 §2.1.4.1; empty when size1 is 0 or equals size2."""
    _check_size(store, size2)
    if size1 < 0:
        raise SizeBeyondTree(f"tree size {size1} is negative")
    if size1 > size2:
        raise SizesReversed(f"no consistency proof from size {size1} to the smaller size {size2}")
    if size1 in (0, size2):
        return ()
    return tuple(_subproof(store, size1, 0, size2, whole=True))


def _subproof(store: SubtreeHashes, m: int, lo: int, hi: int, *, whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], whole); `whole` is RFC 9162's b."""
    n = hi - lo
    if m == n:
        # The old tree is this very subtree: the verifier holds its hash unless we descended right.
        return [] if whole else [_mth(store, lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(store, m, lo, lo + k, whole=whole), _mth(store, lo + k, hi)]
    return [*_subproof(store, m - k, lo + k, hi, whole=False), _mth(store, lo, lo + k)]


# --- Verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedInclusion:
    """The leaf hash is at `index` in the tree of `size` leaves whose root is `root`."""

    leaf_hash: bytes
    index: int
    size: int
    root: bytes


@dataclass(frozen=True)
class VerifiedConsistency:
    """The tree of `size1` leaves with root `root1` is a prefix of the one of `size2` with `root2`."""

    size1: int
    size2: int
    root1: bytes
    root2: bytes


def _check_proof(proof: Sequence[bytes]) -> list[bytes]:
    hashes = list(proof)
    for i, h in enumerate(hashes):
        _check_hash(h, f"proof hash {i}")
    return hashes


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> VerifiedInclusion:
    """RFC 9162 §2.1.3.2. Raises InclusionProofInvalid, or MalformedHash for a non-32-byte hash."""
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root hash")
    path = _check_proof(proof)
    if not 0 <= size <= MAX_TREE_SIZE:
        raise InclusionProofInvalid(f"tree size {size} is outside 0..{MAX_TREE_SIZE}")
    # 1. leaf_index >= tree_size fails (this covers the empty tree too).
    if not 0 <= index < size:
        raise InclusionProofInvalid(f"leaf index {index} is not in a tree of size {size}")
    # 2.-3. fn = leaf_index, sn = tree_size - 1, r = hash.
    fn, sn, r = index, size - 1, leaf_hash
    # 4. For each p in the path:
    for p in path:
        # 4a. sn == 0 with hashes left: the proof is too long for this index and size.
        if sn == 0:
            raise InclusionProofInvalid(f"proof has more hashes than index {index} of size {size} needs")
        # 4b. p is a left sibling when fn is a right child or fn is the last node of its level.
        if fn & 1 or fn == sn:
            r = _hash_children(p, r)
            # 4b.ii Skip the levels where the node has no right sibling.
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = _hash_children(r, p)
        # 4c.
        fn, sn = fn >> 1, sn >> 1
    # 5. sn == 0 and r == root.
    if sn != 0:
        raise InclusionProofInvalid(f"proof has fewer hashes than index {index} of size {size} needs")
    if r != root:
        raise InclusionProofInvalid(f"proof for index {index} does not lead to the root of size {size}")
    return VerifiedInclusion(leaf_hash=leaf_hash, index=index, size=size, root=root)


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> VerifiedConsistency:
    """RFC 9162 §2.1.4.2, plus the two trivial cases it leaves out (empty first tree, equal sizes).
    Raises ConsistencyProofInvalid, or MalformedHash for a non-32-byte hash."""
    _check_hash(root1, "first root hash")
    _check_hash(root2, "second root hash")
    path = _check_proof(proof)
    if not (0 <= size1 <= MAX_TREE_SIZE and 0 <= size2 <= MAX_TREE_SIZE):
        raise ConsistencyProofInvalid(f"tree sizes {size1}, {size2} are outside 0..{MAX_TREE_SIZE}")
    if size1 > size2:
        raise ConsistencyProofInvalid(f"first size {size1} is larger than second size {size2}")
    verified = VerifiedConsistency(size1=size1, size2=size2, root1=root1, root2=root2)
    # Trivial cases: nothing to prove, so the proof must be empty and the roots what they must be.
    if size1 in (0, size2):
        if path:
            raise ConsistencyProofInvalid(f"proof from size {size1} to {size2} must be empty")
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise ConsistencyProofInvalid("first root is not the empty tree's root")
        if size1 == size2 and root1 != root2:
            raise ConsistencyProofInvalid(f"two different roots for the same size {size1}")
        return verified
    # 1. An empty path fails.
    if not path:
        raise ConsistencyProofInvalid(f"empty proof from size {size1} to {size2}")
    # 2. If first is a power of 2, the first tree is a complete subtree: prepend its root.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = size1 - 1, size2 - 1
    # 4. Skip the levels where fn is a right child.
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # 5. fr = sr = path[0].
    fr = sr = path[0]
    # 6. For each subsequent c:
    for c in path[1:]:
        # 6a.
        if sn == 0:
            raise ConsistencyProofInvalid(f"proof has more hashes than sizes {size1} to {size2} need")
        # 6b.
        if fn & 1 or fn == sn:
            fr = _hash_children(c, fr)
            sr = _hash_children(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = _hash_children(sr, c)
        # 6c.
        fn, sn = fn >> 1, sn >> 1
    # 7. fr == first_hash, sr == second_hash, sn == 0.
    if sn != 0:
        raise ConsistencyProofInvalid(f"proof has fewer hashes than sizes {size1} to {size2} need")
    if fr != root1:
        raise ConsistencyProofInvalid(f"proof does not lead to the first root (size {size1})")
    if sr != root2:
        raise ConsistencyProofInvalid(f"proof does not lead to the second root (size {size2})")
    return verified
