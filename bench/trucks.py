"""Truck worker processes for the end-to-end benchmarks (enrollment, attestation).

Trucks are spread over P spawned processes; in each, every truck runs its loop in a thread of its own
(the TPM and HTTP calls release the GIL) or, with `sequential`, the process's trucks take turns in one
thread. Each truck keeps a tally on the shared CLOCK_MONOTONIC: (start, end) of every completed
operation and the time and text of every failure. A run warms up, then measures a window; only
operations that complete inside it count, and a failure is never throughput. CPU of the server, the
swtpm processes, the truck processes and the whole box is sampled at the window's edges.

A benchmark supplies a picklable spec (its own dataclass) whose `open_trucks()` builds the trucks of
one process; a truck has a `tally` and `once() -> bool` (False: it has nothing left to do).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import httpx

from bench.loadgen import cpu_seconds, percentile

CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 120.0
FINISH_GRACE_S = 120.0
MAX_ERROR_SAMPLES = 5


@dataclass
class Tally:
    """One truck's operations: (start, end) on the shared CLOCK_MONOTONIC, and its failures."""

    index: int
    done: list[tuple[float, float]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    stopped_early: bool = False  # it ran out of work (e.g. enrollment tokens) before the deadline

    def timed(self, operation: Any, failures: tuple[type[BaseException], ...]) -> None:
        """Run `operation()` and record it as done or failed."""
        started = time.monotonic()
        try:
            operation()
        except failures as exc:
            self.errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"[:300]))
        else:
            self.done.append((started, time.monotonic()))


class Truck(Protocol):
    tally: Tally

    def once(self) -> bool: ...

    def close(self) -> None: ...


class Spec(Protocol):
    @property
    def sequential(self) -> bool: ...

    def open_trucks(self) -> Sequence[Truck]: ...


def _run_truck(truck: Truck, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not truck.once():
            truck.tally.stopped_early = True
            return


def _run_sequential(trucks: Sequence[Truck], deadline: float) -> None:
    live = list(trucks)
    while live and time.monotonic() < deadline:
        for truck in list(live):
            if not truck.once():
                truck.tally.stopped_early = True
                live.remove(truck)


def worker_main(spec: Spec, conn: Connection) -> None:
    """Entry point of a spawned worker: open the trucks, say ready, run until the deadline it is sent."""
    # The parent handles Ctrl-C and stops this process; a traceback per worker would only be noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    trucks: Sequence[Truck] = []
    try:
        trucks = spec.open_trucks()
        conn.send(("ready", os.getpid()))
        _, deadline = conn.recv()
        if spec.sequential:
            _run_sequential(trucks, deadline)
        else:
            threads = [threading.Thread(target=_run_truck, args=(t, deadline), daemon=True) for t in trucks]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        conn.send(("done", [asdict(t.tally) for t in trucks]))
    except (EOFError, BrokenPipeError):
        pass  # the parent went away (interrupted)
    except Exception:
        with contextlib.suppress(OSError):
            conn.send(("failed", traceback.format_exc()))
        raise
    finally:
        for truck in trucks:
            with contextlib.suppress(Exception):
                truck.close()
        conn.close()


def expect(conn: Connection, kind: str, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise RuntimeError(f"a worker process sent no {kind!r} within {timeout:.0f} s")
    try:
        got, payload = conn.recv()
    except EOFError:
        raise RuntimeError(f"a worker process exited before {kind!r}") from None
    if got != kind:
        raise RuntimeError(f"worker process: {got}: {payload}")
    return payload


def box_busy_seconds() -> float:
    """CPU-seconds the whole box spent busy (all cores, /proc/stat; idle and iowait excluded)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already inside user and nice).
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


@dataclass(frozen=True)
class Watch:
    """The processes whose CPU a run reports: the server (and its workers) and the swtpm TPMs."""

    server: list[int]
    swtpm: list[int]


def run_window(
    specs: Sequence[Spec], *, warmup: float, seconds: float, watch: Watch, unit: str
) -> dict[str, Any]:
    """Start one worker process per spec, warm up, measure `seconds`; the run's figures, per `unit`
    (e.g. "attestation": keys `attestations`, `server_cpu_ms_per_attestation`, ...)."""
    ctx = multiprocessing.get_context("spawn")
    workers: list[tuple[SpawnProcess, Connection]] = []
    try:
        for spec in specs:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(spec, child_end), daemon=True)
            proc.start()
            child_end.close()
            workers.append((proc, parent_end))
        pids = [expect(conn, "ready", READY_TIMEOUT_S) for _, conn in workers]
        start = time.monotonic()
        t0, t1 = start + warmup, start + warmup + seconds
        for _, conn in workers:
            conn.send(("go", t1))
        time.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = (cpu_seconds(watch.server), cpu_seconds(watch.swtpm), cpu_seconds(pids), box_busy_seconds())
        wall0 = time.monotonic()
        time.sleep(max(0.0, t1 - time.monotonic()))
        cpu1 = (cpu_seconds(watch.server), cpu_seconds(watch.swtpm), cpu_seconds(pids), box_busy_seconds())
        wall = time.monotonic() - wall0
        tallies = [t for _, conn in workers for t in expect(conn, "done", FINISH_GRACE_S)]
    except BaseException:
        for proc, _ in workers:
            proc.terminate()  # interrupted or failed: do not wait for the window to end
        raise
    finally:
        for proc, conn in workers:
            conn.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)

    latencies = sorted(end - begin for t in tallies for begin, end in t["done"] if t0 <= end <= t1)
    count = len(latencies)
    errors = [(at, text) for t in tallies for at, text in t["errors"]]
    server_cpu, swtpm_cpu, truck_cpu, box_cpu = (b - a for a, b in zip(cpu0, cpu1, strict=True))

    def per(cpu: float) -> float:
        return cpu * 1000.0 / count if count else float("nan")

    return {
        f"{unit}s": count,
        "rate": count / seconds,
        "p50_ms": percentile(latencies, 0.50) * 1000.0,
        "p99_ms": percentile(latencies, 0.99) * 1000.0,
        "errors_in_window": sum(1 for at, _ in errors if t0 <= at <= t1),
        "errors_total": len(errors),
        "error_samples": sorted({text for _, text in errors})[:MAX_ERROR_SAMPLES],
        "trucks_stopped_early": [t["index"] for t in tallies if t["stopped_early"]],
        "per_truck": [sum(1 for _, end in t["done"] if t0 <= end <= t1) for t in tallies],
        "server_cores": server_cpu / wall,
        "swtpm_cores": swtpm_cpu / wall,
        "truck_process_cores": truck_cpu / wall,
        # Everything else on the box in the window (this script's parent process included, ~0).
        "other_cores": (box_cpu - server_cpu - swtpm_cpu - truck_cpu) / wall,
        f"server_cpu_ms_per_{unit}": per(server_cpu),
        f"swtpm_cpu_ms_per_{unit}": per(swtpm_cpu),
        f"truck_process_cpu_ms_per_{unit}": per(truck_cpu),
    }


def created(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 201, or a RuntimeError naming the call that was not created."""
    if response.status_code != 201:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:500]}"
        )
    body: dict[str, Any] = response.json()
    return body


def raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM handler: stop as Ctrl-C does, so the `finally` blocks stop every process started."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
