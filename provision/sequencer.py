"""The transparency log's sequencer: entries in, one signed checkpoint per batch out.

A step is one transaction: lock the sequencer row (`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite a
write first, which takes the database's single write lock), take the entries waiting in `tlog_pending`
and those queued in this process, drop the ones already logged (dedup by leaf hash), give the rest
consecutive indices, extend the hash tiles, sign the new checkpoint and store it, then commit. All
coordination is that row lock, so replicas sharing a database produce one linear log; nothing in
process memory decides an index.

A `Sequencer` runs the steps on one thread per process. Appends queue up while a step runs and go
into the next one together (group commit); an append is answered only after the commit that holds
it, with a receipt (index, leaf hash, checkpoint, inclusion proof). Entries written to `tlog_pending`
by other transactions (certificate events) are picked up when woken and by a cheap poll.

Cost per batch, not per entry: pending rows are copied into `tlog_entries` inside the database (their
bytes are read once, to hash them, and never sent back), PostgreSQL gets each batch as arrays in one
statement, each tile level is read and written once, and one signature covers the batch. Proofs read
tiles through `StoredSubtrees`, which hashes a tile's inner subtrees once (`TileLayers`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256

from sqlalchemy import Connection, Engine, bindparam, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from pki.errors import PkiError
from provision.db import writer_lock
from provision.tables import LogCheckpoint, LogEntry, LogPending, LogState, LogTile
from tlog.checkpoint import Checkpoint, sign_checkpoint
from tlog.errors import TileNotInTree, TlogError
from tlog.merkle import HASH_SIZE, inclusion_proof, leaf_hash, root_at
from tlog.note import NoteSigner
from tlog.tiles import TILE_HEIGHT, TILE_WIDTH, TileId, parse_tile

log = logging.getLogger("weighstation.tlog")

STATE = SQLModel.metadata.tables[LogState.__tablename__]
ENTRIES = SQLModel.metadata.tables[LogEntry.__tablename__]
PENDING = SQLModel.metadata.tables[LogPending.__tablename__]
TILES = SQLModel.metadata.tables[LogTile.__tablename__]
CHECKPOINTS = SQLModel.metadata.tables[LogCheckpoint.__tablename__]
STATE_ID = 1

# Pending rows and queued appends taken per step: bounds one transaction and one signature's wait.
MAX_BATCH = 4096
# Bound on bind parameters per IN (...) lookup.
_CHUNK = 500


class LogNotReady(TlogError):
    """The log has no sequencer row yet: the server's start-up creates it with the log key."""

    code = "log-not-ready"
    kind = "unavailable"


class SequencingConflict(TlogError):
    """The database changed under a step in a way the sequencer lock should have prevented."""

    code = "sequencing-conflict"
    kind = "unavailable"


@dataclass(frozen=True)
class Receipt:
    """Where an entry is and the proof of it: the leaf at `index` is in the tree that `checkpoint`
    (a signed note) signs; `proof` is the RFC 9162 inclusion path to that checkpoint's root."""

    index: int
    leaf_hash: bytes
    checkpoint: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Item:
    entry: bytes
    kind: str
    created_at: datetime
    leaf_hash: bytes


def item(entry: bytes, kind: str, created_at: datetime) -> Item:
    return Item(entry, kind, created_at, leaf_hash(entry))


@dataclass(frozen=True)
class Placed:
    """An entry's index and the size of the checkpoint that first covered it."""

    index: int
    checkpoint_size: int


@dataclass
class Step:
    size: int
    note: bytes | None  # the checkpoint signed by this step, None when it logged nothing new
    placed: list[Placed]  # one per queued item, in order
    pending: int  # pending rows taken
    tiles: dict[tuple[int, int], bytes] = field(default_factory=dict)  # tiles as written


# --- storage helpers shared with the read side ------------------------------------------------

