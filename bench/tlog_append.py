"""Transparency-log appends through the store's real path, and inclusion proofs at 1M entries, each beside
the raw SHA-256 rate of the same data measured in the same run.

    .venv/bin/python -m bench.tlog_append [--seconds 8] [--warmup 2] [--rounds 1] [--replicas 2]
        [--sqlite-replicas 1] [--only sqlite pg proof ...] [--proof-size 1000000] [--proofs 2000]
        [--window 8192]

Append path (what `POST /v1/certificates` does for its log entry): a replica process holds a
`TransparencyLog` with its sequencer thread and a `provision.writer.BatchWriter`; producer threads hand it
`tlog_pending` rows (the certificate-issued event format, ~390 bytes) and, once the writer's commit holds
them, wake the sequencer, which turns them into entries, tiles and one signed checkpoint per batch in one
transaction. SQLite runs `--sqlite-replicas` processes on one file (1: the default single-worker server);
PostgreSQL runs `--replicas` processes on one scratch database, each producing and sequencing (the
sequencer row lock decides who sequences). `--rounds N` repeats each database's phases on a fresh log and
prints the medians.

Two phases per database:

* saturate: two producer threads per replica commit 1,024 pending rows at a time while fewer than
  `--window` entries wait (pending rows not yet sequenced, all replicas); throughput = growth of the
  signed tree during the measured window;
* paced: the producers offer the target rate (10,000/s SQLite, 3,000/s PostgreSQL), open loop: each
  commit carries whatever the schedule owes by then (at most 1,024 rows), so a slow commit is caught up.

Entry -> signed checkpoint latency: an observer in this process polls the sequencer row (`tlog_state.size`,
committed with the checkpoint) every millisecond; an entry's latency is the first time a tree covering its
index is seen minus the time its producer made it (`created_at`). p50/p99 over the entries made inside the
measured window. CPU (from /proc) of the replica processes, of the PostgreSQL backends serving this
database, and of this observer is sampled at the window's edges.

Proofs: a 1M-entry log built once through the same path (pending rows + sequencer, on SQLite) in a scratch
file, cached under bench/out/; proofs timed as served (`TransparencyLog.inclusion` by index and
`inclusion_by_hash` by leaf hash: each reads the latest checkpoint size and the tiles it needs, unless the
process's LRU of 256 layered tiles has them, which holds the upper levels but mostly not a random level-0
tile), at random indices, and every proof checked with `tlog.merkle.verify_inclusion` outside the
timing; at least 3 rounds, medians reported, with the thread CPU time per proof beside the wall time (the
box's other load shows up only in the latter).

Baseline: raw `hashlib.sha256(0x00 || entry)` over the same entries (appends), and the same number of
RFC 9162 node hashes as the proof (proofs). Results: bench/README.md ("Transparency log") and bench/out/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, text

from bench.loadgen import percentile, tree_cpu_seconds
from pki.filekeys import FileKeyBackend
from provision.audit import Actor
from provision.db import make_engine
from provision.migrate import upgrade_to_head
from provision.sequencer import CHECKPOINTS, ENTRIES, PENDING, STATE, STATE_ID
from provision.tlog_store import TransparencyLog, pending_row
from provision.writer import BatchWriter
from tests.support.postgres import scratch_database
from tlog.checkpoint import verify_checkpoint
from tlog.merkle import leaf_hash, verify_inclusion

ORIGIN = "bench.test/log"
KIND = "certificate.issued"
PASSPHRASE = b"bench"
TICK_S = 0.005
SQLITE_TARGET = 10_000
PG_TARGET = 3_000
OUT = Path(__file__).parent / "out"

# The certificate-issued event as `provision.tlog_store.certificate_issued` writes it; the serial and the
# digest vary per entry so every entry is distinct.
_TEMPLATE = json.dumps(
    {
        "certificate_sha256": "%(digest)s",
        "issuer": "6f1d3c0a9b2e4f5d8c7a6b5e4d3c2b1a0f9e8d7c6b5a49382716051423324150",
        "kind": KIND,
        "logged_at": "2026-11-24T02:00:00Z",
        "not_after": "2026-11-25T02:00:00Z",
        "not_before": "2026-11-24T01:59:00Z",
        "profile": "truck",
        "renewed_from": None,
        "serial": "%(serial)s",
        "subject": "spiffe://bench.test/fleet/f1/truck/t-%(serial)s",
    },
    sort_keys=True,
    separators=(",", ":"),
)


def make_entry(tag: str, n: int) -> bytes:
    serial = f"{tag}{n:016x}"
    digest = hashlib.sha256(serial.encode()).hexdigest()
    return (_TEMPLATE % {"serial": serial, "digest": digest}).encode()


def raw_sha256_rate(entries: list[bytes], seconds: float = 0.5) -> float:
    """Leaf hashes per second, raw hashlib over the same entries (median of 3 passes)."""
    rates = []
    for _ in range(3):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 3:
            for e in entries:
                hashlib.sha256(b"\x00" + e).digest()
            done += len(entries)
        rates.append(done / (time.perf_counter() - started))
    return statistics.median(rates)


# --- the replica process --------------------------------------------------------------------------


@dataclass
class ReplicaSpec:
    url: str
    keys: str
    tag: str
    mode: str  # saturate | paced
    rate: float  # entries/s this replica offers when paced
    window: int  # max unsequenced entries (all replicas) when saturating
    producers: int = 2
    chunk: int = 1024  # rows per producer commit (the issuance writer commits up to 256 requests at once)


def _backlog(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(PENDING)).scalar_one())


def _produce(
    spec: ReplicaSpec,
    worker: int,
    engine: Engine,
    log: TransparencyLog,
    writer: BatchWriter,
    stop: threading.Event,
) -> int:
    """Commit pending rows through the group-commit writer, then wake the sequencer; returns the count."""
    tag = f"{spec.tag}{worker:x}"
    made = 0
    paced = spec.mode == "paced"
    share = spec.rate / spec.producers
    started = time.monotonic()
    while not stop.is_set():
        if paced:
            # Open loop: whatever the schedule owes by now (a slow commit is caught up, not dropped).
            count = min(int(share * (time.monotonic() - started)) - made, spec.chunk)
            if count <= 0:
                time.sleep(TICK_S)
                continue
        else:
            if _backlog(engine) >= spec.window:
                time.sleep(0.001)
                continue
            count = spec.chunk
        now = datetime.now(UTC)
        rows = [pending_row(make_entry(tag, made + i), KIND, now) for i in range(count)]
        writer.write(rows)  # returns once committed: the entries are durable
        made += count
        log.wake()
    return made


def replica_main(raw: str) -> int:
    spec = ReplicaSpec(**json.loads(raw))
    engine = make_engine(spec.url)
    log = TransparencyLog(
        engine, FileKeyBackend(Path(spec.keys), PASSPHRASE), origin=ORIGIN, clock=lambda: datetime.now(UTC)
    )
    if not log.start():
        raise SystemExit("the log does not exist")
    writer = BatchWriter(engine)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    stop = threading.Event()
    counts: list[int] = []
    threads = [
        threading.Thread(target=lambda w=w: counts.append(_produce(spec, w, engine, log, writer, stop)))
        for w in range(spec.producers)
    ]
    for t in threads:
        t.start()
    sys.stdin.readline()  # "stop"
    stop.set()
    for t in threads:
        t.join()
    log.sync(120)
    writer.close()
    log.close()
    print(json.dumps({"produced": sum(counts)}), flush=True)
    return 0


# --- the observer and the phases -------------------------------------------------------------------


@dataclass
class Observer:
    """Polls the signed tree size; `seen[i] = (wall time, size)` each time it grows."""

    engine: Engine
    seen: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        query = select(STATE.c.size).where(STATE.c.id == STATE_ID)
        with self.engine.connect() as conn:
            last = -1
            while not self._stop.is_set():
                size = int(conn.execute(query).scalar_one())
                conn.rollback()  # a fresh snapshot for the next poll
                if size != last:
                    self.seen.append((time.time(), size))
                    last = size
                time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def size_at(self, when: float) -> int:
        size = 0
        for t, s in self.seen:
            if t > when:
                break
            size = s
        return size


def _pg_backend_pids(engine: Engine) -> list[int]:
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        return [int(p) for p in rows]


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


@contextmanager
def replicas(specs: list[ReplicaSpec]) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.tlog_append", "--replica", json.dumps(s.__dict__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for s in specs
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a replica did not start")
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def run_phase(
    engine: Engine,
    url: str,
    keys: Path,
    *,
    name: str,
    count: int,
    mode: str,
    rate: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    specs = [
        ReplicaSpec(
            url=url, keys=str(keys), tag=f"{mode[0]}{r}", mode=mode, rate=rate / count, window=args.window
        )
        for r in range(count)
    ]
    observer = Observer(engine)
    observer.start()
    with replicas(specs) as procs:
        pids = [p.pid for p in procs]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        time.sleep(args.warmup)
        backends = _pg_backend_pids(engine)
        t0 = time.time()
        cpu0 = (tree_cpu_seconds(pids), tree_cpu_seconds(backends), _own_cpu())
        time.sleep(args.seconds)
        t1 = time.time()
        cpu1 = (tree_cpu_seconds(pids), tree_cpu_seconds(backends), _own_cpu())
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("stop\n")
            p.stdin.flush()
        produced = 0
        for p in procs:
            assert p.stdout is not None
            produced += json.loads(p.stdout.readline())["produced"]
            p.wait(timeout=120)
        if any(p.returncode for p in procs):
            raise RuntimeError("a replica failed")
    time.sleep(0.05)
    observer.stop()
    wall = t1 - t0
    size0, size1 = observer.size_at(t0), observer.size_at(t1)
    made_from = datetime.fromtimestamp(t0, UTC)
    made_to = datetime.fromtimestamp(t1, UTC)
    with engine.connect() as conn:
        made = conn.execute(
            select(ENTRIES.c.idx, ENTRIES.c.created_at).where(
                ENTRIES.c.created_at >= made_from, ENTRIES.c.created_at < made_to
            )
        ).all()
        batches = conn.execute(
            select(func.count())
            .select_from(CHECKPOINTS)
            .where(CHECKPOINTS.c.created_at >= made_from, CHECKPOINTS.c.created_at < made_to)
        ).scalar_one()
        left = conn.execute(select(func.count()).select_from(PENDING)).scalar_one()
    latencies = sorted(_latency(observer.seen, idx, created.timestamp()) for idx, created in made)
    throughput = (size1 - size0) / wall
    return {
        "phase": name,
        "replicas": count,
        "mode": mode,
        "offered_per_s": rate if mode == "paced" else None,
        "entries_per_s": throughput,
        "entries_made_in_window": len(made),
        "checkpoints_in_window": int(batches),
        "mean_batch": (size1 - size0) / max(1, int(batches)),
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1e3,
        "replica_cores": (cpu1[0] - cpu0[0]) / wall,
        "postgres_cores": (cpu1[1] - cpu0[1]) / wall,
        "observer_cores": (cpu1[2] - cpu0[2]) / wall,
        "produced": produced,
        "pending_left": int(left),
        "seconds": wall,
    }


def _latency(seen: list[tuple[float, int]], index: int, created: float) -> float:
    # The first observation of a tree that holds the entry (seen is sorted by time and by size).
    lo, hi = 0, len(seen)
    while lo < hi:
        mid = (lo + hi) // 2
        if seen[mid][1] > index:
            hi = mid
        else:
            lo = mid + 1
    if lo == len(seen):
        return float("inf")
    return seen[lo][0] - created


def new_log(url: str, keys: Path) -> Engine:
    engine = make_engine(url)
    upgrade_to_head(engine)
    log = TransparencyLog(
        engine, FileKeyBackend(keys, PASSPHRASE), origin=ORIGIN, clock=lambda: datetime.now(UTC)
    )
    log.ensure(Actor("bench"))
    return engine


def append_runs(
    url: str, keys: Path, label: str, replicas_n: int, target: float, args: argparse.Namespace
) -> list[dict[str, Any]]:
    engine = new_log(url, keys)
    sample = [make_entry("baseline", n) for n in range(20_000)]
    try:
        runs = []
        for mode in ("saturate", "paced"):
            raw = raw_sha256_rate(sample)
            run = run_phase(
                engine, url, keys, name=f"{label}-{mode}", count=replicas_n, mode=mode, rate=target, args=args
            )
            run["raw_sha256_per_s"] = raw
            run["ratio_to_raw"] = run["entries_per_s"] / raw
            runs.append(run)
            _print_run(run, label)
        return runs
    finally:
        engine.dispose()


def _print_run(run: dict[str, Any], label: str) -> None:
    offered = f"offered {run['offered_per_s']:,.0f}/s" if run["offered_per_s"] else f"window {run['mode']}"
    print(
        f"{label:<10} {run['mode']:<8} {run['entries_per_s']:>10,.0f} entries/s  ({offered})  "
        f"p50 {run['p50_ms']:6.0f} ms  p99 {run['p99_ms']:6.0f} ms  batch {run['mean_batch']:6.0f}  "
        f"cores: replicas {run['replica_cores']:.2f} postgres {run['postgres_cores']:.2f} "
        f"observer {run['observer_cores']:.2f}  | raw SHA-256 {run['raw_sha256_per_s']:,.0f}/s "
        f"(ratio {run['ratio_to_raw']:.4f})",
        flush=True,
    )


# --- proofs at 1M --------------------------------------------------------------------------------


def build_proof_log(path: Path, size: int) -> None:
    """A log of `size` entries through pending rows and the sequencer, in a file reused by later runs."""
    stamp = path.with_suffix(".done")
    if stamp.exists() and stamp.read_text() == str(size):
        return
    for old in path.parent.glob(path.name + "*"):
        old.unlink()
    keys = path.with_suffix(".keys")
    shutil.rmtree(keys, ignore_errors=True)
    url = f"sqlite:///{path}"
    engine = new_log(url, keys)
    log = TransparencyLog(
        engine, FileKeyBackend(keys, PASSPHRASE), origin=ORIGIN, clock=lambda: datetime.now(UTC)
    )
    log.start()
    started = time.perf_counter()
    try:
        now = datetime.now(UTC)
        for start in range(0, size, 50_000):
            rows = [
                pending_row(make_entry("p", n), KIND, now)[1] for n in range(start, min(size, start + 50_000))
            ]
            with engine.begin() as conn:
                conn.execute(insert(PENDING), rows)
            log.sync(600)
            print(f"  built {log.size():,} entries ({time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        log.close()
        engine.dispose()
    stamp.write_text(str(size))


def proof_run(path: Path, size: int, n: int) -> dict[str, Any]:
    keys = path.with_suffix(".keys")
    engine = make_engine(f"sqlite:///{path}")
    log = TransparencyLog(
        engine, FileKeyBackend(keys, PASSPHRASE), origin=ORIGIN, clock=lambda: datetime.now(UTC)
    )
    try:
        log.start()
        checkpoint = verify_checkpoint(log.checkpoint(), [log.verifier_key()], origin=ORIGIN)
        if checkpoint.size != size:
            raise RuntimeError(f"the proof log has {checkpoint.size} entries, not {size}")
        rng = random.Random(7)
        indices = [rng.randrange(size) for _ in range(n)]
        leaves = [leaf_hash(make_entry("p", i)) for i in indices]
        for i in indices[:50]:  # warm the pool and the page cache
            log.inclusion(i)
        by_index: list[float] = []
        by_hash: list[float] = []
        cpu: list[float] = []  # this thread's CPU time per proof by index: the wall time minus waiting
        proofs = []
        for i, leaf in zip(indices, leaves, strict=True):
            t, c = time.perf_counter(), time.thread_time()
            a = log.inclusion(i)
            by_index.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
            t = time.perf_counter()
            b = log.inclusion_by_hash(leaf)
            by_hash.append(time.perf_counter() - t)
            proofs.append((leaf, a, b))
        for leaf, a, b in proofs:
            verify_inclusion(leaf, a.index, a.size, a.proof, checkpoint.root_hash)
            verify_inclusion(leaf, b.index, b.size, b.proof, checkpoint.root_hash)
        # Raw: the same number of RFC 9162 node hashes as a proof, over that proof's hashes.
        raw: list[float] = []
        for leaf, a, _ in proofs:
            t = time.perf_counter()
            r = leaf
            for h in a.proof:
                r = hashlib.sha256(b"\x01" + h + r).digest()
            raw.append(time.perf_counter() - t)
    finally:
        log.close()
        engine.dispose()
    by_index.sort()
    by_hash.sort()
    cpu.sort()
    raw.sort()
    result = {
        "size": size,
        "proofs": n,
        "proof_hashes": len(proofs[0][1].proof),
        "by_index_p50_us": percentile(by_index, 0.5) * 1e6,
        "by_index_p99_us": percentile(by_index, 0.99) * 1e6,
        "by_hash_p50_us": percentile(by_hash, 0.5) * 1e6,
        "by_hash_p99_us": percentile(by_hash, 0.99) * 1e6,
        "by_index_cpu_p50_us": percentile(cpu, 0.5) * 1e6,
        "by_index_cpu_p99_us": percentile(cpu, 0.99) * 1e6,
        "raw_sha256_p50_us": percentile(raw, 0.5) * 1e6,
        "raw_sha256_p99_us": percentile(raw, 0.99) * 1e6,
    }
    print(
        f"proofs at {size:,}: by index p50 {result['by_index_p50_us']:.0f} µs "
        f"p99 {result['by_index_p99_us']:.0f} µs; by leaf hash p50 {result['by_hash_p50_us']:.0f} µs "
        f"p99 {result['by_hash_p99_us']:.0f} µs; CPU by index p50 {result['by_index_cpu_p50_us']:.0f} µs "
        f"p99 {result['by_index_cpu_p99_us']:.0f} µs  | raw SHA-256 of "
        f"the {result['proof_hashes']} node hashes p50 {result['raw_sha256_p50_us']:.1f} µs "
        f"(ratio p50 by index {result['by_index_p50_us'] / result['raw_sha256_p50_us']:.0f}x)",
        flush=True,
    )
    return result


def _medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per phase, the median of each figure over the rounds (printed when there is more than one)."""
    keys = ("entries_per_s", "p50_ms", "p99_ms", "replica_cores", "postgres_cores", "raw_sha256_per_s")
    out: dict[str, dict[str, float]] = {}
    for phase in dict.fromkeys(r["phase"] for r in runs):
        mine = [r for r in runs if r["phase"] == phase]
        out[phase] = {k: statistics.median(r[k] for r in mine) for k in keys}
        out[phase]["ratio_to_raw"] = out[phase]["entries_per_s"] / out[phase]["raw_sha256_per_s"]
        if len(mine) > 1:
            m = out[phase]
            print(
                f"median of {len(mine)}: {phase:<16} {m['entries_per_s']:>8,.0f} entries/s  "
                f"p50 {m['p50_ms']:.0f} ms  p99 {m['p99_ms']:.0f} ms  "
                f"raw SHA-256 {m['raw_sha256_per_s']:,.0f}/s"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replica", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--replicas", type=int, default=2, help="PostgreSQL replica processes")
    parser.add_argument("--sqlite-replicas", type=int, default=1, help="processes sharing the SQLite file")
    parser.add_argument("--window", type=int, default=8192)
    parser.add_argument("--only", nargs="*", default=["sqlite", "pg", "proof"])
    parser.add_argument("--proof-size", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1, help="append runs per database (fresh log each)")
    parser.add_argument("--out", type=Path, default=OUT / "tlog_append.json")
    args = parser.parse_args(argv)
    if args.replica:
        return replica_main(args.replica)
    result: dict[str, Any] = {
        "benchmark": "tlog_append",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cores": os.cpu_count(),
    }
    runs: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        if "sqlite" in args.only:
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'ws.db'}"
                label = "sqlite" if args.sqlite_replicas == 1 else f"sqlite x{args.sqlite_replicas}"
                runs += append_runs(url, Path(tmp) / "keys", label, args.sqlite_replicas, SQLITE_TARGET, args)
        if "pg" in args.only:
            with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
                runs += append_runs(
                    url, Path(tmp) / "keys", f"pg x{args.replicas}", args.replicas, PG_TARGET, args
                )
    result["appends"] = runs
    result["medians"] = _medians(runs)
    if "proof" in args.only:
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"tlog-proof-{args.proof_size}.db"
        build_proof_log(path, args.proof_size)
        proof_runs = [proof_run(path, args.proof_size, args.proofs) for _ in range(max(3, args.rounds))]
        # Median per figure over the rounds: a p99 of 2,000 proofs moves with the box's other load.
        result["proofs"] = {k: statistics.median(r[k] for r in proof_runs) for k in proof_runs[0]}
        result["proof_rounds"] = proof_runs
        m = result["proofs"]
        print(
            f"median of {len(proof_runs)}: by index p50 {m['by_index_p50_us']:.0f} µs p99 "
            f"{m['by_index_p99_us']:.0f} µs; by leaf hash p50 {m['by_hash_p50_us']:.0f} µs p99 "
            f"{m['by_hash_p99_us']:.0f} µs; CPU p99 {m['by_index_cpu_p99_us']:.0f} µs | raw SHA-256 p50 "
            f"{m['raw_sha256_p50_us']:.1f} µs"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
