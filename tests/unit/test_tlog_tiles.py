"""tlog.tiles: the c2sp.org/tlog-tiles examples (vectors/tlog/tiles.json), tile contents computed
from leaf hashes, and roots and proofs served from tiles equal to those of the in-memory tree."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.unit.vectors.tlog.load import vectors
from tlog.errors import InvalidTilePath, MalformedEntryBundle, MalformedTile, TileNotInTree
from tlog.merkle import MerkleTree, consistency_proof, inclusion_proof, leaf_hash, root_at
from tlog.tiles import (
    BundleId,
    TiledSubtrees,
    TileId,
    encode_entry_bundle,
    encode_index,
    encode_tile,
    parse_entry_bundle,
    parse_tile,
    parse_tile_path,
    tile_at,
    tile_hashes,
    tiles_for_size,
)

TILES = vectors("tiles.json")
ENTRIES = [f"entry {i}".encode() for i in range(70_000)]
TREE = MerkleTree(leaf_hash(e) for e in ENTRIES)


def test_index_encoding_of_the_spec() -> None:
    for index, encoded in TILES["index_encoding"]:
        assert encode_index(index) == encoded
        assert parse_tile_path(f"tile/0/{encoded}") == TileId(0, index)
    assert [encode_index(n) for n in (0, 5, 999, 1000, 1_000_000)] == [
        "000",
        "005",
        "999",
        "x001/000",
        "x001/x000/000",
    ]


def test_paths() -> None:
    assert TileId(0, 0).path == "tile/0/000"
    assert TileId(2, 1234067, 17).path == "tile/2/x001/x234/067.p/17"
    assert BundleId(1234067).path == "tile/entries/x001/x234/067"
    assert BundleId(5, 3).path == "tile/entries/005.p/3"
    for tile in (TileId(63, 10**15, 255), TileId(1, 0, 1), BundleId(0, 1), BundleId(999_999, 200)):
        assert parse_tile_path(tile.path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/5",  # not 3 digits
        "tile/0/0005",
        "tile/00/000",  # leading zero in the level
        "tile/64/000",  # level above 63
        "tile/0/x000/005",  # a second path for 005
        "tile/0/001/234",  # 'x' missing
        "tile/0/x001/x234",  # last group with 'x'
        "tile/0/000.p/256",  # a full tile is never .p
        "tile/0/000.p/0",
        "tile/0/000.p/07",
        "tile/0/000.p/",
        "tile/entries/000.p/300",
        "tile/entry/000",
        "/tile/0/000",
        "tile/0/000/",
        "tile/-1/000",
        "tile/0/\uff10\uff10\uff10",
    ],
)
def test_non_canonical_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidTilePath):
        parse_tile_path(path)


def test_tiles_of_the_spec_trees() -> None:
    for tree in TILES["trees"]:
        tiles = list(tiles_for_size(tree["size"]))
        full = Counter(str(t.level) for t in tiles if not t.is_partial)
        partial = [[t.level, t.width] for t in tiles if t.is_partial]
        assert dict(full) == tree["full"]
        assert partial == tree["partial"]


def test_tile_at() -> None:
    assert tile_at(0, 272, 70_000) == TileId(0, 272)
    assert tile_at(0, 273, 70_000) == TileId(0, 273, 112)
    assert tile_at(1, 1, 70_000) == TileId(1, 1, 17)
    assert tile_at(2, 0, 70_000) == TileId(2, 0, 1)
    for level, index, size in [(0, 274, 70_000), (3, 0, 70_000), (0, 0, 0), (1, 0, 255), (0, -1, 10)]:
        with pytest.raises(TileNotInTree):
            tile_at(level, index, size)


def test_tile_hashes_from_leaf_hashes() -> None:
    level0 = tile_hashes(TREE, TileId(0, 3))
    assert level0 == tuple(leaf_hash(e) for e in ENTRIES[768:1024])
    # A level-1 hash is the root of the full level-0 tile below it.
    level1 = tile_hashes(TREE, TileId(1, 0))
    assert level1[3] == MerkleTree(level0).root()
    assert level1[0] == MerkleTree(leaf_hash(e) for e in ENTRIES[:256]).root()
    # The partial level-2 tile of a tree of 70,000: the root of the first 65,536 leaves.
    (only,) = tile_hashes(TREE, TileId(2, 0, 1))
    assert only == TREE.root(65_536)
    with pytest.raises(TileNotInTree):
        tile_hashes(TREE, TileId(0, 273))  # full tile 273 needs 70,144 leaves


def test_tile_bytes() -> None:
    tile = TileId(0, 273, 112)
    data = encode_tile(tile_hashes(TREE, tile))
    assert len(data) == 112 * 32
    assert parse_tile(data, tile) == tile_hashes(TREE, tile)
    with pytest.raises(MalformedTile):
        parse_tile(data[:-1], tile)
    with pytest.raises(MalformedTile):
        parse_tile(data + b"\x00" * 32, tile)
    with pytest.raises(MalformedTile):
        encode_tile([b"\x00" * 31])
    with pytest.raises(MalformedTile):
        encode_tile([])


def stored_tiles(size: int) -> dict[TileId, bytes]:
    """What a log of `size` entries serves: every full and partial tile, computed from leaf hashes."""
    return {t: encode_tile(tile_hashes(TREE, t)) for t in tiles_for_size(size)}


@pytest.mark.parametrize("size", [1, 255, 256, 257, 513, 65_535, 65_536, 70_000])
def test_proofs_from_tiles_equal_proofs_from_the_tree(size: int) -> None:
    store = stored_tiles(size)
    reads: list[TileId] = []

    def read(tile: TileId) -> bytes:
        reads.append(tile)
        return store[tile]

    tiled = TiledSubtrees(size, read)
    assert root_at(tiled, size) == TREE.root(size)
    rng = random.Random(size)
    for i in {0, size - 1, *(rng.randrange(size) for _ in range(20))}:
        assert inclusion_proof(tiled, i, size) == TREE.inclusion_proof(i, size)
    for m in {1, size - 1, *(rng.randrange(1, size + 1) for _ in range(20))}:
        if 0 < m <= size:
            assert consistency_proof(tiled, m, size) == TREE.consistency_proof(m, size)
    assert len(reads) == len(set(reads))  # each tile read once


def test_tiled_subtrees_refuse_what_the_tree_does_not_hold() -> None:
    tiled = TiledSubtrees(300, stored_tiles(300).__getitem__)
    with pytest.raises(TileNotInTree):
        tiled.subtree(0, 300)
    with pytest.raises(TileNotInTree):
        tiled.subtree(9, 0)  # 512 leaves
    with pytest.raises(TileNotInTree):
        TiledSubtrees(-1, stored_tiles(1).__getitem__)
    # A store serving a tile of the wrong width is caught, not hashed.
    bad = TiledSubtrees(300, lambda tile: b"\x00" * 32 * 3)
    with pytest.raises(MalformedTile):
        bad.subtree(0, 0)


def test_entry_bundles() -> None:
    entries = [b"", b"x", b"\xff" * 65_535, *ENTRIES[:3]]
    bundle = BundleId(0, len(entries))
    data = encode_entry_bundle(entries)
    assert data[:5] == b"\x00\x00\x00\x01x"
    assert parse_entry_bundle(data, bundle) == tuple(entries)
    assert bundle.tile == TileId(0, 0, len(entries))
    with pytest.raises(MalformedEntryBundle):
        parse_entry_bundle(data + b"\x00", bundle)  # trailing byte
    with pytest.raises(MalformedEntryBundle):
        parse_entry_bundle(data + b"\x00\x00", bundle)  # an entry more than the width
    with pytest.raises(MalformedEntryBundle):
        parse_entry_bundle(data[:-1], bundle)  # truncated entry
    with pytest.raises(MalformedEntryBundle):
        parse_entry_bundle(data, BundleId(0, len(entries) + 1))  # fewer entries than the width
    with pytest.raises(MalformedEntryBundle):
        encode_entry_bundle([b"\x00" * 65_536])
    with pytest.raises(MalformedEntryBundle):
        encode_entry_bundle([])
    with pytest.raises(MalformedEntryBundle):
        encode_entry_bundle([b""] * 257)


def test_invalid_ids() -> None:
    for args in [(-1, 0), (64, 0), (0, -1), (0, 0, 0), (0, 0, 257)]:
        with pytest.raises(ValueError, match="tile"):
            TileId(*args)
    with pytest.raises(ValueError, match="negative"):
        encode_index(-1)
