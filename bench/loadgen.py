"""Closed-loop HTTP load generator with N concurrent connections, run in its own process.

Run as ``python -m bench.loadgen SPEC.json``. Two clients, both on uvloop: ``httpx`` (an
``httpx.AsyncClient`` with ``max_connections=N``) and ``raw`` (N keep-alive HTTP/1.1 connections on asyncio
streams, requests pre-encoded). On a 2-core box httpx costs ~2 ms of client CPU per request and saturates
near 500 req/s, below what the servers here do, so ``raw`` (~0.07 ms per request) is the default.

The spec names the URL, the headers, the request bodies (used round-robin), the expected status, the
warm-up and the measured duration, and optionally server PIDs whose CPU time (with their descendants') is
sampled at the edges of the measured window. One JSON object with the results is printed on stdout.

Only requests that *complete* inside the measured window count. A response with any status other than the
expected one, or a transport error, is an error and is not counted as throughput.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop

# Clock ticks per second for /proc/<pid>/stat utime/stime.
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_MAX_ERROR_SAMPLES = 5


@dataclass
class Spec:
    url: str
    headers: dict[str, str]
    bodies: list[dict[str, Any]]
    expected_status: int
    connections: int
    warmup_s: float
    seconds: float
    watch_pids: list[int] = field(default_factory=list)
    client: str = "raw"

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Spec:
        return Spec(
            url=str(raw["url"]),
            headers={str(k): str(v) for k, v in dict(raw["headers"]).items()},
            bodies=[dict(b) for b in raw["bodies"]],
            expected_status=int(raw["expected_status"]),
            connections=int(raw["connections"]),
            warmup_s=float(raw["warmup_s"]),
            seconds=float(raw["seconds"]),
            watch_pids=[int(p) for p in raw.get("watch_pids", [])],
            client=str(raw.get("client", "raw")),
        )


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    next_body: int = 0

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < _MAX_ERROR_SAMPLES:
            self.error_samples.append(text[:300])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of these processes and their descendants; 0 for none."""
    return tree_cpu_seconds(pids) if pids else 0.0


def tree_cpu_seconds(roots: list[int]) -> float:
    """User + system CPU seconds of the given processes and all their live descendants."""
    tree = _children()
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[11], fields[12] are utime, stime (fields 14 and 15 of proc(5), counted from 1).
        total += int(fields[11]) + int(fields[12])
        stack.extend(tree.get(pid, []))
    return total / _CLK_TCK


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile of an already sorted list (nearest rank); NaN when empty."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _worker(
    client: httpx.AsyncClient, spec: Spec, tally: Tally, window: tuple[float, float], stop_at: float
) -> None:
    t0, t1 = window
    while True:
        start = time.perf_counter()
        if start >= stop_at:
            return
        body = spec.bodies[tally.next_body % len(spec.bodies)]
        tally.next_body += 1
        status = -1
        text = ""
        try:
            response = await client.post(spec.url, json=body, headers=spec.headers)
            status = response.status_code
            if status != spec.expected_status:
                text = f"HTTP {status}: {response.text}"
        except httpx.HTTPError as exc:
            text = f"{type(exc).__name__}: {exc}"
        end = time.perf_counter()
        if t0 <= end <= t1:
            if status == spec.expected_status:
                tally.latencies_ms.append((end - start) * 1000.0)
            else:
                tally.error(text)


class RawConnection:
    """One keep-alive HTTP/1.1 connection with pre-encoded requests: a client that costs ~10x less CPU
    per request than httpx, so that on a 2-core box the server, not the client, is what is measured."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one pre-encoded request; return (status, body). Reconnects once if the peer closed."""
        for attempt in (0, 1):
            reader, writer = await self._connect()
            try:
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
                continue
            return await self._finish(reader, head)
        raise ConnectionError("unreachable")

    async def _finish(self, reader: asyncio.StreamReader, head: bytes) -> tuple[int, bytes]:
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif key == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers expected: the final CRLF
                    break
                parts.append((await reader.readexactly(size + 2))[:-2])
            body = b"".join(parts)
        elif length >= 0:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()
            close = True
        if close:
            self.close()
        return status, body


