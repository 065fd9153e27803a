"""The transparency log as the service uses it: the log key, appends with receipts, the read side
(checkpoint, tiles, entry bundles, entries, proofs) and the entries that record certificate events.

The log key (Ed25519 by default, EC P-256 selectable) is created once through the key backend, so it
can live in OpenBao Transit, under a database lock (an advisory lock on PostgreSQL; SQLite's single
writer otherwise), together with the sequencer row and the signed empty checkpoint. Sequencing itself
is `provision.sequencer`.

Certificate events are not appended on the issuance hot path: `certificate_issued` and
`certificate_revoked` give a `tlog_pending` row that the caller writes in the same transaction as the
certificate, so no committed event can be missed; the sequencer logs it shortly after.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, insert, select, text, update
from sqlmodel import SQLModel

from pki.signer import KeyAlgorithm, KeyBackend
from provision import audit
from provision.audit import Actor
from provision.sequencer import (
    CHECKPOINTS,
    ENTRIES,
    PENDING,
    STATE,
    STATE_ID,
    LogNotReady,
    Receipt,
    Sequencer,
    StoredSubtrees,
    TileLayers,
    item,
    tile_reader,
)
from provision.tables import AuditEvent
from tlog.checkpoint import Checkpoint, sign_checkpoint
from tlog.errors import IndexOutOfRange, SizeBeyondTree, TileNotInTree, TlogError
from tlog.merkle import EMPTY_ROOT, consistency_proof, inclusion_proof
from tlog.note import NoteSigner, VerifierKey
from tlog.tiles import MAX_ENTRY_BYTES, BundleId, encode_entry_bundle, parse_tile_path

_LOCK = 0x7765_746C  # PostgreSQL advisory lock id for creating the log
_AUDIT = SQLModel.metadata.tables[AuditEvent.__tablename__]
LOG_KEY_ALGORITHMS = (KeyAlgorithm.ED25519, KeyAlgorithm.EC_P256)
MAX_KIND = 64

ISSUED = "certificate.issued"
REVOKED = "certificate.revoked"


class LogConfigurationError(RuntimeError):
    """The configured log does not match the stored one (e.g. another origin): refuse to start."""


class EntryNotFound(TlogError):
    """No entry at that index in the published tree."""

    code = "entry-not-found"
    kind = "not_found"


class LeafNotFound(TlogError):
    """No entry with that leaf hash is in the log (or not yet in the tree of the size asked)."""

    code = "leaf-not-in-log"
    kind = "not_found"


class EntryTooLarge(TlogError):
    """An entry must fit an entry bundle's 16-bit length prefix; a kind is at most 64 characters."""

    code = "entry-too-large"


@dataclass(frozen=True)
class EntryView:
    index: int
    leaf_hash: bytes
    entry: bytes
    kind: str
    checkpoint_size: int
    created_at: datetime


@dataclass(frozen=True)
class InclusionView:
    index: int
    size: int
    leaf_hash: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class TileView:
    data: bytes
    immutable: bool  # a full tile or bundle: its bytes never change


def _time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def pending_row(entry: bytes, kind: str, at: datetime) -> tuple[Table, dict[str, Any]]:
    """A `tlog_pending` row for the caller's transaction."""
    return PENDING, {"entry": entry, "kind": kind, "created_at": at}


def event(kind: str, document: dict[str, Any], at: datetime) -> tuple[Table, dict[str, Any]]:
    """A pending row for any other event the authority logs (attestation results, dispatch decisions):
    canonical JSON with its kind and the time it was logged."""
    return pending_row(_canonical({**document, "kind": kind, "logged_at": _time(at)}), kind, at)


def certificate_issued(
    *,
    serial: str,
    issuer: str,
    subject: str,
    profile: str,
    not_before: datetime,
    not_after: datetime,
    certificate_der: bytes,
    renewed_from: str | None,
    at: datetime,
) -> tuple[Table, dict[str, Any]]:
    document = {
        "kind": ISSUED,
        "serial": serial,
        "issuer": issuer,
        "subject": subject,
        "profile": profile,
        "not_before": _time(not_before),
        "not_after": _time(not_after),
        "certificate_sha256": hashlib.sha256(certificate_der).hexdigest(),
        "renewed_from": renewed_from,
        "logged_at": _time(at),
    }
    return pending_row(_canonical(document), ISSUED, at)


def certificate_revoked(
    *,
    serial: str,
    issuer: str,
    subject: str,
    revoked_at: datetime,
    reason: str,
    certificate_der: bytes,
) -> tuple[Table, dict[str, Any]]:
    document = {
        "kind": REVOKED,
        "serial": serial,
        "issuer": issuer,
        "subject": subject,
        "revoked_at": _time(revoked_at),
        "reason": reason,
        "certificate_sha256": hashlib.sha256(certificate_der).hexdigest(),
    }
    return pending_row(_canonical(document), REVOKED, revoked_at)


