"""`provision.sequencer.StoredSubtrees` (proofs over stored tiles, inner subtrees cached per tile) against
`tlog.merkle.MerkleTree` over the same leaves: roots, inclusion and consistency proofs at sizes that end on,
just before and just after tile boundaries of levels 0, 1 and 2, all read from the tiles of one larger
tree (as the store serves an older size), through one shared cache."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest

from provision.sequencer import StoredSubtrees, TileLayers, tile_layers
from tlog.errors import TileNotInTree
from tlog.merkle import MerkleTree, consistency_proof, inclusion_proof, root_at
from tlog.tiles import TILE_WIDTH, TileId, encode_tile, tile_hashes, tiles_for_size

FULL = 70_000  # past 65,536 = 256**2: three tile levels
SIZES = [1, 2, 3, 255, 256, 257, 511, 512, 65_535, 65_536, 65_537, FULL]


@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    return MerkleTree(hashlib.sha256(n.to_bytes(4, "big")).digest() for n in range(FULL))


@pytest.fixture(scope="module")
def stored(tree: MerkleTree) -> dict[tuple[int, int], bytes]:
    """The tiles as the database holds them for the full tree (the rightmost ones partial)."""
    return {(t.level, t.index): encode_tile(tile_hashes(tree, t)) for t in tiles_for_size(FULL)}


def reader(stored: dict[tuple[int, int], bytes]) -> Callable[[TileId], bytes]:
    def read(tile: TileId) -> bytes:
        data = stored.get((tile.level, tile.index), b"")
        if len(data) < tile.width * 32:
            raise TileNotInTree(f"{tile.path} is not stored")
        return data[: tile.width * 32]

    return read


def test_tile_layers_are_the_complete_subtrees_of_a_tile() -> None:
    leaves = [hashlib.sha256(bytes([n])).digest() for n in range(TILE_WIDTH)]
    tree = MerkleTree(leaves)
    layers = tile_layers(leaves)
    assert [len(layer) for layer in layers] == [256, 128, 64, 32, 16, 8, 4, 2, 1]
    for height, layer in enumerate(layers):
        assert layer == [tree.subtree(height, i) for i in range(len(layer))]
    # A partial tile: only the complete subtrees of its width.
    assert [len(layer) for layer in tile_layers(leaves[:5])] == [5, 2, 1]


def test_roots_and_proofs_match_the_in_memory_tree(
    tree: MerkleTree, stored: dict[tuple[int, int], bytes]
) -> None:
    rng = random.Random(9)
    cache = TileLayers(capacity=64)  # shared across sizes: widths differ, entries must not mix
    for size in SIZES:
        store = StoredSubtrees(size, reader(stored), cache)
        assert root_at(store, size) == tree.root(size), size
        for index in {0, size - 1, size // 2, rng.randrange(size)}:
            assert inclusion_proof(store, index, size) == tree.inclusion_proof(index, size), (index, size)
            assert store.subtree(0, index) == tree.subtree(0, index)
        for older in {1, size // 3, size - 1, rng.randrange(1, size + 1)}:
            assert consistency_proof(store, older, size) == tree.consistency_proof(older, size), (older, size)


def test_a_subtree_outside_the_tree_or_a_short_tile_is_refused(stored: dict[tuple[int, int], bytes]) -> None:
    store = StoredSubtrees(300, reader(stored))
    with pytest.raises(TileNotInTree):
        store.subtree(0, 300)  # leaf 300 is not in a tree of 300
    with pytest.raises(TileNotInTree):
        store.subtree(9, 0)  # 512 leaves
    truncated = dict(stored)
    truncated[0, 1] = truncated[0, 1][: 10 * 32]  # the tile holds 10 hashes, the tree needs 44
    with pytest.raises(TileNotInTree):
        StoredSubtrees(300, reader(truncated)).subtree(0, 299)
