"""The transparency log's storage and sequencer on both databases (SQLite file and PostgreSQL): receipts
that verify with the published key, dedup, consistency of every checkpoint with every later one, tiles
equal to those computed from the entries, certificate events, and durability across a SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from pki.filekeys import FileKeyBackend
from pki.signer import KeyAlgorithm
from provision.audit import Actor
from provision.db import make_engine
from provision.migrate import upgrade_to_head
from provision.sequencer import ENTRIES, PENDING, STATE, Receipt
from provision.tlog_store import TransparencyLog, certificate_revoked, pending_row
from provision.transit import TransitBackend
from tests.support.openbao import OpenBao
from tlog.checkpoint import VerifiedCheckpoint, verify_checkpoint
from tlog.merkle import MerkleTree, leaf_hash
from tlog.note import VerifierKey
from tlog.tiles import BundleId, TileId, encode_entry_bundle, encode_tile, tile_hashes, tiles_for_size

ORIGIN = "fleet.test/log"
ACTOR = Actor("tester")


def utcnow() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


def open_log(engine: Engine, keys: Path) -> TransparencyLog:
    log = TransparencyLog(
        engine, FileKeyBackend(keys, b"secret"), origin=ORIGIN, clock=utcnow, poll_interval=0.05
    )
    log.ensure(ACTOR)
    assert log.start()
    return log


@pytest.fixture
def log(engine: Engine, tmp_path: Path) -> Iterator[TransparencyLog]:
    opened = open_log(engine, tmp_path / "keys")
    yield opened
    opened.close()


def verified(note: bytes, key: VerifierKey) -> VerifiedCheckpoint:
    return verify_checkpoint(note, [key], origin=ORIGIN)


def check_receipt(receipt: Receipt, entry: bytes, key: VerifierKey) -> VerifiedCheckpoint:
    assert receipt.leaf_hash == leaf_hash(entry)
    checkpoint = verified(receipt.checkpoint, key)
    checkpoint.verify_inclusion(receipt.leaf_hash, receipt.index, receipt.proof)
    return checkpoint


def check_all_consistent(log: TransparencyLog, key: VerifierKey) -> list[VerifiedCheckpoint]:
    checkpoints = [verified(note, key) for note in log.checkpoints()]
    sizes = [c.size for c in checkpoints]
    assert sizes == sorted(set(sizes)) and sizes[0] == 0
    for i, older in enumerate(checkpoints):
        for newer in checkpoints[i + 1 :]:
            first, second, proof = log.consistency(older.size, newer.size)
            assert (first, second) == (older.size, newer.size)
            newer.verify_consistency(older, proof)
    return checkpoints


def test_concurrent_appends_are_batched_and_every_receipt_verifies(log: TransparencyLog) -> None:
    key = log.verifier_key()
    entries = [f"entry {i}".encode() for i in range(600)]
    futures = [log.submit(e, "test") for e in entries]
    receipts = [f.result(timeout=60) for f in futures]
    for entry, receipt in zip(entries, receipts, strict=True):
        check_receipt(receipt, entry, key)
    assert sorted(r.index for r in receipts) == list(range(600))
    assert log.size() == 600
    # One checkpoint per batch, not per entry (plus the empty tree's).
    checkpoints = check_all_consistent(log, key)
    assert 2 <= len(checkpoints) < 600
    # Every entry reads back with its leaf hash, and a proof by index or by hash matches the receipt's.
    for entry, receipt in zip(entries[::97], receipts[::97], strict=True):
        view = log.entry(receipt.index)
        assert (view.entry, view.leaf_hash, view.kind) == (entry, receipt.leaf_hash, "test")
        by_hash = log.inclusion_by_hash(receipt.leaf_hash)
        latest = verified(log.checkpoint(), key)
        latest.verify_inclusion(receipt.leaf_hash, by_hash.index, by_hash.proof)
        assert log.inclusion(receipt.index).proof == by_hash.proof


def test_the_same_entry_twice_gets_the_first_receipt(log: TransparencyLog) -> None:
    first = log.append(b"once", "test")
    log.append(b"something else", "test")
    again = log.append(b"once", "test")
    assert again == first
    # Twice in one batch: one index.
    twins = [log.submit(b"twin", "test"), log.submit(b"twin", "test")]
    a, b = (f.result(timeout=30) for f in twins)
    assert a == b
    assert log.size() == 3


def test_tiles_and_bundles_equal_those_computed_from_the_entries(log: TransparencyLog) -> None:
    entries = [f"tile entry {i}".encode() for i in range(700)]
    for start in range(0, 700, 150):  # several batches, so partial tiles are rewritten and filled
        for f in [log.submit(e, "test") for e in entries[start : start + 150]]:
            f.result(timeout=60)
    tree = MerkleTree(leaf_hash(e) for e in entries)
    size = log.size()
    assert size == 700
    tiles = list(tiles_for_size(size))
    assert {(t.level, t.width) for t in tiles} == {(0, 256), (0, 188), (1, 2)}
    for tile in tiles:
        view = log.tile(tile.path)
        assert view.data == encode_tile(tile_hashes(tree, tile)), tile.path
        assert view.immutable is not tile.is_partial
        if tile.level == 0:
            bundle = BundleId(tile.index, tile.width)
            start = tile.index * 256
            assert log.tile(bundle.path).data == encode_entry_bundle(entries[start : start + tile.width])
    # A partial tile of an older, smaller tree is the prefix of the stored one.
    assert log.tile("tile/0/002.p/5").data == encode_tile(tile_hashes(tree, TileId(0, 2, 5)))
    assert verified(log.checkpoint(), log.verifier_key()).root_hash == tree.root()


def test_certificate_events_written_with_the_change_are_logged(log: TransparencyLog, engine: Engine) -> None:
    now = utcnow()
    table, row = certificate_revoked(
        serial="abc1",
        issuer="ca1",
        subject="spiffe://fleet.test/truck/t1",
        revoked_at=now,
        reason="key_compromise",
        certificate_der=b"der",
    )
    other_table, other = pending_row(b"plain event", "test", now)
    with engine.begin() as conn:
        conn.execute(table.insert(), row)
        conn.execute(other_table.insert(), other)
    log.sync()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(PENDING)).scalar() == 0
        kinds = dict(conn.execute(select(ENTRIES.c.kind, ENTRIES.c.entry)).all())
    logged = json.loads(kinds["certificate.revoked"])
    assert logged["serial"] == "abc1" and logged["reason"] == "key_compromise"
    assert kinds["test"] == b"plain event"
    check_all_consistent(log, log.verifier_key())


def test_wakes_coalesce_into_few_checkpoints_and_sync_does_not_linger(engine: Engine, tmp_path: Path) -> None:
    """Rows committed in a burst, each followed by a wake, share a step (and a signature) for up to the
    linger after the previous round; a caller of sync() is answered without waiting it out."""
    log = TransparencyLog(
        engine, FileKeyBackend(tmp_path / "keys", b"secret"), origin=ORIGIN, clock=utcnow, linger=1.0
    )
    log.ensure(ACTOR)
    assert log.start()
    try:
        log.sync()
        before = len(log.checkpoints())
        for i in range(20):
            table, row = pending_row(f"burst {i}".encode(), "test", utcnow())
            with engine.begin() as conn:
                conn.execute(table.insert(), row)
            log.wake()
        log.sync()
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(PENDING)).scalar() == 0
        # One round may start on the first wake; the other 19 rows wait for the next.
        assert len(log.checkpoints()) - before <= 2
        table, row = pending_row(b"after the burst", "test", utcnow())
        with engine.begin() as conn:
            conn.execute(table.insert(), row)
        log.wake()
        started = time.monotonic()
        log.sync()
        assert time.monotonic() - started < 0.9  # not the 1 s linger
        check_all_consistent(log, log.verifier_key())
    finally:
        log.close()


def test_a_second_process_shares_the_log_and_its_key(engine: Engine, tmp_path: Path) -> None:
    first = open_log(engine, tmp_path / "keys")
    second = open_log(engine, tmp_path / "keys")  # ensure() again finds the log and keeps its key
    try:
        assert str(first.verifier_key()) == str(second.verifier_key())
        futures = [(first if i % 2 else second).submit(f"both {i}".encode(), "test") for i in range(200)]
        receipts = [f.result(timeout=60) for f in futures]
        assert sorted(r.index for r in receipts) == list(range(200))
        check_all_consistent(first, first.verifier_key())
    finally:
        first.close()
        second.close()


_APPENDER = textwrap.dedent(
    """
    import sys, threading
    from datetime import UTC, datetime
    from pathlib import Path
    from pki.filekeys import FileKeyBackend
    from pki.signer import KeyAlgorithm
    from provision.audit import Actor
    from provision.db import make_engine
    from provision.tlog_store import TransparencyLog

    url, keys = sys.argv[1], sys.argv[2]
    log = TransparencyLog(make_engine(url), FileKeyBackend(Path(keys), b"secret"),
                          origin="fleet.test/log", clock=lambda: datetime.now(UTC))
    log.ensure(Actor("appender"))
    log.start()
    out = threading.Lock()

    def work(worker):
        n = 0
        while True:
            entry = f"w{worker}-{n}".encode()
            receipt = log.append(entry, "test")
            with out:
                print(entry.decode(), receipt.index, receipt.checkpoint.hex(), flush=True)
            n += 1

    for w in range(8):
        threading.Thread(target=work, args=(w,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_acknowledged_appends_survive_sigkill(database_url: str, engine: Engine, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    acknowledged: dict[bytes, int] = {}
    seen_checkpoints: set[bytes] = set()
    for _round in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-c", _APPENDER, database_url, str(keys)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for _ in range(400):
            line = proc.stdout.readline()
            assert line, "the appender died"
            name, at, note_hex = line.split()
            acknowledged[name.encode()] = int(at)
            seen_checkpoints.add(bytes.fromhex(note_hex))
        proc.send_signal(signal.SIGKILL)  # mid-load: appends in flight are never acknowledged
        proc.wait()
    # Restart: everything acknowledged is there, at its index, provable to the latest checkpoint, and
    # the latest checkpoint is consistent with every one handed out before the kills.
    log = open_log(engine, keys)
    try:
        key = log.verifier_key()
        latest = verified(log.checkpoint(), key)
        for entry, index in acknowledged.items():
            proof = log.inclusion_by_hash(leaf_hash(entry))
            assert proof.index == index
            latest.verify_inclusion(leaf_hash(entry), index, proof.proof)
        after = log.append(b"after the restart", "test")
        newest = check_receipt(after, b"after the restart", key)
        for note in seen_checkpoints:
            older = verified(note, key)
            newest.verify_consistency(older, log.consistency(older.size, newest.size)[2])
        check_all_consistent(log, key)
    finally:
        log.close()


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.ED25519, KeyAlgorithm.EC_P256])
def test_log_key_lives_in_transit(openbao: OpenBao, tmp_path: Path, algorithm: KeyAlgorithm) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ws.db'}")
    upgrade_to_head(engine)
    backend = TransitBackend.connect(openbao.addr, openbao.token, timeout=5.0)
    log = TransparencyLog(
        engine, backend, origin=ORIGIN, algorithm=algorithm, clock=utcnow, poll_interval=0.05
    )
    try:
        log.ensure(ACTOR)
        assert log.start()
        with engine.connect() as conn:
            assert str(conn.execute(select(STATE.c.key_ref)).scalar_one()).startswith("transit:")
        key = log.verifier_key()
        entries = [f"transit {i}".encode() for i in range(50)]
        receipts = [f.result(timeout=60) for f in [log.submit(e, "test") for e in entries]]
        for entry, receipt in zip(entries, receipts, strict=True):
            check_receipt(receipt, entry, key)
        check_all_consistent(log, key)
    finally:
        log.close()
        backend.close()
        engine.dispose()
