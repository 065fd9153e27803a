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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from pki.errors import PkiError
from provision.db import writer_lock
from provision.tables import LogCheckpoint, LogEntry, LogPending, LogState, LogTile
from tlog.checkpoint import Checkpoint, sign_checkpoint
from tlog.errors import TileNotInTree, TlogError
from tlog.merkle import HASH_SIZE, MerkleTree, inclusion_proof, leaf_hash, node_hash, root_at
from tlog.note import NoteSigner
from tlog.tiles import TILE_HEIGHT, TILE_WIDTH, TiledSubtrees, TileId

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


def fetch_tile(conn: Connection, level: int, index: int) -> bytes | None:
    return conn.execute(
        select(TILES.c.hashes).where(TILES.c.level == level, TILES.c.idx == index)
    ).scalar_one_or_none()


def tile_reader(
    conn: Connection, overlay: dict[tuple[int, int], bytes] | None = None
) -> Callable[[TileId], bytes]:
    """Tile bytes for `TiledSubtrees`. A stored tile may have grown past the width asked for (the
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
    for start in range(0, len(wanted), _CHUNK):
        rows = conn.execute(
            select(ENTRIES.c.leaf_hash, ENTRIES.c.idx, ENTRIES.c.checkpoint_size).where(
                ENTRIES.c.leaf_hash.in_(wanted[start : start + _CHUNK])
            )
        ).all()
        for h, index, size in rows:
            found[bytes(h)] = Placed(index, size)
    return found


class CachedSubtrees:
    """`SubtreeHashes` over tiles that remembers every subtree it computed and builds a subtree from
    its two halves, so the proofs of a whole batch share their work (a tile lookup only every 8 levels)."""

    def __init__(self, tiles: TiledSubtrees) -> None:
        self._tiles = tiles
        self._memo: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        return self._tiles.size

    def subtree(self, level: int, index: int) -> bytes:
        key = (level, index)
        found = self._memo.get(key)
        if found is None:
            if level % TILE_HEIGHT == 0:
                found = self._tiles.subtree(level, index)
            else:
                found = node_hash(self.subtree(level - 1, 2 * index), self.subtree(level - 1, 2 * index + 1))
            self._memo[key] = found
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
                new.append(MerkleTree(chunk).root())
        level, count = level + 1, count // TILE_WIDTH
    if inserts:
        conn.execute(insert(TILES), inserts)
    return written


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
    rows = conn.execute(
        select(PENDING.c.id, PENDING.c.entry, PENDING.c.kind, PENDING.c.created_at)
        .order_by(PENDING.c.id)
        .limit(limit)
    ).all()
    pending = [item(bytes(r.entry), r.kind, r.created_at) for r in rows]
    batch = [*pending, *queued]
    known = known_entries(conn, {i.leaf_hash for i in batch})
    fresh: list[Item] = []
    assigned: dict[bytes, int] = {}
    for it in batch:
        if it.leaf_hash not in known and it.leaf_hash not in assigned:
            assigned[it.leaf_hash] = size + len(fresh)
            fresh.append(it)
    new_size = size + len(fresh)
    step = Step(size=new_size, note=None, placed=[], pending=len(rows))
    if fresh:
        conn.execute(
            insert(ENTRIES),
            [
                {
                    "idx": size + n,
                    "leaf_hash": it.leaf_hash,
                    "entry": it.entry,
                    "kind": it.kind,
                    "checkpoint_size": new_size,
                    "created_at": it.created_at,
                }
                for n, it in enumerate(fresh)
            ],
        )
        step.tiles = _extend_tiles(conn, size, [it.leaf_hash for it in fresh])
        root = root_at(TiledSubtrees(new_size, tile_reader(conn, step.tiles)), new_size)
        step.note = sign_checkpoint(Checkpoint(origin, new_size, root), [signer])
        conn.execute(
            insert(CHECKPOINTS),
            {"size": new_size, "root_hash": root, "note": step.note.decode("utf-8"), "created_at": now},
        )
        conn.execute(
            update(STATE).where(STATE.c.id == STATE_ID).values(size=new_size, root_hash=root, updated_at=now)
        )
    if rows:
        ids = [r.id for r in rows]
        for start in range(0, len(ids), _CHUNK):
            conn.execute(delete(PENDING).where(PENDING.c.id.in_(ids[start : start + _CHUNK])))
    for it in queued:
        first = known.get(it.leaf_hash)
        step.placed.append(first or Placed(assigned[it.leaf_hash], new_size))
    return step


def receipts(
    conn: Connection, items: Sequence[Item], placed: Sequence[Placed], step: Step | None = None
) -> list[Receipt]:
    """Each entry's first receipt: the checkpoint that first covered it and the proof to it."""
    trees: dict[int, tuple[bytes, CachedSubtrees]] = {}
    overlay = step.tiles if step is not None else None
    out: list[Receipt] = []
    for it, where in zip(items, placed, strict=True):
        tree = trees.get(where.checkpoint_size)
        if tree is None:
            size = where.checkpoint_size
            note = step.note if step is not None and step.note and size == step.size else None
            tree = trees[size] = (
                note or fetch_note(conn, size),
                CachedSubtrees(TiledSubtrees(size, tile_reader(conn, overlay))),
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
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._engine = engine
        self._signer = signer
        self._origin = origin
        self._clock = clock
        self._poll = poll_interval
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
                answers = receipts(conn, items, step.placed, step)
            for queued, receipt in zip(batch, answers, strict=True):
                queued.done.set_result(receipt)
        return step
