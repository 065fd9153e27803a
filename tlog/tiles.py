"""c2sp.org/tlog-tiles: tile and entry-bundle paths, tile contents, and proofs served from tiles.

A tile at level L, index N holds up to 256 consecutive hashes of complete subtrees of 256**L leaves:
hash i is MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L]). Level-0 tiles hold leaf hashes.
A full tile (256 hashes, 8192 bytes) never changes; the rightmost tile of each level is partial
(width 1..255, path suffix `.p/<W>`) and grows with the tree.

Paths: `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`, where N is written in 3-digit groups
and every group but the last starts with `x` (1234067 -> `x001/x234/067`). Parsing accepts only the
canonical form, so one resource has one path.

`TiledSubtrees` turns stored tiles back into the complete-subtree hashes `tlog.merkle` builds roots
and proofs from: any proof needs O(log n) tiles, whatever the log's size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from tlog.errors import InvalidTilePath, MalformedEntryBundle, MalformedTile, TileNotInTree
from tlog.merkle import HASH_SIZE, MAX_TREE_SIZE, SubtreeHashes, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_TILE_LEVEL = 63
# Entry bundles prefix each entry with a big-endian uint16 length.
MAX_ENTRY_BYTES = 0xFFFF

# Level: 0..63 without leading zeros (range checked after the match); N: at most 7 groups, which
# covers every index below MAX_TREE_SIZE; W: 1..255 without leading zeros.
_PATH = re.compile(r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/){0,6}[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


def encode_index(n: int) -> str:
    """N as zero-padded 3-digit path elements, all but the last prefixed with 'x'."""
    if n < 0:
        raise ValueError(f"tile index {n} is negative")
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


def _check_width(width: int) -> None:
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"tile width {width} is outside 1..{TILE_WIDTH}")


@dataclass(frozen=True)
class TileId:
    """A Merkle tile: level, index within the level, width (256 = full)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_TILE_LEVEL or self.index < 0:
            raise ValueError(f"no tile at level {self.level}, index {self.index}")
        _check_width(self.width)

    @property
    def is_partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def path(self) -> str:
        suffix = f".p/{self.width}" if self.is_partial else ""
        return f"tile/{self.level}/{encode_index(self.index)}{suffix}"

    @property
    def leaf_range(self) -> tuple[int, int]:
        """The leaves [start, end) its hashes cover."""
        span = TILE_WIDTH**self.level
        start = self.index * TILE_WIDTH * span
        return start, start + self.width * span


@dataclass(frozen=True)
class BundleId:
    """An entry bundle: the entries of the level-0 tile of the same index and width."""

    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"entry bundle index {self.index} is negative")
        _check_width(self.width)

    @property
    def is_partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def path(self) -> str:
        suffix = f".p/{self.width}" if self.is_partial else ""
        return f"tile/entries/{encode_index(self.index)}{suffix}"

    @property
    def tile(self) -> TileId:
        return TileId(0, self.index, self.width)


def parse_tile_path(path: str) -> TileId | BundleId:
    """Parse a canonical tile or entry-bundle path (relative to the log prefix)."""
    match = _PATH.fullmatch(path)
    if match is None:
        raise InvalidTilePath(f"{path[:96]!r} is not a tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>] path")
    level_text, index_text, width_text = match.groups()
    groups = index_text.split("/")
    # x000/ leading groups would give one tile a second path.
    if len(groups) > 1 and groups[0] == "x000":
        raise InvalidTilePath(f"{path[:96]!r}: tile index has a leading x000 group")
    index = int(index_text.replace("x", "").replace("/", ""))
    width = TILE_WIDTH if width_text is None else int(width_text)
    if width_text is not None and width >= TILE_WIDTH:
        raise InvalidTilePath(f"{path[:96]!r}: a partial tile has 1..255 hashes")
    if level_text == "entries":
        return BundleId(index, width)
    level = int(level_text)
    if level > MAX_TILE_LEVEL:
        raise InvalidTilePath(f"{path[:96]!r}: tile level above {MAX_TILE_LEVEL}")
    return TileId(level, index, width)


def _check_tree_size(size: int) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise TileNotInTree(f"tree size {size} is outside 0..{MAX_TREE_SIZE}")