def encode_requests(spec: Spec) -> tuple[str, int, list[bytes]]:
    url = httpx.URL(spec.url)
    host = url.host
    port = url.port or 80
    path = url.raw_path.decode()
    out = []
    for body in spec.bodies:
        payload = json.dumps(body, separators=(",", ":")).encode()
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
        head += [f"{k}: {v}" for k, v in spec.headers.items()]
        head.append(f"Content-Length: {len(payload)}")
        out.append(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    return host, port, out


async def _raw_worker(
    conn: RawConnection, requests: list[bytes], spec: Spec, tally: Tally, window: tuple[float, float]
) -> None:
    t0, t1 = window
    try:
        while True:
            start = time.perf_counter()
            if start >= t1:
                return
            raw = requests[tally.next_body % len(requests)]
            tally.next_body += 1
            status = -1
            text = ""
            try:
                status, body = await conn.request(raw)
                if status != spec.expected_status:
                    text = f"HTTP {status}: {body.decode(errors='replace')}"
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                conn.close()
                text = f"{type(exc).__name__}: {exc}"
            end = time.perf_counter()
            if t0 <= end <= t1:
                if status == spec.expected_status:
                    tally.latencies_ms.append((end - start) * 1000.0)
                else:
                    tally.error(text)
    finally:
        conn.close()


async def run(spec: Spec) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=spec.connections, max_keepalive_connections=spec.connections)
    timeout = httpx.Timeout(30.0)
    tally = Tally()
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        begin = time.perf_counter()
        t0 = begin + spec.warmup_s
        t1 = t0 + spec.seconds
        window = (t0, t1)
        if spec.client == "httpx":
            tasks = [
                asyncio.create_task(_worker(client, spec, tally, window, t1)) for _ in range(spec.connections)
            ]
        else:
            host, port, requests = encode_requests(spec)
            tasks = [
                asyncio.create_task(_raw_worker(RawConnection(host, port), requests, spec, tally, window))
                for _ in range(spec.connections)
            ]
        # Sample CPU at the edges of the measured window.
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        cpu_client_0 = _own_cpu_seconds()
        cpu_server_0 = tree_cpu_seconds(spec.watch_pids)
        wall_0 = time.perf_counter()
        await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
        cpu_client_1 = _own_cpu_seconds()
        cpu_server_1 = tree_cpu_seconds(spec.watch_pids)
        wall_1 = time.perf_counter()
        # In-flight requests finish within the client timeout; bound the wait anyway.
        _, pending = await asyncio.wait(tasks, timeout=35.0)
        for task in pending:
            task.cancel()
    wall = wall_1 - wall_0
    lat = sorted(tally.latencies_ms)
    ok = len(lat)
    return {
        "url": spec.url,
        "client": spec.client,
        "connections": spec.connections,
        "seconds": spec.seconds,
        "warmup_s": spec.warmup_s,
        "ok": ok,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "rate": ok / spec.seconds,
        "p50_ms": percentile(lat, 0.50),
        "p90_ms": percentile(lat, 0.90),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": lat[-1] if lat else float("nan"),
        "client_cores": (cpu_client_1 - cpu_client_0) / wall,
        "server_cores": (cpu_server_1 - cpu_server_0) / wall if spec.watch_pids else None,
        "server_cpu_ms_per_req": (
            (cpu_server_1 - cpu_server_0) * 1000.0 / ok if spec.watch_pids and ok else None
        ),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.loadgen SPEC.json", file=sys.stderr)
        return 2
    spec = Spec.from_json(json.loads(Path(argv[0]).read_text()))
    result = uvloop.run(run(spec))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