# Built once: composing a statement per call costs more than running it on SQLite.
_TILE = select(TILES.c.hashes).where(TILES.c.level == bindparam("level"), TILES.c.idx == bindparam("idx"))
_PENDING_BATCH = select(PENDING.c.id, PENDING.c.entry).order_by(PENDING.c.id).limit(bindparam("limit"))
# SQLite: driver SQL and plain tuples, so no per-row parameter processing on the way to the C loop.
_MOVE_ONE = (
    "INSERT INTO tlog_entries (idx, leaf_hash, entry, kind, checkpoint_size, created_at)"
    " SELECT ?, ?, entry, kind, ?, created_at FROM tlog_pending WHERE id = ?"
)
_KNOWN_SQLITE = "SELECT leaf_hash, idx, checkpoint_size FROM tlog_entries WHERE leaf_hash IN ({})"
_DROP_PENDING_SQLITE = "DELETE FROM tlog_pending WHERE id IN ({})"
# PostgreSQL: whole batches as arrays, one statement and one round trip each.
_MOVE_PG = text(
    "INSERT INTO tlog_entries (idx, leaf_hash, entry, kind, checkpoint_size, created_at)"
    " SELECT v.idx, v.leaf, p.entry, p.kind, :size, p.created_at"
    " FROM unnest(CAST(:ids AS BIGINT[]), CAST(:idxs AS BIGINT[]), CAST(:leaves AS BYTEA[]))"
    " AS v(id, idx, leaf) JOIN tlog_pending p ON p.id = v.id"
)
_KNOWN_PG = text(
    "SELECT leaf_hash, idx, checkpoint_size FROM tlog_entries WHERE leaf_hash = ANY(CAST(:hashes AS BYTEA[]))"
)
_DROP_PENDING_PG = text("DELETE FROM tlog_pending WHERE id = ANY(CAST(:ids AS BIGINT[]))")
_NODE_PREFIX = b"\x01"
# Tiles whose inner subtrees a process keeps: ~35 KB each when full; the upper levels stay hot.
TILE_CACHE = 256


def _marks(count: int) -> str:
    """`?, ?, ...`: only placeholders are formatted into SQL, never a value."""
    return ", ".join("?" * count)


def fetch_tile(conn: Connection, level: int, index: int) -> bytes | None:
    data = conn.execute(_TILE, {"level": level, "idx": index}).scalar_one_or_none()
    return None if data is None else bytes(data)


def tile_reader(
    conn: Connection, overlay: dict[tuple[int, int], bytes] | None = None
) -> Callable[[TileId], bytes]:
    """Tile bytes for `StoredSubtrees`. A stored tile may have grown past the width asked for (the
    tree moved on); its first hashes never change, so the prefix is the tile of the smaller tree."""
    written = overlay or {}

    def read(tile: TileId) -> bytes:
        data = written.get((tile.level, tile.index))
        if data is None:
            data = fetch_tile(conn, tile.level, tile.index)
        need = tile.width * HASH_SIZE
        if data is None or len(data) < need:
            raise TileNotInTree(f"{tile.path} is not stored")
        return data[:need]

    return read


def fetch_note(conn: Connection, size: int) -> bytes:
    note = conn.execute(select(CHECKPOINTS.c.note).where(CHECKPOINTS.c.size == size)).scalar_one()
    return str(note).encode("utf-8")


def known_entries(conn: Connection, hashes: Iterable[bytes]) -> dict[bytes, Placed]:
    found: dict[bytes, Placed] = {}
    wanted = list(hashes)
    if conn.dialect.name == "postgresql":
        chunks = [conn.execute(_KNOWN_PG, {"hashes": wanted}).all()] if wanted else []
    else:
        chunks = []
        for start in range(0, len(wanted), _CHUNK):
            chunk = tuple(wanted[start : start + _CHUNK])
            chunks.append(conn.exec_driver_sql(_KNOWN_SQLITE.format(_marks(len(chunk))), chunk).all())
    for rows in chunks:
        for h, index, size in rows:
            found[bytes(h)] = Placed(int(index), int(size))
    return found