def tile_at(level: int, index: int, size: int) -> TileId:
    """The tile (full, or partial with its width) at `level`, `index` in a tree of `size` leaves."""
    _check_tree_size(size)
    if not 0 <= level <= MAX_TILE_LEVEL or index < 0:
        raise TileNotInTree(f"no tile at level {level}, index {index}")
    span = TILE_WIDTH**level
    full = size // (span * TILE_WIDTH)
    if index < full:
        return TileId(level, index)
    width = (size // span) % TILE_WIDTH
    if index == full and width > 0:
        return TileId(level, index, width)
    raise TileNotInTree(f"tile {level}/{index} does not exist in a tree of size {size}")


def tiles_for_size(size: int) -> Iterator[TileId]:
    """Every tile, full and partial, that represents a tree of `size` leaves, level by level."""
    _check_tree_size(size)
    level, span = 0, 1
    while span <= size:
        full = size // (span * TILE_WIDTH)
        yield from (TileId(level, n) for n in range(full))
        width = (size // span) % TILE_WIDTH
        if width:
            yield TileId(level, full, width)
        level, span = level + 1, span * TILE_WIDTH


def tile_hashes(store: SubtreeHashes, tile: TileId) -> tuple[bytes, ...]:
    """The tile's hashes, computed from a store of the tree (e.g. a `MerkleTree` of leaf hashes)."""
    _, end = tile.leaf_range
    if end > store.size:
        raise TileNotInTree(f"{tile.path} covers leaves up to {end}, the tree has {store.size}")
    first = tile.index * TILE_WIDTH
    return tuple(store.subtree(tile.level * TILE_HEIGHT, first + i) for i in range(tile.width))


def encode_tile(hashes: Sequence[bytes]) -> bytes:
    if not 1 <= len(hashes) <= TILE_WIDTH or any(len(h) != HASH_SIZE for h in hashes):
        raise MalformedTile(f"a tile is 1..{TILE_WIDTH} hashes of {HASH_SIZE} bytes")
    return b"".join(hashes)


def parse_tile(data: bytes, tile: TileId) -> tuple[bytes, ...]:
    """Split tile bytes into its hashes; exactly `tile.width` of them."""
    if len(data) != tile.width * HASH_SIZE:
        raise MalformedTile(f"{tile.path} must be {tile.width * HASH_SIZE} bytes, got {len(data)}")
    return tuple(data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE))


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """uint16 big-endian length, then the entry, for each of 1..256 entries."""
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise MalformedEntryBundle(f"an entry bundle holds 1..{TILE_WIDTH} entries, not {len(entries)}")
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_BYTES:
            raise MalformedEntryBundle(f"entry of {len(entry)} bytes exceeds {MAX_ENTRY_BYTES}")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def parse_entry_bundle(data: bytes, bundle: BundleId) -> tuple[bytes, ...]:
    """Exactly `bundle.width` length-prefixed entries and no byte more."""
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if len(entries) == bundle.width:
            raise MalformedEntryBundle(f"{bundle.path} has bytes after its {bundle.width} entries")
        if pos + 2 > len(data):
            raise MalformedEntryBundle(f"{bundle.path} ends inside a length prefix")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + length > len(data):
            raise MalformedEntryBundle(f"{bundle.path} ends inside entry {len(entries)}")
        entries.append(data[pos : pos + length])
        pos += length
    if len(entries) != bundle.width:
        raise MalformedEntryBundle(f"{bundle.path} has {len(entries)} entries, not {bundle.width}")
    return tuple(entries)


class TiledSubtrees:
    """Implements `tlog.merkle.SubtreeHashes` for a tree of `size` leaves from its stored tiles.

    `read_tile` returns a tile's bytes (full or partial as `tile_at` names it). Each tile is read
    at most once per instance: make one per request, against one tree size.
    """

    def __init__(self, size: int, read_tile: Callable[[TileId], bytes]) -> None:
        _check_tree_size(size)
        self._size = size
        self._read_tile = read_tile
        self._cache: dict[TileId, tuple[bytes, ...]] = {}

    @property
    def size(self) -> int:
        return self._size

    def _tile(self, tile: TileId) -> tuple[bytes, ...]:
        hashes = self._cache.get(tile)
        if hashes is None:
            hashes = self._cache[tile] = parse_tile(self._read_tile(tile), tile)
        return hashes

    def subtree(self, level: int, index: int) -> bytes:
        if level < 0 or index < 0 or (index + 1) << level > self._size:
            raise TileNotInTree(f"no complete subtree at level {level}, index {index} in size {self._size}")
        # A subtree of height `level` is 2**rem hashes of the tile level below it, hashed together.
        tile_level, rem = divmod(level, TILE_HEIGHT)
        first = index << rem
        hashes = self._tile(tile_at(tile_level, first // TILE_WIDTH, self._size))
        offset = first % TILE_WIDTH
        layer = list(hashes[offset : offset + (1 << rem)])
        while len(layer) > 1:
            layer = [node_hash(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
        return layer[0]