# Built once: the proof endpoints run these on every request.
_LATEST = select(CHECKPOINTS.c.size).order_by(CHECKPOINTS.c.size.desc()).limit(1)
_INDEX_OF = select(ENTRIES.c.idx).where(ENTRIES.c.leaf_hash == bindparam("leaf"))


def _latest_size(conn: Connection) -> int:
    size = conn.execute(_LATEST).scalar()
    if size is None:
        raise LogNotReady("the transparency log has not been created")
    return int(size)


class TransparencyLog:
    def __init__(
        self,
        engine: Engine,
        keys: KeyBackend,
        *,
        origin: str,
        algorithm: KeyAlgorithm = KeyAlgorithm.ED25519,
        clock: Callable[[], datetime],
        poll_interval: float = 0.25,
        linger: float = 0.1,
    ) -> None:
        if algorithm not in LOG_KEY_ALGORITHMS:
            raise LogConfigurationError(f"the log key is Ed25519 or EC P-256, not {algorithm}")
        self._engine = engine
        self._keys = keys
        self.origin = origin
        self._algorithm = algorithm
        self._clock = clock
        self._poll = poll_interval
        self._linger = linger
        self._signer: NoteSigner | None = None
        self._sequencer: Sequencer | None = None
        # Inner subtrees of committed tiles, shared by the read side and this process's receipts.
        self._layers = TileLayers()

    # -- life cycle ------------------------------------------------------------------------------

    def ensure(self, actor: Actor) -> None:
        """Create the log (key, sequencer row, empty checkpoint) unless it exists."""
        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK})
            else:
                # Take SQLite's write lock before reading, so two processes cannot both create it.
                conn.execute(update(STATE).where(STATE.c.id == STATE_ID).values(id=STATE.c.id))
            origin = conn.execute(select(STATE.c.origin).where(STATE.c.id == STATE_ID)).scalar()
            if origin is None:
                now = self._clock()
                signer = NoteSigner.create(self.origin, self._keys.create(self._algorithm, "log"))
                note = sign_checkpoint(Checkpoint(self.origin, 0, EMPTY_ROOT), [signer])
                conn.execute(
                    insert(STATE),
                    {
                        "id": STATE_ID,
                        "origin": self.origin,
                        "key_ref": signer.signer.key_ref,
                        "size": 0,
                        "root_hash": EMPTY_ROOT,
                        "updated_at": now,
                    },
                )
                conn.execute(
                    insert(CHECKPOINTS),
                    {"size": 0, "root_hash": EMPTY_ROOT, "note": note.decode("utf-8"), "created_at": now},
                )
                conn.execute(
                    insert(_AUDIT),
                    audit.values(
                        actor,
                        "log-key.create",
                        at=now,
                        target=str(signer.verifier_key),
                        detail={"origin": self.origin, "algorithm": str(self._algorithm)},
                    ),
                )
            elif origin != self.origin:
                raise LogConfigurationError(
                    f"the database holds the log {origin!r}; the configured origin is {self.origin!r}"
                )

    def start(self) -> bool:
        """Load the log key and start this process's sequencer; False if the log was never created."""
        with self._engine.connect() as conn:
            row = conn.execute(select(STATE.c.origin, STATE.c.key_ref).where(STATE.c.id == STATE_ID)).first()
        if row is None:
            return False
        if row.origin != self.origin:
            raise LogConfigurationError(
                f"the database holds the log {row.origin!r}; the configured origin is {self.origin!r}"
            )
        self._signer = NoteSigner.create(self.origin, self._keys.load(row.key_ref))
        self._sequencer = Sequencer(
            self._engine,
            self._signer,
            self.origin,
            clock=self._clock,
            poll_interval=self._poll,
            linger=self._linger,
            layers=self._layers,
        )
        self._sequencer.start()
        return True

    def close(self) -> None:
        if self._sequencer is not None:
            self._sequencer.close()

    def _running(self) -> Sequencer:
        if self._sequencer is None:
            raise LogNotReady("the transparency log is not running in this process")
        return self._sequencer

    # -- writes ----------------------------------------------------------------------------------

    def submit(self, entry: bytes, kind: str) -> Future[Receipt]:
        """Queue an append; the future gives its receipt once the batch that holds it is committed.
        An entry already in the log gets its first receipt (the sequencer dedups by leaf hash)."""
        if len(entry) > MAX_ENTRY_BYTES or not 0 < len(kind) <= MAX_KIND:
            raise EntryTooLarge(f"entries are at most {MAX_ENTRY_BYTES} bytes, kinds 1..{MAX_KIND} chars")
        return self._running().submit(item(entry, kind, self._clock()))

    def append(self, entry: bytes, kind: str, *, timeout: float = 30) -> Receipt:
        return self.submit(entry, kind).result(timeout)

    def wake(self) -> None:
        """Entries were written to `tlog_pending`: sequence them soon."""
        if self._sequencer is not None:
            self._sequencer.wake()

    def sync(self, timeout: float = 30) -> None:
        """Return once everything pending when called is in the log."""
        self._running().sync(timeout)

    # -- reads -----------------------------------------------------------------------------------

    def verifier_key(self) -> VerifierKey:
        if self._signer is None:
            raise LogNotReady("the transparency log is not running in this process")
        return self._signer.verifier_key

    def checkpoint(self) -> bytes:
        """The latest signed checkpoint."""
        with self._engine.connect() as conn:
            note = conn.execute(
                select(CHECKPOINTS.c.note).order_by(CHECKPOINTS.c.size.desc()).limit(1)
            ).scalar()
        if note is None:
            raise LogNotReady("the transparency log has not been created")
        return str(note).encode("utf-8")

    def checkpoints(self) -> list[bytes]:
        """Every checkpoint, oldest first."""
        with self._engine.connect() as conn:
            notes = conn.execute(select(CHECKPOINTS.c.note).order_by(CHECKPOINTS.c.size)).scalars().all()
        return [str(n).encode("utf-8") for n in notes]

    def tile(self, path: str) -> TileView:
        """A hash tile or an entry bundle by its c2sp tlog-tiles path (relative: `tile/...`)."""
        ident = parse_tile_path(path)
        with self._engine.connect() as conn:
            size = _latest_size(conn)
            tile = ident.tile if isinstance(ident, BundleId) else ident
            start, end = tile.leaf_range
            if end > size:
                raise TileNotInTree(f"{ident.path} is not in the published tree of size {size}")
            if isinstance(ident, BundleId):
                entries = conn.execute(
                    select(ENTRIES.c.entry)
                    .where(ENTRIES.c.idx >= start, ENTRIES.c.idx < end)
                    .order_by(ENTRIES.c.idx)
                ).scalars()
                data = encode_entry_bundle([bytes(e) for e in entries])
            else:
                data = tile_reader(conn)(ident)
        return TileView(data, immutable=not ident.is_partial)

    def entry(self, index: int) -> EntryView:
        with self._engine.connect() as conn:
            size = _latest_size(conn)
            row = None
            if 0 <= index < size:
                row = conn.execute(select(ENTRIES).where(ENTRIES.c.idx == index)).first()
        if row is None:
            raise EntryNotFound(f"no entry at index {index} (the published tree has {size})")
        return EntryView(
            index=row.idx,
            leaf_hash=bytes(row.leaf_hash),
            entry=bytes(row.entry),
            kind=row.kind,
            checkpoint_size=row.checkpoint_size,
            created_at=row.created_at,
        )

    def size(self) -> int:
        with self._engine.connect() as conn:
            return _latest_size(conn)

    def _tree(self, conn: Connection, size: int | None) -> StoredSubtrees:
        latest = _latest_size(conn)
        if size is None:
            size = latest
        if not 0 <= size <= latest:
            raise SizeBeyondTree(f"tree size {size} is beyond the published tree ({latest} entries)")
        return StoredSubtrees(size, tile_reader(conn), self._layers)

    def inclusion(self, index: int, size: int | None = None) -> InclusionView:
        """The proof that the entry at `index` is in the tree of `size` (default: the latest)."""
        with self._engine.connect() as conn:
            tree = self._tree(conn, size)
            proof = inclusion_proof(tree, index, tree.size)
            leaf = tree.subtree(0, index)  # the level-0 tile the proof just read holds the leaf hashes
        return InclusionView(index=index, size=tree.size, leaf_hash=leaf, proof=proof)

    def inclusion_by_hash(self, leaf: bytes, size: int | None = None) -> InclusionView:
        with self._engine.connect() as conn:
            tree = self._tree(conn, size)
            index = conn.execute(_INDEX_OF, {"leaf": leaf}).scalar()
            if index is None:
                raise LeafNotFound("no entry with that leaf hash is in the log")
            if index >= tree.size:
                raise IndexOutOfRange(f"the entry is at index {index}, not in the tree of size {tree.size}")
            proof = inclusion_proof(tree, index, tree.size)
        return InclusionView(index=index, size=tree.size, leaf_hash=leaf, proof=proof)

    def consistency(self, first: int, second: int | None = None) -> tuple[int, int, tuple[bytes, ...]]:
        """(first, second, proof) that the tree of `first` entries is a prefix of the one of `second`."""
        with self._engine.connect() as conn:
            tree = self._tree(conn, second)
            return first, tree.size, consistency_proof(tree, first, tree.size)