def tile_layers(hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every complete subtree inside one tile: layer r holds the RFC 9162 node hashes of each aligned run
    of 2**r tile hashes (layer 0 is the tile). Inputs are 32-byte hashes from a length-checked tile, so
    this hashes directly instead of through `tlog.merkle.node_hash`'s per-call checks (3x the cost)."""
    layer = list(hashes)
    out = [layer]
    while len(layer) > 1:
        layer = [sha256(_NODE_PREFIX + layer[i] + layer[i + 1]).digest() for i in range(0, len(layer) - 1, 2)]
        out.append(layer)
    return out


class TileLayers:
    """The inner subtrees of tiles by (level, index, width), computed once, least recently used dropped.

    A complete subtree never changes in an append-only log, so an entry is never stale, with one
    condition: fill it only from committed tiles. A step that rolls back may have written tiles that the
    next step (of any replica) writes differently, so `sequence_step` uses a private instance."""

    def __init__(self, capacity: int = TILE_CACHE) -> None:
        self._capacity = capacity
        self._tiles: OrderedDict[tuple[int, int, int], list[list[bytes]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, level: int, index: int, width: int, read: Callable[[TileId], bytes]) -> list[list[bytes]]:
        key = (level, index, width)
        with self._lock:
            found = self._tiles.get(key)
            if found is not None:
                self._tiles.move_to_end(key)
                return found
        tile = TileId(level, index, width)
        layers = tile_layers(parse_tile(read(tile), tile))
        with self._lock:
            self._tiles[key] = layers
            while len(self._tiles) > self._capacity:
                self._tiles.popitem(last=False)
        return layers


class StoredSubtrees:
    """`tlog.merkle.SubtreeHashes` of the tree of `size` leaves over its stored tiles. A complete subtree
    of height 8L + r is one hash of layer r of a level-L tile, so a proof costs one lookup per hash once
    the few tiles on its path are read and layered (each at most once, through `layers`)."""

    def __init__(
        self, size: int, read_tile: Callable[[TileId], bytes], layers: TileLayers | None = None
    ) -> None:
        self._size = size
        self._read = read_tile
        self._layers = layers if layers is not None else TileLayers()
        self._memo: dict[tuple[int, int], bytes] = {}  # the receipts of a batch share most hashes

    @property
    def size(self) -> int:
        return self._size

    def subtree(self, level: int, index: int) -> bytes:
        if level < 0 or index < 0 or (index + 1) << level > self._size:
            raise TileNotInTree(f"no complete subtree at level {level}, index {index} in size {self._size}")
        found = self._memo.get((level, index))
        if found is not None:
            return found
        tile_level, rem = divmod(level, TILE_HEIGHT)
        first = index << rem  # the subtree's first hash in the level's hash sequence
        tile, offset = divmod(first, TILE_WIDTH)
        # `tlog.tiles.tile_at` without building a TileId per hash (a proof asks for ~2 log2(n) of them).
        hashes_at_level = self._size >> (TILE_HEIGHT * tile_level)
        width = TILE_WIDTH if tile < hashes_at_level // TILE_WIDTH else hashes_at_level % TILE_WIDTH
        found = self._memo[level, index] = self._layers.get(tile_level, tile, width, self._read)[rem][
            offset >> rem
        ]
        return found


# --- one step -----------------------------------------------------------------------------------


def _lock_state(conn: Connection) -> tuple[int, bytes]:
    query = select(STATE.c.size, STATE.c.root_hash).where(STATE.c.id == STATE_ID)
    if conn.dialect.name == "postgresql":
        row = conn.execute(query.with_for_update()).one_or_none()
    else:
        # SQLite: writing first takes the one write lock now, so every read below sees the latest tree.
        conn.execute(update(STATE).where(STATE.c.id == STATE_ID).values(size=STATE.c.size))
        row = conn.execute(query).one_or_none()
    if row is None:
        raise LogNotReady("the transparency log has not been created (no sequencer row)")
    return int(row.size), bytes(row.root_hash)


def _extend_tiles(conn: Connection, size: int, leaves: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
    """Append leaf hashes to the tiles of a tree of `size` leaves. Each level's rightmost partial tile
    is rewritten; a tile that fills up is written in full once and its root joins the level above."""
    written: dict[tuple[int, int], bytes] = {}
    inserts: list[dict[str, object]] = []
    level, count, new = 0, size, list(leaves)
    while new:
        first, width = divmod(count, TILE_WIDTH)
        hashes: list[bytes] = []
        if width:
            data = fetch_tile(conn, level, first)
            if data is None or len(data) != width * HASH_SIZE:
                raise TileNotInTree(f"tile {level}/{first} does not hold the {width} hashes the tree needs")
            hashes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        hashes.extend(new)
        new = []
        for start in range(0, len(hashes), TILE_WIDTH):
            chunk = hashes[start : start + TILE_WIDTH]
            index = first + start // TILE_WIDTH
            data = b"".join(chunk)
            written[level, index] = data
            if start == 0 and width:
                conn.execute(
                    update(TILES).where(TILES.c.level == level, TILES.c.idx == index).values(hashes=data)
                )
            else:
                inserts.append({"level": level, "idx": index, "hashes": data})
            if len(chunk) == TILE_WIDTH:
                new.append(tile_layers(chunk)[-1][0])
        level, count = level + 1, count // TILE_WIDTH
    if inserts:
        conn.execute(insert(TILES), inserts)
    return written


def _move_pending(conn: Connection, moves: list[tuple[int, int, bytes]], new_size: int) -> None:
    """Copy pending rows (id, idx, leaf hash) into `tlog_entries` inside the database: the entry bytes,
    kind and time never travel back to Python, and PostgreSQL takes the whole batch in one statement."""
    if not moves:
        return
    if conn.dialect.name == "postgresql":
        ids, idxs, leaves = (list(column) for column in zip(*moves, strict=True))
        moved = conn.execute(_MOVE_PG, {"ids": ids, "idxs": idxs, "leaves": leaves, "size": new_size})
    else:
        moved = conn.exec_driver_sql(_MOVE_ONE, [(idx, leaf, new_size, pid) for pid, idx, leaf in moves])
    # The rows were read under the sequencer lock, so all are there; if one were not, its index would be
    # a gap in the log: refuse the step (it rolls back) rather than sign that tree.
    if moved.rowcount != len(moves):
        raise SequencingConflict(f"moved {moved.rowcount} of {len(moves)} pending entries")


def _drop_pending(conn: Connection, ids: list[int]) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(_DROP_PENDING_PG, {"ids": ids})
        return
    for start in range(0, len(ids), _CHUNK):
        chunk = tuple(ids[start : start + _CHUNK])
        conn.exec_driver_sql(_DROP_PENDING_SQLITE.format(_marks(len(chunk))), chunk)


def sequence_step(
    conn: Connection,
    signer: NoteSigner,
    origin: str,
    queued: Sequence[Item],
    *,
    now: datetime,
    limit: int = MAX_BATCH,
) -> Step:
    """One batch in the caller's transaction (which must commit it). See the module docstring."""
    size, _ = _lock_state(conn)
    rows = conn.execute(_PENDING_BATCH, {"limit": limit}).all()
    pending = [(int(r.id), leaf_hash(bytes(r.entry))) for r in rows]
    known = known_entries(conn, {h for _, h in pending} | {i.leaf_hash for i in queued})
    # Fresh leaves in log order: pending rows (oldest first), then this process's queue.
    leaves: list[bytes] = []
    moves: list[tuple[int, int, bytes]] = []
    inserts: list[Item] = []
    assigned: dict[bytes, int] = {}
    for pid, leaf in pending:
        if leaf not in known and leaf not in assigned:
            assigned[leaf] = size + len(leaves)
            moves.append((pid, assigned[leaf], leaf))
            leaves.append(leaf)
    for it in queued:
        if it.leaf_hash not in known and it.leaf_hash not in assigned:
            assigned[it.leaf_hash] = size + len(leaves)
            inserts.append(it)
            leaves.append(it.leaf_hash)
    new_size = size + len(leaves)
    step = Step(size=new_size, note=None, placed=[], pending=len(rows))
    if leaves:
        _move_pending(conn, moves, new_size)
        if inserts:
            conn.execute(
                insert(ENTRIES),
                [
                    {
                        "idx": assigned[it.leaf_hash],
                        "leaf_hash": it.leaf_hash,
                        "entry": it.entry,
                        "kind": it.kind,
                        "checkpoint_size": new_size,
                        "created_at": it.created_at,
                    }
                    for it in inserts
                ],
            )
        step.tiles = _extend_tiles(conn, size, leaves)
        root = root_at(StoredSubtrees(new_size, tile_reader(conn, step.tiles)), new_size)
        step.note = sign_checkpoint(Checkpoint(origin, new_size, root), [signer])
        conn.execute(
            insert(CHECKPOINTS),
            {"size": new_size, "root_hash": root, "note": step.note.decode("utf-8"), "created_at": now},
        )
        conn.execute(
            update(STATE).where(STATE.c.id == STATE_ID).values(size=new_size, root_hash=root, updated_at=now)
        )
    if pending:
        _drop_pending(conn, [pid for pid, _ in pending])
    for it in queued:
        first = known.get(it.leaf_hash)
        step.placed.append(first or Placed(assigned[it.leaf_hash], new_size))
    return step


def receipts(
    conn: Connection,
    items: Sequence[Item],
    placed: Sequence[Placed],
    step: Step | None = None,
    layers: TileLayers | None = None,
) -> list[Receipt]:
    """Each entry's first receipt: the checkpoint that first covered it and the proof to it. Call it
    after the step's commit (`layers` is filled from the tiles read)."""
    layers = layers if layers is not None else TileLayers()
    trees: dict[int, tuple[bytes, StoredSubtrees]] = {}
    overlay = step.tiles if step is not None else None
    out: list[Receipt] = []
    for it, where in zip(items, placed, strict=True):
        tree = trees.get(where.checkpoint_size)
        if tree is None:
            size = where.checkpoint_size
            note = step.note if step is not None and step.note and size == step.size else None
            tree = trees[size] = (
                note or fetch_note(conn, size),
                StoredSubtrees(size, tile_reader(conn, overlay), layers),
            )
        note, store = tree
        proof = inclusion_proof(store, where.index, where.checkpoint_size)
        out.append(Receipt(index=where.index, leaf_hash=it.leaf_hash, checkpoint=note, proof=proof))
    return out


# --- the sequencer thread -----------------------------------------------------------------------


@dataclass
class _Queued:
    item: Item
    done: Future[Receipt] = field(default_factory=Future)


class Sequencer:
    """One per process; see the module docstring. `submit` queues an append, `wake` asks for the
    pending rows to be sequenced, `sync` waits until every entry pending when it was called is."""

    def __init__(
        self,
        engine: Engine,
        signer: NoteSigner,
        origin: str,
        *,
        clock: Callable[[], datetime],
        poll_interval: float = 0.25,
        linger: float = 0.1,
        max_batch: int = MAX_BATCH,
        layers: TileLayers | None = None,
    ) -> None:
        self._engine = engine
        self._layers = layers if layers is not None else TileLayers()
        self._signer = signer
        self._origin = origin
        self._clock = clock
        self._poll = poll_interval
        self._linger = linger
        self._last_round = float("-inf")
        self._urgent = False  # a sync() waits: no lingering
        self._max = max_batch
        self._lock = writer_lock(engine)
        self._cond = threading.Condition()
        self._queue: list[_Queued] = []
        self._requested = 0
        self._completed = 0
        self._failed: tuple[int, BaseException] | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="weighstation-sequencer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, it: Item) -> Future[Receipt]:
        queued = _Queued(it)
        with self._cond:
            if self._stopping or not self._thread.is_alive():
                raise RuntimeError("the sequencer is not running")
            self._queue.append(queued)
            self._cond.notify_all()
        return queued.done

    def wake(self) -> None:
        with self._cond:
            self._requested += 1
            self._cond.notify_all()

    def sync(self, timeout: float = 30) -> None:
        with self._cond:
            self._urgent = True
            self._requested += 1
            ticket = self._requested
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._completed >= ticket or self._stopping, timeout):
                raise TimeoutError("the sequencer did not finish a round in time")
            if self._failed is not None and self._failed[0] >= ticket:
                raise self._failed[1]

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(
                        lambda: self._stopping or bool(self._queue) or self._requested > self._completed,
                        self._poll,
                    )
                    if self._stopping:
                        return
                    # Wakes (rows other transactions committed) coalesce for up to `linger` after the
                    # last round: under load a step then takes dozens of rows for one signature and one
                    # commit instead of a few, at a bounded cost in entry-to-checkpoint latency. Appends
                    # waiting for their receipts and sync() callers do not wait.
                    rest = self._last_round + self._linger - time.monotonic()
                    if rest > 0 and not self._queue and not self._urgent:
                        self._cond.wait_for(lambda: self._stopping or bool(self._queue) or self._urgent, rest)
                        if self._stopping:
                            return
                    self._urgent = False
                    self._last_round = time.monotonic()
                    target = self._requested
                failure: BaseException | None = None
                try:
                    self._drain()
                except (SQLAlchemyError, PkiError, TlogError) as exc:
                    # Nothing acknowledged is lost: the transaction rolled back and its callers were told.
                    log.exception("sequencing failed")
                    failure = exc
                with self._cond:
                    self._completed = max(self._completed, target)
                    if failure is not None:
                        self._failed = (target, failure)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._stopping = True
                left, self._queue = self._queue, []
                self._cond.notify_all()
            for queued in left:
                queued.done.set_exception(RuntimeError("the sequencer stopped before logging the entry"))

    def _has_pending(self) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(PENDING.c.id).limit(1)).first() is not None

    def _drain(self) -> None:
        """Steps until the queue is empty and no pending row is left (as of the round's start)."""
        while True:
            with self._cond:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            # A cheap read first: an idle poll must not take the write lock.
            if not batch and not self._has_pending():
                return
            try:
                step = self._step(batch)
            except BaseException as exc:
                for queued in batch:
                    if not queued.done.done():
                        queued.done.set_exception(exc)
                raise
            if not batch and step.pending < self._max:
                return

    def _step(self, batch: list[_Queued]) -> Step:
        items = [q.item for q in batch]
        with self._lock(), self._engine.begin() as conn:
            step = sequence_step(conn, self._signer, self._origin, items, now=self._clock(), limit=self._max)
        # Committed: now (and only now) the entries are durable and can be acknowledged.
        if batch:
            with self._engine.connect() as conn:
                answers = receipts(conn, items, step.placed, step, self._layers)
            for queued, receipt in zip(batch, answers, strict=True):
                queued.done.set_result(receipt)
        return step
